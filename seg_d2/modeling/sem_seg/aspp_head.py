"""DeepLabV3+ head (Chen et al., 2018, "Encoder-Decoder with Atrous Separable Convolution"): the ASPP of
DeepLabV3 (Chen et al., 2017: 1x1 branch, three atrous 3x3 branches, image pooling, 1x1 projection;
Detectron2's ``detectron2.layers.ASPP``) over a coarse feature, then a decoder that concatenates a
48-channel reduction of a stride-4 feature, applies two 3x3 convs and upsamples to the input size.

Registered as "DeepLabV3PlusASPPHead": "DeepLabV3PlusHead" belongs to detectron2.projects.deeplab.
"""
from typing import Dict, List, Optional

import fvcore.nn.weight_init as weight_init
import torch
from torch import nn
from torch.nn import functional as F

from detectron2.config import configurable
from detectron2.layers import ASPP, Conv2d, ShapeSpec, get_norm
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY

from ..backbone.unet import double_conv
from .base import FullResolutionSemSegHead, check_group_norm, classifier, head_from_config, select_features

__all__ = ["DeepLabV3PlusASPPHead"]


@SEM_SEG_HEADS_REGISTRY.register()
class DeepLabV3PlusASPPHead(FullResolutionSemSegHead):
    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        num_classes: int,
        low_level_feature: str,
        low_level_channels: int = 48,
        aspp_rates: List[int] = (6, 12, 18),
        aspp_channels: int = 256,
        aspp_dropout: float = 0.1,
        decoder_channels: int = 256,
        norm: str = "BN",
        ignore_value: int = -1,
        loss_weight: float = 1.0,
        loss: Optional[nn.Module] = None,
    ):
        """
        Args:
            input_shape: two features: ``low_level_feature`` and the (coarser) ASPP input.
            aspp_rates: the three atrous rates (Detectron2's ASPP has exactly three branches).
            decoder_channels: width of the decoder's two 3x3 convs (config: SEM_SEG_HEAD.CONVS_DIM).
        """
        super().__init__(ignore_value=ignore_value, loss_weight=loss_weight, loss=loss)
        if low_level_feature not in input_shape:
            raise ValueError(
                f"MODEL.SEM_SEG_HEAD.LOW_LEVEL_FEATURE {low_level_feature!r} not among the "
                f"backbone's features {sorted(input_shape)}"
            )
        coarse = [k for k in input_shape if k != low_level_feature]
        if len(coarse) != 1:
            raise ValueError(
                f"MODEL.SEM_SEG_HEAD.IN_FEATURES must name exactly one ASPP input, got {coarse}"
            )
        if len(aspp_rates) != 3 or min(aspp_rates) < 1:
            raise ValueError(
                f"MODEL.SEM_SEG_HEAD.ASPP_RATES must be 3 positive rates, got {list(aspp_rates)}"
            )
        for key, width in (("ASPP_CHANNELS", aspp_channels), ("LOW_LEVEL_CHANNELS", low_level_channels),
                           ("CONVS_DIM", decoder_channels)):
            check_group_norm(norm, width, f"MODEL.SEM_SEG_HEAD.{key}")
        self.in_feature, self.low_level_feature = coarse[0], low_level_feature
        low = input_shape[low_level_feature]
        if input_shape[self.in_feature].stride < low.stride:
            raise ValueError(
                f"MODEL.SEM_SEG_HEAD.LOW_LEVEL_FEATURE {low_level_feature!r} must be finer than the "
                f"ASPP input {self.in_feature!r}"
            )
        self.output_stride = low.stride

        self.aspp = ASPP(
            input_shape[self.in_feature].channels, aspp_channels, list(aspp_rates), norm=norm,
            activation=F.relu, dropout=aspp_dropout,
        )
        self.low_level_proj = Conv2d(
            low.channels, low_level_channels, kernel_size=1, bias=not norm,
            norm=get_norm(norm, low_level_channels), activation=F.relu,
        )
        weight_init.c2_msra_fill(self.low_level_proj)
        self.fuse = double_conv(aspp_channels + low_level_channels, decoder_channels, norm)
        self.predictor = classifier(decoder_channels, num_classes)

    @classmethod
    def from_config(cls, cfg, input_shape):
        head = cfg.MODEL.SEM_SEG_HEAD
        kwargs = head_from_config(cfg, input_shape)  # input_shape: IN_FEATURES, plus the low-level one
        kwargs["input_shape"].update(
            select_features(input_shape, [head.LOW_LEVEL_FEATURE], "MODEL.SEM_SEG_HEAD.LOW_LEVEL_FEATURE")
        )
        return {
            **kwargs,
            "low_level_feature": head.LOW_LEVEL_FEATURE,
            "low_level_channels": head.LOW_LEVEL_CHANNELS,
            "aspp_rates": head.ASPP_RATES,
            "aspp_channels": head.ASPP_CHANNELS,
            "aspp_dropout": head.ASPP_DROPOUT,
            "decoder_channels": head.CONVS_DIM,
        }

    def layers(self, features):
        low = self.low_level_proj(features[self.low_level_feature])
        x = self.aspp(features[self.in_feature])
        x = F.interpolate(x, size=low.shape[-2:], mode="bilinear", align_corners=False)
        x = self.predictor(self.fuse(torch.cat([x, low], dim=1)))
        return self.upsample_to_input(x)
