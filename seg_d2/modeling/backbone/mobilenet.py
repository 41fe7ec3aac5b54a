"""torchvision's MobileNetV2 (Sandler et al., 2018) as a Detectron2 backbone, alone or under an FPN.

    MODEL.BACKBONE.NAME "build_mobilenet_v2_fpn_backbone"   MODEL.MOBILENET.WEIGHTS "mobilenet_v2-b0353104.pth"

The layers are torchvision's ``mobilenet_v2().features`` under the same names, so torchvision's ImageNet
checkpoint loads as it is (its ``classifier`` is reported unused). Outputs are named like Detectron2's ResNet:
``res2`` (stride 4, after features[3], 24 channels at width 1), ``res3`` (8, features[6], 32), ``res4``
(16, features[13], 96) and ``res5`` (32, features[18], 1280). torchvision's weights expect RGB input
scaled by ImageNet's mean and std: INPUT.FORMAT "RGB", PIXEL_MEAN [123.675, 116.28, 103.53], PIXEL_STD
[58.395, 57.12, 57.375] (configs/timm/ sets them).

``MODEL.BACKBONE.FREEZE_AT`` as for ResNet: 1 freezes the stride-2 stem (features[0:2]), 2 also ``res2``,
and so on, with their BatchNorms frozen. ``MODEL.MOBILENET.NORM``: "BN" (trainable), "FrozenBN", "SyncBN".
"""
from typing import Dict

import torch
from torch import nn
from torchvision.models import mobilenet_v2

from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, FPN, Backbone

from ..pretrained import LoadReport, load_into, read_state_dict
from .timm_backbone import fpn_on

__all__ = ["MobileNetV2Backbone", "build_mobilenet_v2_backbone", "build_mobilenet_v2_fpn_backbone"]

# (output, index of the last features[] layer of its stage, stride): torchvision's inverted-residual setting
_STAGES = (("stem", 1, 2), ("res2", 3, 4), ("res3", 6, 8), ("res4", 13, 16), ("res5", 18, 32))
MOBILENET_NORMS = ("BN", "FrozenBN", "SyncBN")


class MobileNetV2Backbone(Backbone):
    def __init__(self, width_mult: float = 1.0, out_features=("res2", "res3", "res4", "res5"), freeze_at: int = 0,
                 norm: str = "BN", weights: str = ""):
        super().__init__()
        if norm not in MOBILENET_NORMS:
            raise ValueError(f"MODEL.MOBILENET.NORM must be one of {MOBILENET_NORMS}, got {norm!r}")
        names = [name for name, _, _ in _STAGES[1:]]
        if not out_features or set(out_features) - set(names):
            raise ValueError(f"MODEL.MOBILENET.OUT_FEATURES must be some of {names}, got {list(out_features)}")
        self.features = mobilenet_v2(weights=None, width_mult=width_mult).features
        self._out_features = [n for n in names if n in out_features]
        self._stage_end = {name: end for name, end, _ in _STAGES}
        self._out_feature_strides = {name: stride for name, _, stride in _STAGES if name in self._out_features}
        self._out_feature_channels = {n: self._channels(self._stage_end[n]) for n in self._out_features}
        self.weights_report = self.load_weights(weights) if weights else None
        if norm == "FrozenBN":
            self.features = FrozenBatchNorm2d.convert_frozen_batchnorm(self.features)
        elif norm == "SyncBN":
            self.features = nn.SyncBatchNorm.convert_sync_batchnorm(self.features)
        if freeze_at > len(_STAGES):
            raise ValueError(f"MODEL.BACKBONE.FREEZE_AT {freeze_at}: MobileNetV2 has {len(_STAGES)} stages")
        if freeze_at > 0:
            self._freeze(_STAGES[freeze_at - 1][1])

    def _channels(self, end: int) -> int:
        convs = [m for m in self.features[: end + 1].modules() if isinstance(m, nn.Conv2d)]
        return convs[-1].out_channels

    def _freeze(self, end: int):
        for index in range(end + 1):
            layer = FrozenBatchNorm2d.convert_frozen_batchnorm(self.features[index])
            for parameter in layer.parameters():
                parameter.requires_grad_(False)
            self.features[index] = layer

    def load_weights(self, path: str) -> LoadReport:
        """Load a torchvision MobileNetV2 checkpoint (``features.*``; the classifier is unused)."""
        return load_into(self, read_state_dict(path), f"MODEL.MOBILENET.WEIGHTS {path}")

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        outputs, last = {}, self._stage_end[self._out_features[-1]]
        ends = {self._stage_end[n]: n for n in self._out_features}
        for index, layer in enumerate(self.features[: last + 1]):
            x = layer(x)
            if index in ends:
                outputs[ends[index]] = x
        return outputs

    def output_shape(self):
        return {n: ShapeSpec(channels=self._out_feature_channels[n], stride=self._out_feature_strides[n])
                for n in self._out_features}


def _from_config(cfg, input_shape: ShapeSpec) -> MobileNetV2Backbone:
    if input_shape.channels != 3:
        raise ValueError(f"MobileNetV2 takes 3 input channels; MODEL.PIXEL_MEAN has {input_shape.channels} values")
    node = cfg.MODEL.MOBILENET
    return MobileNetV2Backbone(node.WIDTH_MULT, tuple(node.OUT_FEATURES), cfg.MODEL.BACKBONE.FREEZE_AT, node.NORM,
                               node.WEIGHTS)


@BACKBONE_REGISTRY.register()
def build_mobilenet_v2_backbone(cfg, input_shape: ShapeSpec) -> MobileNetV2Backbone:
    """MODEL.MOBILENET.* as a backbone with outputs ``res2`` .. ``res5``."""
    return _from_config(cfg, input_shape)


@BACKBONE_REGISTRY.register()
def build_mobilenet_v2_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """MobileNetV2 under Detectron2's FPN (MODEL.FPN.*), p2 .. p6 as ``build_resnet_fpn_backbone``."""
    return fpn_on(cfg, _from_config(cfg, input_shape))
