"""Heads of Detectron2's projects (``detectron2.projects.*``, shipped by seg_d2's Detectron2 build) trained with a
seg_d2 loss: same layers, same checkpoint keys, only the loss comes from the config's LOSS node.

- ``DeepLabV3PlusLossHead``, ``DeepLabV3LossHead`` (DeepLab) and ``PanopticDeepLabLossSemSegHead``
  (Panoptic-DeepLab's semantic branch): ``MODEL.SEM_SEG_HEAD.LOSS`` in multi-class mode instead of
  ``MODEL.SEM_SEG_HEAD.LOSS_TYPE``; Panoptic-DeepLab's per-pixel weights (small instances count more) are kept.
- ``PointRendLossMaskHead`` (PointRend): ``MODEL.ROI_MASK_HEAD.LOSS`` in binary mode on the coarse masks and on
  the sampled points (a point-sampled Dice, for instance, as Mask2Former's mask loss), each ROI on the channel
  of its class, instead of binary cross-entropy on both.
"""
from detectron2.config import configurable
from detectron2.modeling import ROI_MASK_HEAD_REGISTRY, SEM_SEG_HEADS_REGISTRY
from detectron2.projects.deeplab import DeepLabV3Head, DeepLabV3PlusHead
from detectron2.projects.panoptic_deeplab.panoptic_seg import PanopticDeepLabSemSegHead
from detectron2.projects.point_rend.mask_head import PointRendMaskHead

from seg_d2.losses import build_loss, select_class_channel

from .roi_heads.mask_head import mask_targets

__all__ = [
    "SemSegLossFromConfig",
    "DeepLabV3PlusLossHead",
    "DeepLabV3LossHead",
    "PanopticDeepLabLossSemSegHead",
    "PointRendLossMaskHead",
]


def _semantic_loss(cfg):
    head = cfg.MODEL.SEM_SEG_HEAD
    return build_loss(head.LOSS, mode="multiclass", ignore_index=head.IGNORE_VALUE, cfg_key="MODEL.SEM_SEG_HEAD.LOSS")


class SemSegLossFromConfig:
    """Mixin for a configurable semantic head that calls ``self.loss(logits, targets[, weights])``: that
    module is built from ``MODEL.SEM_SEG_HEAD.LOSS``."""

    @configurable
    def __init__(self, input_shape, *, loss, **kwargs):
        super().__init__(input_shape, **kwargs)
        self.loss = loss

    @classmethod
    def from_config(cls, cfg, input_shape):
        return {**super().from_config(cfg, input_shape), "loss": _semantic_loss(cfg)}


@SEM_SEG_HEADS_REGISTRY.register()
class DeepLabV3PlusLossHead(SemSegLossFromConfig, DeepLabV3PlusHead):
    """DeepLab's DeepLabV3PlusHead with a seg_d2 loss."""


@SEM_SEG_HEADS_REGISTRY.register()
class PanopticDeepLabLossSemSegHead(SemSegLossFromConfig, PanopticDeepLabSemSegHead):
    """Panoptic-DeepLab's semantic head with a seg_d2 loss (its per-pixel weights passed on)."""


@SEM_SEG_HEADS_REGISTRY.register()
class DeepLabV3LossHead(DeepLabV3Head):
    """DeepLab's DeepLabV3Head (built from the config only, not configurable) with a seg_d2 loss."""

    def __init__(self, cfg, input_shape):
        super().__init__(cfg, input_shape)
        self.loss = _semantic_loss(cfg)


@ROI_MASK_HEAD_REGISTRY.register()
class PointRendLossMaskHead(PointRendMaskHead):
    """PointRend's mask head with a seg_d2 loss on its coarse masks and on its sampled points."""

    def __init__(self, cfg, input_shape):
        super().__init__(cfg, input_shape)
        self.loss = build_loss(cfg.MODEL.ROI_MASK_HEAD.LOSS, mode="binary", cfg_key="MODEL.ROI_MASK_HEAD.LOSS")

    def forward(self, features, instances):
        if not self.training:
            return super().forward(features, instances)
        # PointRendMaskHead.forward's training steps, with self.loss for its two losses
        boxes = [x.proposal_boxes for x in instances]
        coarse_mask = self.coarse_head(self._roi_pooler(features, boxes))
        gt_classes, gt_masks = mask_targets(instances, coarse_mask.size(-1))
        losses = {"loss_mask": self._class_loss(coarse_mask, gt_classes, gt_masks)}
        if self.mask_point_on:
            point_coords, point_labels = self._sample_train_points(coarse_mask, instances)
            point_logits = self._get_point_logits(self._point_pooler(features, boxes, point_coords), point_coords,
                                                  coarse_mask)
            # (R, C, P) logits and (R, P) labels as one-pixel-wide masks
            losses["loss_mask_point"] = self._class_loss(point_logits[..., None], gt_classes, point_labels[..., None])
        return losses

    def _class_loss(self, logits, gt_classes, target):
        if not len(target):
            return logits.sum() * 0
        return self.loss(select_class_channel(logits, gt_classes.to(logits.device)), target.to(logits.device))
