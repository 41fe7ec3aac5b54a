"""Any timm model with ``features_only`` as a Detectron2 backbone, alone or under an FPN.

    MODEL.BACKBONE.NAME "build_timm_fpn_backbone"   (or "build_timm_backbone")
    MODEL.TIMM.NAME "convnext_atto"   MODEL.TIMM.OUT_INDICES (1, 2, 3, 4)   MODEL.TIMM.WEIGHTS "convnext.pth"

Outputs are named like Detectron2's ResNet, ``res{log2(stride)}`` (``res2`` .. ``res5`` for the usual
strides 4 .. 32), so the model-zoo configs' ``FPN.IN_FEATURES`` and DeepLab's ``res2`` / ``res5`` work as
they are; models whose outputs share a stride (a plain ViT: all 16) name them ``stage{i}`` by timm index.
The model is always created with ``pretrained=False``: timm never reaches for its hub. Weights come from a
local file (MODEL.TIMM.WEIGHTS, a ``state_dict`` saved from ``timm.create_model(NAME)``, classifier
included or not), loaded with a key report (:func:`seg_d2.modeling.pretrained.load_into`), or from
MODEL.WEIGHTS like any Detectron2 checkpoint.

``MODEL.BACKBONE.FREEZE_AT`` freezes the modules that compute timm's first FREEZE_AT feature levels (all of
``feature_info``, not only OUT_INDICES; for a timm ResNet, 2 freezes the stem and ``layer1`` as it does
for Detectron2's), their BatchNorms made frozen. ``MODEL.TIMM.NORM``: "" keeps timm's norms, "FrozenBN"
freezes every BatchNorm (fine-tuning with small batches), "SyncBN" synchronises them across processes.
"""
import math
from typing import Dict, List

import timm
import torch
from timm.layers import convert_sync_batchnorm, freeze_batch_norm_2d
from torch import nn

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, FPN, Backbone
from detectron2.modeling.backbone.fpn import LastLevelMaxPool

from ..pretrained import LoadReport, load_into, read_state_dict

__all__ = ["TimmBackbone", "build_timm_backbone", "build_timm_fpn_backbone", "fpn_on", "TIMM_NORMS"]

TIMM_NORMS = ("", "FrozenBN", "SyncBN")


def _create(name: str, in_channels: int, out_indices, drop_path_rate: float) -> nn.Module:
    kwargs = dict(pretrained=False, features_only=True, out_indices=tuple(out_indices), in_chans=in_channels)
    if drop_path_rate:
        kwargs["drop_path_rate"] = drop_path_rate
    try:  # ViT-style models take any input size only with dynamic_img_size; others have no such argument
        return timm.create_model(name, dynamic_img_size=True, **kwargs)
    except TypeError:
        return timm.create_model(name, **kwargs)


def _module_key(name: str) -> str:
    """A module name as feature_info spells it, for comparison: feature nets flatten the full model's names
    ("stages.0" -> "stages_0") or wrap the whole model ("model.blocks.3"; the wrapper itself is "")."""
    if name == "model" or name.startswith("model."):
        name = name[len("model."):]
    return name.replace("_", ".")


def _freeze_through(module: nn.Module, targets: List[str], prefix: str = "") -> bool:
    """Freeze ``module``'s children in order until every module named in ``targets`` is frozen (their
    BatchNorms made frozen); True once the last target is. Children holding a target are entered, and their
    own parameters (e.g. a ViT's position embedding) frozen."""
    for parameter in module.parameters(recurse=False):
        parameter.requires_grad_(False)
    for name, child in list(module.named_children()):
        full = _module_key(prefix + name)
        if not full or any(t.startswith(full + ".") for t in targets):
            if _freeze_through(child, targets, prefix + name + "."):
                return True
            continue
        for parameter in child.parameters():
            parameter.requires_grad_(False)
        setattr(module, name, freeze_batch_norm_2d(child))
        if full == targets[-1]:
            return True
    return False


class TimmBackbone(Backbone):
    """A timm ``features_only`` model as a Detectron2 Backbone (see the module docstring)."""

    def __init__(self, name: str, out_indices=(1, 2, 3, 4), in_channels: int = 3, freeze_at: int = 0,
                 norm: str = "", drop_path_rate: float = 0.0, weights: str = ""):
        super().__init__()
        if norm not in TIMM_NORMS:
            raise ValueError(f"MODEL.TIMM.NORM must be one of {TIMM_NORMS}, got {norm!r}")
        self.body = _create(name, in_channels, out_indices, drop_path_rate)
        info = self.body.feature_info
        strides = info.reduction()
        names = [f"res{int(math.log2(s))}" for s in strides]
        if len(set(names)) < len(names):
            names = [f"stage{i}" for i in info.out_indices]
        self._out_features = names
        self._out_feature_strides = dict(zip(names, strides))
        self._out_feature_channels = dict(zip(names, info.channels()))
        self.weights_report = self.load_weights(weights) if weights else None
        if norm == "FrozenBN":
            self.body = freeze_batch_norm_2d(self.body)
        elif norm == "SyncBN":
            self.body = convert_sync_batchnorm(self.body)
        if freeze_at > 0:
            all_levels = info.info  # every level, also those not in OUT_INDICES
            if freeze_at > len(all_levels):
                raise ValueError(f"MODEL.BACKBONE.FREEZE_AT {freeze_at}: {name} has {len(all_levels)} feature levels")
            _freeze_through(self.body, [_module_key(d["module"]) for d in all_levels[:freeze_at]])

    def load_weights(self, path: str) -> LoadReport:
        """Load a timm checkpoint (``state_dict`` of ``timm.create_model(name)``) from a local file."""
        return load_into(self.body, read_state_dict(path), f"MODEL.TIMM.WEIGHTS {path}")

    @property
    def size_divisibility(self) -> int:
        return max(self._out_feature_strides.values())

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        return dict(zip(self._out_features, self.body(x)))

    def output_shape(self):
        return {n: ShapeSpec(channels=self._out_feature_channels[n], stride=self._out_feature_strides[n])
                for n in self._out_features}


def _from_config(cfg, input_shape: ShapeSpec) -> TimmBackbone:
    node = cfg.MODEL.TIMM
    return TimmBackbone(node.NAME, tuple(node.OUT_INDICES), input_shape.channels, cfg.MODEL.BACKBONE.FREEZE_AT,
                        node.NORM, node.DROP_PATH_RATE, node.WEIGHTS)


@BACKBONE_REGISTRY.register()
def build_timm_backbone(cfg, input_shape: ShapeSpec) -> TimmBackbone:
    """MODEL.TIMM.* as a backbone: outputs ``res{k}`` (or ``stage{i}``), see :class:`TimmBackbone`."""
    return _from_config(cfg, input_shape)


def fpn_on(cfg, bottom_up: Backbone) -> FPN:
    """Detectron2's FPN (MODEL.FPN.*: IN_FEATURES, OUT_CHANNELS, NORM, FUSE_TYPE) on ``bottom_up``, p2 .. p6
    as ``build_resnet_fpn_backbone`` gives them."""
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )


@BACKBONE_REGISTRY.register()
def build_timm_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """The timm backbone under Detectron2's FPN (:func:`fpn_on`)."""
    return fpn_on(cfg, _from_config(cfg, input_shape))
