"""Mask Scoring R-CNN's ROI heads: Detectron2's standard or cascade ROI heads plus a MaskIoU head that
shares the mask head's ROI features and rescores the detections."""
from typing import Dict, List

import torch

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling.roi_heads import (
    ROI_HEADS_REGISTRY,
    CascadeROIHeads,
    StandardROIHeads,
    select_foreground_proposals,
)
from detectron2.modeling.roi_heads.mask_head import BaseMaskRCNNHead, mask_rcnn_inference, mask_rcnn_loss
from detectron2.structures import Instances

from .mask_iou_head import MaskIoUHead

__all__ = ["MaskScoringROIHeads", "CascadeMaskScoringROIHeads"]


class MaskScoringMixin:
    """Adds Mask Scoring R-CNN's MaskIoU head to a :class:`StandardROIHeads` subclass.

    The MaskIoU head needs the mask head's pooled ROI features and its logits, so the mask branch is run
    here step by step: pool, ``mask_head.layers``, mask loss (the head's own ``losses`` if it has one,
    else Detectron2's BCE) / inference, then the MaskIoU head.
    """

    @configurable
    def __init__(self, *, mask_iou_head: MaskIoUHead, **kwargs):
        super().__init__(**kwargs)
        if not self.mask_on or self.mask_pooler is None or not isinstance(self.mask_head, BaseMaskRCNNHead):
            raise ValueError("Mask Scoring R-CNN needs a mask pooler and a BaseMaskRCNNHead mask head")
        self.mask_iou_head = mask_iou_head

    @classmethod
    def _init_mask_head(cls, cfg, input_shape):
        name = cfg.MODEL.ROI_MASK_HEAD.NAME
        if not cfg.MODEL.MASK_ON:
            raise ValueError(f"{cls.__name__} (Mask Scoring R-CNN) needs MODEL.MASK_ON=True")
        if not cfg.MODEL.ROI_MASK_HEAD.POOLER_TYPE:
            raise ValueError(
                f"{cls.__name__}: the MaskIoU head shares the mask head's pooled ROI features, but "
                f"MODEL.ROI_MASK_HEAD.POOLER_TYPE is empty, so mask head {name!r} reads whole feature maps "
                "and has no ROI features to share; set a POOLER_TYPE (e.g. 'ROIAlignV2')"
            )
        ret = super()._init_mask_head(cfg, input_shape)
        if not isinstance(ret["mask_head"], BaseMaskRCNNHead):
            raise ValueError(
                f"{cls.__name__}: the MaskIoU head needs the mask head's logits, but MODEL.ROI_MASK_HEAD.NAME "
                f"{name!r} is not a BaseMaskRCNNHead with layers(); use e.g. 'MaskRCNNConvUpsampleHead' "
                "or 'MaskRCNNConvUpsampleLossHead'"
            )
        resolution = cfg.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION
        channels = input_shape[cfg.MODEL.ROI_HEADS.IN_FEATURES[0]].channels
        ret["mask_iou_head"] = MaskIoUHead(cfg, ShapeSpec(channels=channels, height=resolution, width=resolution))
        return ret

    def _forward_mask(self, features: Dict[str, torch.Tensor], instances: List[Instances]):
        if self.training:
            instances, _ = select_foreground_proposals(instances, self.num_classes)
        boxes = [x.proposal_boxes if self.training else x.pred_boxes for x in instances]
        roi_features = self.mask_pooler([features[f] for f in self.mask_in_features], boxes)
        mask_logits = self.mask_head.layers(roi_features)
        if self.training:
            losses = self._mask_losses(mask_logits, instances)
            losses.update(self.mask_iou_head(roi_features, mask_logits.detach(), instances))
            return losses
        mask_rcnn_inference(mask_logits, instances)
        return self.mask_iou_head(roi_features, mask_logits, instances)

    def _mask_losses(self, mask_logits, instances):
        head = self.mask_head
        if hasattr(head, "losses"):  # e.g. MaskRCNNConvUpsampleLossHead's configurable loss
            return head.losses(mask_logits, instances)
        return {"loss_mask": mask_rcnn_loss(mask_logits, instances, head.vis_period) * head.loss_weight}


@ROI_HEADS_REGISTRY.register()
class MaskScoringROIHeads(MaskScoringMixin, StandardROIHeads):
    """:class:`StandardROIHeads` + MaskIoU head (Mask Scoring R-CNN)."""


@ROI_HEADS_REGISTRY.register()
class CascadeMaskScoringROIHeads(MaskScoringMixin, CascadeROIHeads):
    """:class:`CascadeROIHeads` + MaskIoU head (rescoring the cascade's averaged class scores)."""
