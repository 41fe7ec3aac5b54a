"""Panoptic fusion of instance and semantic predictions (Kirillov et al., 2019, "Panoptic Feature Pyramid
Networks", sec. 4; the heuristic of panopticapi's combine_semantic_and_instance_predictions.py).

Same rules as Detectron2's ``combine_semantic_and_instance_outputs``, plus one limit per stuff class:

1. instances in order of decreasing score (stable, so ties keep the detector's order); those scoring below
   ``score_thresh`` are dropped;
2. an instance whose overlap with pixels already assigned, divided by its own area, exceeds
   ``overlap_thresh`` is dropped; otherwise it takes only its unassigned pixels;
3. every stuff class of the semantic argmax (label 0, "things", is ignored) takes its still-unassigned
   pixels if they number at least its area limit.

Every pixel goes to at most one segment: instance pixels are removed from the free set as they are
taken, and stuff labels partition the rest. The instance pass is greedy (whether an instance is kept
depends on those kept before it), so it is one O(H·W) step per instance; the stuff pass is one bincount.
"""
from typing import List, Sequence, Tuple, Union

import torch

from detectron2.structures import Instances

__all__ = ["fuse_panoptic"]


def _instance_segments(instances, free, overlap_thresh, score_thresh):
    """Greedy instance pass: (flat segment-id map with ids 1..K, segments); clears taken pixels in ``free``."""
    order = torch.argsort(instances.scores, descending=True, stable=True)
    order = order[instances.scores[order] >= score_thresh]
    masks = instances.pred_masks[order].flatten(1).to(device=free.device, dtype=torch.bool)
    areas = masks.sum(dim=1).tolist()
    segment_of = torch.zeros_like(free, dtype=torch.int32)
    segments = []
    for mask, area, index in zip(masks, areas, order.tolist()):
        if area == 0:
            continue
        own = mask & free
        own_area = int(own.sum())
        if area - own_area > overlap_thresh * area:
            continue
        segments.append({
            "id": len(segments) + 1,
            "isthing": True,
            "category_id": int(instances.pred_classes[index]),
            "score": float(instances.scores[index]),
            "instance_id": index,
            "area": own_area,
        })
        segment_of[own] = len(segments)
        free &= ~own
    return segment_of, segments


def _area_limits(stuff_area_limit, num_labels, device):
    """One area limit per semantic label (a scalar applies to all)."""
    limits = torch.as_tensor(stuff_area_limit, dtype=torch.float64, device=device)
    if limits.dim() == 0:
        return limits.expand(num_labels)
    if len(limits) < num_labels:
        raise ValueError(f"stuff_area_limit has {len(limits)} entries, the semantic labels go up to "
                         f"{num_labels - 1}")
    return limits[:num_labels]


def fuse_panoptic(
    instances: Instances,
    semantic: torch.Tensor,
    *,
    overlap_thresh: float,
    stuff_area_limit: Union[float, Sequence[float]],
    score_thresh: float,
) -> Tuple[torch.Tensor, List[dict]]:
    """
    Args:
        instances: detector outputs at the semantic map's size (``detector_postprocess``): ``scores``,
            ``pred_classes`` and ``pred_masks`` (N, H, W), boolean or 0/1.
        semantic: (H, W) integer semantic labels, 0 = "things", 1..S = stuff (the separated form).
        overlap_thresh: drop an instance whose fraction of pixels already taken exceeds this.
        stuff_area_limit: minimum area of a stuff segment; a scalar, or one value per semantic label
            (index 0, "things", unused).
        score_thresh: drop instances scoring below this.

    Returns:
        panoptic_seg: (H, W) int32 segment ids, 0 = unassigned;
        segments_info: one dict per segment ("id", "isthing", "category_id", "area", and for
            instances "score" and "instance_id", the index into ``instances``), things first.
    """
    height, width = semantic.shape
    free = torch.ones(height * width, dtype=torch.bool, device=semantic.device)
    panoptic, segments = _instance_segments(instances, free, overlap_thresh, score_thresh)

    labels = semantic.flatten().long()
    num_labels = int(labels.max()) + 1 if labels.numel() else 1
    areas = torch.bincount(labels[free], minlength=num_labels)
    limits = _area_limits(stuff_area_limit, num_labels, semantic.device)
    kept = ((areas >= limits) & (areas > 0)).nonzero().flatten().tolist()
    stuff_ids = torch.zeros(num_labels, dtype=torch.int32, device=semantic.device)
    for label in kept:
        if label == 0:  # the "things" class: instances, not the semantic head, own those pixels
            continue
        segments.append({"id": len(segments) + 1, "isthing": False, "category_id": label,
                         "area": int(areas[label])})
        stuff_ids[label] = len(segments)
    panoptic[free] = stuff_ids[labels[free]]
    return panoptic.view(height, width), segments
