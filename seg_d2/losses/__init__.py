"""Segmentation losses, registered in :data:`SEG_LOSS_REGISTRY` and chosen per head from the config
(``MODEL.ROI_MASK_HEAD.LOSS``, ``MODEL.SEM_SEG_HEAD.LOSS``) through :func:`build_loss`."""
from .base import MODES, SEG_LOSS_REGISTRY, SegBatch, SegLoss
from .build import build_loss
from .combined import CombinedLoss
from .cross_entropy import BCELoss, CrossEntropyLoss
from .focal import FocalLoss
from .lovasz import LovaszLoss
from .mask_utils import select_class_channel
from .region import DiceLoss, FocalTverskyLoss, IoULoss, TverskyLoss

__all__ = [
    "MODES",
    "SEG_LOSS_REGISTRY",
    "SegBatch",
    "SegLoss",
    "build_loss",
    "CombinedLoss",
    "BCELoss",
    "CrossEntropyLoss",
    "FocalLoss",
    "LovaszLoss",
    "select_class_channel",
    "DiceLoss",
    "FocalTverskyLoss",
    "IoULoss",
    "TverskyLoss",
]
