"""U-Net decoder head (Ronneberger et al., 2015) over backbone / FPN features, up to full resolution.

SemSegFPNHead predicts at stride 4 and upsamples bilinearly; this head instead climbs one 2x step at a
time from the coarsest input feature to stride 1 (transposed conv, concat skip, two 3x3 convs), taking
an input feature as skip wherever one has the step's stride. Below the finest feature (stride 4 for
ResNet/FPN) the steps have no skip: they are learned upsampling, not interpolation. With a single
stride-1 feature (the U-Net backbone's ``dec1``) there are no steps and it is a 1x1 classifier.
"""
import math
from typing import Dict, List, Optional

from torch import nn

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY

from ..backbone.unet import UpBlock
from .base import FullResolutionSemSegHead, check_group_norm, classifier, head_from_config

__all__ = ["UNetHead"]


@SEM_SEG_HEADS_REGISTRY.register()
class UNetHead(FullResolutionSemSegHead):
    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        num_classes: int,
        decoder_channels: List[int],
        norm: str = "",
        ignore_value: int = -1,
        loss_weight: float = 1.0,
        loss: Optional[nn.Module] = None,
    ):
        """
        Args:
            input_shape: the features to decode (any order); strides must be distinct powers of 2.
            decoder_channels: width of each 2x step, coarse to fine; one per step from the coarsest
                stride S down to 1, i.e. log2(S) entries (config: SEM_SEG_HEAD.UNET_DECODER_CHANNELS).
        """
        super().__init__(ignore_value=ignore_value, loss_weight=loss_weight, loss=loss)
        if not input_shape:
            raise ValueError("UNetHead: MODEL.SEM_SEG_HEAD.IN_FEATURES is empty")
        by_stride = {v.stride: k for k, v in input_shape.items()}
        strides = sorted(by_stride)
        if len(by_stride) != len(input_shape) or any(s & (s - 1) for s in strides):
            raise ValueError(
                "UNetHead: MODEL.SEM_SEG_HEAD.IN_FEATURES need distinct power-of-2 strides, got "
                f"{ {k: v.stride for k, v in input_shape.items()} }"
            )
        num_steps = int(math.log2(strides[-1]))
        if len(decoder_channels) != num_steps:
            raise ValueError(
                f"MODEL.SEM_SEG_HEAD.UNET_DECODER_CHANNELS needs {num_steps} widths (one per 2x step "
                f"from stride {strides[-1]} to 1), got {list(decoder_channels)}"
            )
        self.in_feature = by_stride[strides[-1]]
        channels = input_shape[self.in_feature].channels
        self.skips = []  # feature name (or None) concatenated at each step
        self.steps = nn.ModuleList()
        for k, width in enumerate(decoder_channels):
            check_group_norm(norm, width, "MODEL.SEM_SEG_HEAD.UNET_DECODER_CHANNELS")
            skip = by_stride.get(strides[-1] >> (k + 1))
            skip_channels = input_shape[skip].channels if skip else 0
            self.steps.append(UpBlock(channels, skip_channels, width, norm=norm))
            self.skips.append(skip)
            channels = width
        self.predictor = classifier(channels, num_classes)

    @classmethod
    def from_config(cls, cfg, input_shape):
        head = cfg.MODEL.SEM_SEG_HEAD
        return {
            "decoder_channels": head.UNET_DECODER_CHANNELS,
            **head_from_config(cfg, input_shape),
        }

    def layers(self, features):
        x = features[self.in_feature]
        for step, skip in zip(self.steps, self.skips):
            x = step(x, features[skip] if skip else None)
        return self.predictor(x)
