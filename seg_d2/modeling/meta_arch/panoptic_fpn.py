"""SegD2PanopticFPN: Detectron2's Panoptic FPN (Kirillov et al., 2019) with any semantic head and any ROI /
mask head from the registries (e.g. UNetHead, DeepLabV3PlusASPPHead, MaskRCNNConvUpsampleLossHead,
MaskScoringROIHeads) and seg_d2's panoptic fusion (:func:`fuse_panoptic`).

What it adds to stock PanopticFPN:
- per-stuff-class area limits (MODEL.SEG_D2_PANOPTIC.STUFF_AREA_LIMITS) next to the stock thresholds
  MODEL.PANOPTIC_FPN.COMBINE.{OVERLAP_THRESH, STUFF_AREA_LIMIT, INSTANCES_CONFIDENCE_THRESH}, all checked
  at build time;
- MODEL.SEG_D2_PANOPTIC.INSTANCE_LOSS_WEIGHT, a factor on every proposal and ROI loss that works with any
  ROI head (stock INSTANCE_LOSS_WEIGHT rewrites box / mask head attributes and misses e.g. the MaskIoU
  loss); the semantic weight stays MODEL.SEM_SEG_HEAD.LOSS_WEIGHT.
Semantic logits at stride 4 (SemSegFPNHead) and at full resolution (seg_d2 heads) are both upsampled to the
padded input size by the head, so stock ``sem_seg_postprocess`` handles either.
"""
import math
from typing import Dict, List, Sequence

import torch

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, PanopticFPN
from detectron2.modeling.postprocessing import detector_postprocess, sem_seg_postprocess

from .panoptic_fusion import fuse_panoptic

__all__ = ["SegD2PanopticFPN"]


def _stuff_area_limits(cfg):
    """One limit per semantic label (0, "things", unused) from the config, checked; errors name the key."""
    combine = cfg.MODEL.PANOPTIC_FPN.COMBINE
    for key in ("OVERLAP_THRESH", "INSTANCES_CONFIDENCE_THRESH"):
        if not 0.0 <= combine[key] <= 1.0:
            raise ValueError(f"MODEL.PANOPTIC_FPN.COMBINE.{key} must be in [0, 1], got {combine[key]}")
    num_stuff = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES - 1
    limits = cfg.MODEL.SEG_D2_PANOPTIC.STUFF_AREA_LIMITS
    key = "MODEL.SEG_D2_PANOPTIC.STUFF_AREA_LIMITS"
    if not limits:
        limits, key = [combine.STUFF_AREA_LIMIT] * num_stuff, "MODEL.PANOPTIC_FPN.COMBINE.STUFF_AREA_LIMIT"
    elif len(limits) != num_stuff:
        raise ValueError(f"{key} needs one limit per stuff class (MODEL.SEM_SEG_HEAD.NUM_CLASSES - 1 = "
                         f"{num_stuff}), got {list(limits)}")
    if any(not math.isfinite(a) or a < 0 for a in limits):
        raise ValueError(f"{key} must be finite and >= 0, got {list(limits)}")
    return [0.0, *map(float, limits)]


@META_ARCH_REGISTRY.register()
class SegD2PanopticFPN(PanopticFPN):
    @configurable
    def __init__(self, *, stuff_area_limits: Sequence[float], instance_loss_weight: float = 1.0, **kwargs):
        """
        Args:
            stuff_area_limits: minimum area (output pixels) of a stuff segment, one per semantic label
                (entry 0, "things", unused); replaces ``combine_stuff_area_thresh``.
            instance_loss_weight: factor on the proposal and ROI-head losses.
            kwargs: as for :class:`PanopticFPN`.
        """
        super().__init__(**kwargs)
        self.stuff_area_limits = list(stuff_area_limits)
        self.instance_loss_weight = instance_loss_weight

    @classmethod
    def from_config(cls, cfg):
        if cfg.MODEL.PANOPTIC_FPN.INSTANCE_LOSS_WEIGHT != 1.0:
            raise ValueError("SegD2PanopticFPN: set MODEL.SEG_D2_PANOPTIC.INSTANCE_LOSS_WEIGHT instead of "
                             "MODEL.PANOPTIC_FPN.INSTANCE_LOSS_WEIGHT (which must stay 1.0)")
        ret = super().from_config(cfg)
        ret["stuff_area_limits"] = _stuff_area_limits(cfg)
        ret["instance_loss_weight"] = cfg.MODEL.SEG_D2_PANOPTIC.INSTANCE_LOSS_WEIGHT
        return ret

    def forward(self, batched_inputs):
        if not self.training:
            return self.inference(batched_inputs)
        losses = super().forward(batched_inputs)
        # the semantic head only returns "loss_sem_seg"; everything else is the detector's
        return {k: v if k == "loss_sem_seg" else v * self.instance_loss_weight for k, v in losses.items()}

    def inference(self, batched_inputs: List[Dict[str, torch.Tensor]], do_postprocess: bool = True):
        detector_results, sem_seg_results = super().inference(batched_inputs, do_postprocess=False)
        if not do_postprocess:
            return detector_results, sem_seg_results
        processed_results = []
        for sem_seg, detections, inputs in zip(sem_seg_results, detector_results, batched_inputs):
            image_size = detections.image_size  # the resized image, before padding
            height = inputs.get("height", image_size[0])
            width = inputs.get("width", image_size[1])
            sem_seg = sem_seg_postprocess(sem_seg, image_size, height, width)
            detections = detector_postprocess(detections, height, width)
            panoptic = fuse_panoptic(
                detections, sem_seg.argmax(dim=0), overlap_thresh=self.combine_overlap_thresh,
                stuff_area_limit=self.stuff_area_limits, score_thresh=self.combine_instances_score_thresh,
            )
            processed_results.append({"sem_seg": sem_seg, "instances": detections, "panoptic_seg": panoptic})
        return processed_results
