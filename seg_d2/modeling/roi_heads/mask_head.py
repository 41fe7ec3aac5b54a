"""Detectron2's conv-upsample mask head, trained with a loss from the seg_d2 loss registry."""
from typing import List, Tuple

import torch
from torch import nn

from detectron2.config import configurable
from detectron2.layers import cat
from detectron2.modeling.roi_heads.mask_head import (
    ROI_MASK_HEAD_REGISTRY,
    MaskRCNNConvUpsampleHead,
    mask_rcnn_inference,
)
from detectron2.structures import Instances

from seg_d2.losses import build_loss, select_class_channel

__all__ = ["MaskRCNNConvUpsampleLossHead", "mask_targets"]


def mask_targets(instances: List[Instances], mask_size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mask R-CNN's per-ROI targets: the ground-truth class (R,) and the ground-truth mask cropped to
    the proposal box and resized to ``mask_size`` (R, M, M) as float {0, 1}.

    ``instances`` are foreground proposals with ``gt_classes``, ``gt_masks`` and ``proposal_boxes``.
    """
    # Images without ground truth have no gt_masks field at all, and no foreground ROIs.
    instances = [x for x in instances if len(x)]
    if not instances:
        return torch.zeros(0, dtype=torch.int64), torch.zeros(0, mask_size, mask_size)
    gt_classes = cat([x.gt_classes for x in instances]).long()
    gt_masks = cat([x.gt_masks.crop_and_resize(x.proposal_boxes.tensor, mask_size) for x in instances])
    return gt_classes, gt_masks.to(device=gt_classes.device, dtype=torch.float32)


@ROI_MASK_HEAD_REGISTRY.register()
class MaskRCNNConvUpsampleLossHead(MaskRCNNConvUpsampleHead):
    """:class:`MaskRCNNConvUpsampleHead` (same layers, same checkpoint keys) whose loss is built from
    ``MODEL.ROI_MASK_HEAD.LOSS``: any seg_d2 loss (Dice, Focal, Tversky, BCE + Dice, ...) in binary mode
    on each ROI's M×M mask target, on the channel of the ROI's class (or the only channel when
    ``CLS_AGNOSTIC_MASK``). With the default LOSS (BCE) it trains exactly like the stock head.
    """

    @configurable
    def __init__(self, input_shape, *, loss: nn.Module, **kwargs):
        """
        Args:
            loss: ``forward(logits (R, M, M), target (R, M, M)) -> scalar``, e.g. from
                :func:`seg_d2.losses.build_loss` in binary mode.
            input_shape, kwargs: as for :class:`MaskRCNNConvUpsampleHead`.
        """
        super().__init__(input_shape, **kwargs)
        self.loss = loss

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret["loss"] = build_loss(cfg.MODEL.ROI_MASK_HEAD.LOSS, mode="binary", cfg_key="MODEL.ROI_MASK_HEAD.LOSS")
        return ret

    def layers(self, x):
        # The head is an nn.Sequential of its layers; the loss is a child module too but not a layer.
        for layer in self:
            if layer is not self.loss:
                x = layer(x)
        return x

    def forward(self, x, instances: List[Instances]):
        logits = self.layers(x)
        if self.training:
            return self.losses(logits, instances)
        mask_rcnn_inference(logits, instances)
        return instances

    def losses(self, pred_mask_logits: torch.Tensor, instances: List[Instances]):
        """{"loss_mask": scalar} for mask logits (R, C or 1, M, M) of the foreground ROIs ``instances``."""
        gt_classes, gt_masks = mask_targets(instances, pred_mask_logits.size(2))
        if len(gt_masks) == 0:
            return {"loss_mask": pred_mask_logits.sum() * 0}
        logits = select_class_channel(pred_mask_logits, gt_classes.to(pred_mask_logits.device))
        return {"loss_mask": self.loss(logits, gt_masks.to(logits.device)) * self.loss_weight}
