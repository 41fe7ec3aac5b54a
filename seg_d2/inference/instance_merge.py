"""One set of instances for a whole image from the instances of its overlapping tiles.

Two tiles that overlap both see every pixel of their shared window. An object in that window, or cut by
the border of one of the tiles, is predicted by both; restricted to the shared window, the two masks then
cover the same pixels. So instances of two tiles are the same object when their masks' IoU *inside the
shared window* reaches ``iou_thresh`` (same class unless ``class_agnostic``). SAHI (Akyon et al. 2022)
merges detections across slices by box intersection-over-smaller over whole boxes; comparing masks where
both tiles saw the same pixels also tells apart neighbours whose boxes overlap.

Matches are joined greedily, best IoU first, transitively (an object across three tiles becomes one), but
never so that one object holds two instances of the same tile: that tile's model saw two objects there.
A joined object takes each pixel from the part whose tile weighs that pixel most (``window_weights``:
farthest from a seam), its box is the union of the parts' boxes, its score and class the best part's.
"""
import numpy as np

from .blending import axis_weights
from .cropped_instances import CroppedInstances, tight_crop

__all__ = ["merge_tile_instances"]


def _intersection(a, b):
    """Intersection of XYXY boxes (arrays broadcast); empty where x1 <= x0 or y1 <= y0."""
    return (np.maximum(a[..., 0], b[..., 0]), np.maximum(a[..., 1], b[..., 1]),
            np.minimum(a[..., 2], b[..., 2]), np.minimum(a[..., 3], b[..., 3]))


def _overlapping_window_pairs(windows):
    """(a, b) with a < b for every two windows that share pixels."""
    w = np.asarray(windows, dtype=np.int64)
    x0, y0, x1, y1 = _intersection(w[:, None], w[None, :])
    share = (x1 > x0) & (y1 > y0)
    return [(int(a), int(b)) for a, b in zip(*np.nonzero(np.triu(share, k=1)))]


def _paste(mask, region):
    """The part of ``mask`` = (x0, y0, crop) inside ``region`` (x0, y0, x1, y1), as a bool array of its size."""
    x0, y0, crop = mask
    rx0, ry0, rx1, ry1 = region
    out = np.zeros((ry1 - ry0, rx1 - rx0), dtype=bool)
    ix0, iy0 = max(x0, rx0), max(y0, ry0)
    ix1, iy1 = min(x0 + crop.shape[1], rx1), min(y0 + crop.shape[0], ry1)
    if ix0 < ix1 and iy0 < iy1:
        out[iy0 - ry0:iy1 - ry0, ix0 - rx0:ix1 - rx0] = crop[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0]
    return out


def _iou_inside(mask_a, mask_b, region):
    a, b = _paste(mask_a, region), _paste(mask_b, region)
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 0.0


def _matches(instances, mask_boxes, tile_of, windows, iou_thresh, class_agnostic):
    """(iou, i, j) for instances of overlapping tiles whose masks agree inside the shared window."""
    found = []
    for a, b in _overlapping_window_pairs(windows):
        shared = np.array(_intersection(np.asarray(windows[a]), np.asarray(windows[b])))
        ia, ib = np.flatnonzero(tile_of == a), np.flatnonzero(tile_of == b)
        # boxes cut to the shared window; a pair needs both non-empty and overlapping
        box_a = np.stack(_intersection(mask_boxes[ia], shared), axis=-1)
        box_b = np.stack(_intersection(mask_boxes[ib], shared), axis=-1)
        x0, y0, x1, y1 = _intersection(box_a[:, None], box_b[None, :])
        candidate = (x1 > x0) & (y1 > y0)
        if not class_agnostic:
            candidate &= instances.classes[ia][:, None] == instances.classes[ib][None, :]
        for p, q in zip(*np.nonzero(candidate)):
            i, j = int(ia[p]), int(ib[q])
            hull = (min(box_a[p, 0], box_b[q, 0]), min(box_a[p, 1], box_b[q, 1]),
                    max(box_a[p, 2], box_b[q, 2]), max(box_a[p, 3], box_b[q, 3]))
            iou = _iou_inside(instances.masks[i], instances.masks[j], hull)
            if iou >= iou_thresh:
                found.append((iou, i, j))
    return found


def _groups(matches, tile_of):
    """Union-find over the matches, best first; a group never holds two instances of one tile."""
    parent = list(range(len(tile_of)))
    tiles = {i: {int(t)} for i, t in enumerate(tile_of)}

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for _, i, j in sorted(matches, key=lambda m: (-m[0], m[1], m[2])):
        ri, rj = root(i), root(j)
        if ri != rj and not tiles[ri] & tiles[rj]:
            parent[rj] = ri
            tiles[ri] |= tiles.pop(rj)
    groups = {}
    for i in range(len(tile_of)):
        groups.setdefault(root(i), []).append(i)
    return list(groups.values())


def _joined_mask(parts, instances, mask_boxes, tile_of, windows, height, width):
    """(x0, y0, crop): each pixel of the parts' union box from the part whose window weighs it most."""
    boxes = mask_boxes[parts]
    ux0, uy0 = boxes[:, :2].min(axis=0)
    ux1, uy1 = boxes[:, 2:].max(axis=0)
    best = np.zeros((uy1 - uy0, ux1 - ux0), dtype=np.float32)
    value = np.zeros(best.shape, dtype=bool)
    for i in parts:
        wx0, wy0, wx1, wy1 = windows[tile_of[i]]
        rx0, ry0, rx1, ry1 = max(wx0, ux0), max(wy0, uy0), min(wx1, ux1), min(wy1, uy1)
        if rx0 >= rx1 or ry0 >= ry1:
            continue
        weight = np.outer(axis_weights(wy0, wy1, height)[ry0 - wy0:ry1 - wy0],
                          axis_weights(wx0, wx1, width)[rx0 - wx0:rx1 - wx0])
        sub = (slice(ry0 - uy0, ry1 - uy0), slice(rx0 - ux0, rx1 - ux0))
        wins = weight > best[sub]  # ties stay with the earlier, higher-scoring part
        best[sub][wins] = weight[wins]
        value[sub][wins] = _paste(instances.masks[i], (rx0, ry0, rx1, ry1))[wins]
    x0, y0, crop = tight_crop(value)
    return int(ux0) + x0, int(uy0) + y0, crop


def merge_tile_instances(tiles, height, width, iou_thresh=0.5, class_agnostic=False):
    """Merge the instances of overlapping tiles of an image into one :class:`CroppedInstances`.

    Args:
        tiles: (window (x0, y0, x1, y1), CroppedInstances in full-image coordinates) per tile.
        height, width: the image's size.
        iou_thresh: mask IoU inside the two tiles' shared window from which two instances are one.
        class_agnostic: match instances of different classes too (the joined one takes the best part's class).

    Returns:
        CroppedInstances sorted by decreasing score (stable).
    """
    if not tiles:
        return CroppedInstances.empty()
    windows = [tuple(int(v) for v in w) for w, _ in tiles]
    instances = CroppedInstances.concatenate([inst for _, inst in tiles])
    tile_of = np.concatenate([np.full(len(inst), t, dtype=np.int64) for t, (_, inst) in enumerate(tiles)] +
                             [np.zeros(0, dtype=np.int64)])
    mask_boxes = instances.mask_boxes()
    matches = _matches(instances, mask_boxes, tile_of, windows, iou_thresh, class_agnostic)
    boxes, scores, classes, masks = [], [], [], []
    for group in _groups(matches, tile_of):
        parts = sorted(group, key=lambda i: (-instances.scores[i], i))
        best = parts[0]
        part_boxes = instances.boxes[parts]
        boxes.append(np.concatenate([part_boxes[:, :2].min(axis=0), part_boxes[:, 2:].max(axis=0)]))
        scores.append(instances.scores[best])
        classes.append(instances.classes[best])
        masks.append(instances.masks[best] if len(parts) == 1 else
                     _joined_mask(parts, instances, mask_boxes, tile_of, windows, height, width))
    if not masks:
        return CroppedInstances.empty()
    merged = CroppedInstances(np.stack(boxes), np.array(scores, dtype=np.float64),
                              np.array(classes, dtype=np.int64), masks)
    return merged.select(np.argsort(-merged.scores, kind="stable"))
