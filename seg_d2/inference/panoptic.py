"""Panoptic fusion of cropped instances and a semantic label map, for images too large for dense masks.

The rules, order and outputs are those of :func:`seg_d2.modeling.meta_arch.panoptic_fusion.fuse_panoptic`
(Kirillov et al.'s heuristic, as Detectron2's ``combine_semantic_and_instance_outputs``): instances by
decreasing score (stable) above ``score_thresh``, each dropped if more than ``overlap_thresh`` of it is
taken, else it takes its free pixels; then each stuff label (1..S; 0 is "things") takes its free pixels
if they reach its area limit. Here each instance only touches its crop, and the stuff pass runs over row
bands, so memory stays near the (H, W) int32 segment map.
"""
import numpy as np

from seg_d2.modeling.meta_arch.panoptic_fusion import _area_limits  # the same limit rule, not a copy

__all__ = ["fuse_cropped_panoptic"]

_BAND_ROWS = 1024  # rows per step of the stuff pass: bounds its temporaries on large images


def _instance_pass(instances, panoptic, overlap_thresh, score_thresh):
    order = np.argsort(-instances.scores, kind="stable")
    order = order[instances.scores[order] >= score_thresh]
    segments = []
    for index in order.tolist():
        x0, y0, crop = instances.masks[index]
        area = int(np.count_nonzero(crop))
        if area == 0:
            continue
        region = panoptic[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]]
        own = crop & (region == 0)
        own_area = int(np.count_nonzero(own))
        if area - own_area > overlap_thresh * area:
            continue
        segments.append({"id": len(segments) + 1, "isthing": True, "category_id": int(instances.classes[index]),
                         "score": float(instances.scores[index]), "instance_id": index, "area": own_area})
        region[own] = len(segments)
    return segments


def _bands(height):
    return [slice(y, min(y + _BAND_ROWS, height)) for y in range(0, height, _BAND_ROWS)]


def fuse_cropped_panoptic(instances, semantic, *, overlap_thresh, stuff_area_limit, score_thresh):
    """
    Args:
        instances: :class:`CroppedInstances` in the image's coordinates.
        semantic: (H, W) integer labels, 0 = "things", 1..S stuff.
        overlap_thresh, stuff_area_limit, score_thresh: as for ``fuse_panoptic``.

    Returns:
        panoptic_seg: (H, W) int32 segment ids, 0 = unassigned; segments_info: as ``fuse_panoptic``'s.
    """
    height, width = semantic.shape
    panoptic = np.zeros((height, width), dtype=np.int32)
    segments = _instance_pass(instances, panoptic, overlap_thresh, score_thresh)
    num_labels = int(semantic.max()) + 1 if semantic.size else 1
    areas = np.zeros(num_labels, dtype=np.int64)
    for rows in _bands(height):
        areas += np.bincount(semantic[rows][panoptic[rows] == 0], minlength=num_labels)
    limits = _area_limits(stuff_area_limit, num_labels, "cpu").numpy()
    stuff_ids = np.zeros(num_labels, dtype=np.int32)
    for label in np.flatnonzero((areas >= limits) & (areas > 0)).tolist():
        if label == 0:  # "things": instances, not the semantic head, own those pixels
            continue
        segments.append({"id": len(segments) + 1, "isthing": False, "category_id": label, "area": int(areas[label])})
        stuff_ids[label] = len(segments)
    for rows in _bands(height):
        band, free = panoptic[rows], panoptic[rows] == 0
        band[free] = stuff_ids[semantic[rows][free]]
    return panoptic, segments
