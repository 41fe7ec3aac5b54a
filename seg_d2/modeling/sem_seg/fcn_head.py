"""FCN head (Long et al., 2015, "Fully Convolutional Networks for Semantic Segmentation"): the fully
convolutional baseline. A few 3x3 convs on the deepest feature, dropout, a 1x1 classifier, and one
bilinear upsampling of the coarse logits to the input size (FCN-32s style, without skip layers)."""
from typing import Dict, List, Optional

import fvcore.nn.weight_init as weight_init
from torch import nn
from torch.nn import functional as F

from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY

from .base import FullResolutionSemSegHead, check_group_norm, classifier, head_from_config

__all__ = ["FCNHead"]


@SEM_SEG_HEADS_REGISTRY.register()
class FCNHead(FullResolutionSemSegHead):
    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        num_classes: int,
        conv_dims: List[int] = (512, 512),
        dropout: float = 0.1,
        norm: str = "BN",
        ignore_value: int = -1,
        loss_weight: float = 1.0,
        loss: Optional[nn.Module] = None,
    ):
        """
        Args:
            input_shape: exactly one feature (e.g. res5), classified at its own stride.
            conv_dims: width of each 3x3 conv before the classifier; [] classifies the feature directly.
            dropout: before the classifier (FCN keeps the dropout of VGG's fc6/fc7).
        """
        super().__init__(ignore_value=ignore_value, loss_weight=loss_weight, loss=loss)
        if len(input_shape) != 1:
            raise ValueError(
                f"MODEL.SEM_SEG_HEAD.IN_FEATURES must name exactly one feature for FCNHead, got {list(input_shape)}"
            )
        (self.in_feature, shape), = input_shape.items()
        convs, width = [], shape.channels
        for dim in conv_dims:
            check_group_norm(norm, dim, "MODEL.SEM_SEG_HEAD.FCN_CONV_DIMS")
            conv = Conv2d(width, dim, 3, padding=1, bias=not norm, norm=get_norm(norm, dim), activation=F.relu)
            weight_init.c2_msra_fill(conv)
            convs.append(conv)
            width = dim
        self.convs = nn.Sequential(*convs)
        self.dropout = nn.Dropout2d(dropout)
        self.predictor = classifier(width, num_classes)
        self.output_stride = shape.stride

    @classmethod
    def from_config(cls, cfg, input_shape):
        head = cfg.MODEL.SEM_SEG_HEAD
        return {
            "conv_dims": head.FCN_CONV_DIMS,
            "dropout": head.CLASSIFIER_DROPOUT,
            **head_from_config(cfg, input_shape),
        }

    def layers(self, features):
        x = self.predictor(self.dropout(self.convs(features[self.in_feature])))
        return self.upsample_to_input(x)
