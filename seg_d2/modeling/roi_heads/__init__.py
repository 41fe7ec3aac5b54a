"""Mask R-CNN variants: a mask head with a selectable loss, and Mask Scoring R-CNN."""
from .mask_head import MaskRCNNConvUpsampleLossHead, mask_targets
from .mask_iou_head import MaskIoUHead, mask_iou_targets
from .roi_heads import CascadeMaskScoringROIHeads, MaskScoringROIHeads

__all__ = [
    "MaskRCNNConvUpsampleLossHead",
    "mask_targets",
    "MaskIoUHead",
    "mask_iou_targets",
    "MaskScoringROIHeads",
    "CascadeMaskScoringROIHeads",
]
