"""SegFormer's all-MLP decoder (Xie et al., 2021, "SegFormer: Simple and Efficient Design for Semantic
Segmentation with Transformers", Sec. 3.2): each encoder level is linearly projected to a common width,
upsampled to the finest level (stride 4 on MiT), concatenated, fused by a linear layer (+ norm, ReLU), and
classified by a linear layer; the logits are then upsampled bilinearly to the input size. "Linear" on a
feature map is a 1x1 conv."""
from typing import Dict, Optional

import fvcore.nn.weight_init as weight_init
import torch
from torch import nn
from torch.nn import functional as F

from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY

from .base import FullResolutionSemSegHead, check_group_norm, head_from_config

__all__ = ["SegFormerHead"]


@SEM_SEG_HEADS_REGISTRY.register()
class SegFormerHead(FullResolutionSemSegHead):
    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        num_classes: int,
        embed_dim: int = 256,
        dropout: float = 0.1,
        norm: str = "BN",
        ignore_value: int = -1,
        loss_weight: float = 1.0,
        loss: Optional[nn.Module] = None,
    ):
        """
        Args:
            input_shape: the encoder levels to fuse (MiT's mit1..mit4); the finest sets the output stride.
            embed_dim: the common width (256 for MiT-B0/B1, 768 for B2-B5 in the paper).
        """
        super().__init__(ignore_value=ignore_value, loss_weight=loss_weight, loss=loss)
        if not input_shape:
            raise ValueError("MODEL.SEM_SEG_HEAD.IN_FEATURES must name at least one feature for SegFormerHead")
        check_group_norm(norm, embed_dim, "MODEL.SEM_SEG_HEAD.CONVS_DIM")
        # Finest first: it sets the size every level is upsampled to, and the output stride.
        self.in_features = sorted(input_shape, key=lambda k: input_shape[k].stride)
        self.output_stride = input_shape[self.in_features[0]].stride
        self.linear = nn.ModuleDict({k: Conv2d(s.channels, embed_dim, 1) for k, s in input_shape.items()})
        self.fuse = Conv2d(
            len(input_shape) * embed_dim, embed_dim, 1, bias=not norm, norm=get_norm(norm, embed_dim),
            activation=F.relu,
        )
        self.dropout = nn.Dropout2d(dropout)
        self.predictor = Conv2d(embed_dim, num_classes, 1)
        for layer in (*self.linear.values(), self.fuse, self.predictor):
            weight_init.c2_xavier_fill(layer)

    @classmethod
    def from_config(cls, cfg, input_shape):
        head = cfg.MODEL.SEM_SEG_HEAD
        return {
            "embed_dim": head.CONVS_DIM,
            "dropout": head.CLASSIFIER_DROPOUT,
            **head_from_config(cfg, input_shape),
        }

    def layers(self, features):
        size = features[self.in_features[0]].shape[-2:]
        projected = [
            F.interpolate(self.linear[k](features[k]), size=size, mode="bilinear", align_corners=False)
            for k in self.in_features
        ]
        x = self.predictor(self.dropout(self.fuse(torch.cat(projected, dim=1))))
        return self.upsample_to_input(x)
