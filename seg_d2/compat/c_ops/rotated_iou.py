"""IoU and greedy NMS of rotated boxes: ``box_iou_rotated`` and ``nms_rotated`` of Detectron2 v0.6's ``_C``.

A box is (x_ctr, y_ctr, width, height, angle_degrees). As ``detectron2.structures.RotatedBoxes``
documents, a positive angle turns the box counter-clockwise on the image (y points down): its width
axis is (cos a, -sin a) and its height axis (sin a, cos a) in (x, y).

The intersection of two boxes is exact: one box is clipped by the four half-planes of the other
(Sutherland–Hodgman), for many pairs at once, in float64. Pairs whose circumscribed circles are
apart cannot intersect and are skipped, which is what makes large N x M matrices cheap.
"""
import numpy as np
import torch

__all__ = ["box_iou_rotated", "nms_rotated"]

_MIN_AREA = 1e-14  # boxes smaller than this have IoU 0 with everything, as in the C++
_SCREEN_PAIRS = 1 << 20  # pairs screened by the circle test at once (bounds memory)
_CLIP_PAIRS = 1 << 15  # pairs clipped at once (bounds memory)
_NMS_BLOCK = 256  # boxes NMS resolves among themselves at a time

# corner k of a box is center + _U[k] * width_axis * w/2 + _V[k] * height_axis * h/2, in an order of
# positive signed area, so that "inside" means "left of every edge"
_U = (-1.0, 1.0, 1.0, -1.0)
_V = (-1.0, -1.0, 1.0, 1.0)


def _check_boxes(boxes: torch.Tensor, name: str) -> None:
    if not isinstance(boxes, torch.Tensor) or boxes.dim() != 2 or boxes.shape[1] != 5:
        shape = tuple(boxes.shape) if isinstance(boxes, torch.Tensor) else type(boxes).__name__
        raise ValueError(f"{name} must be an (N, 5) tensor of (x_ctr, y_ctr, w, h, angle), got {shape}")
    if not boxes.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor, got {boxes.dtype}")


def _corners(boxes: torch.Tensor) -> torch.Tensor:
    """(P, 5) boxes -> (P, 4, 2) corners with positive signed area."""
    theta = torch.deg2rad(boxes[:, 4])
    cos, sin = theta.cos(), theta.sin()
    half_w = torch.stack([cos, -sin], 1) * (boxes[:, 2:3] / 2)
    half_h = torch.stack([sin, cos], 1) * (boxes[:, 3:4] / 2)
    u = boxes.new_tensor(_U)[None, :, None]
    v = boxes.new_tensor(_V)[None, :, None]
    return boxes[:, None, :2] + u * half_w[:, None] + v * half_h[:, None]


def _cross(e: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    return e[..., 0] * r[..., 1] - e[..., 1] * r[..., 0]


def _next_index(poly: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """Index of each vertex's successor in a polygon whose first ``count`` vertices are valid."""
    idx = torch.arange(poly.shape[1], device=poly.device)
    return torch.where(idx + 1 < count[:, None], idx + 1, 0)


def _clip(poly: torch.Tensor, count: torch.Tensor, start: torch.Tensor, edge: torch.Tensor):
    """One Sutherland–Hodgman step: keep the part of each polygon left of the line start + t * edge.

    poly (P, K, 2) holds ``count`` valid vertices per polygon, in order; returns the same for the result.
    """
    nxt = _next_index(poly, count)
    valid = torch.arange(poly.shape[1], device=poly.device) < count[:, None]
    dist = _cross(edge[:, None], poly - start[:, None])
    dist_next = dist.gather(1, nxt)
    inside, crosses = dist >= 0, (dist >= 0) != (dist_next >= 0)
    succ = poly.gather(1, nxt[..., None].expand_as(poly))
    t = dist / torch.where(crosses, dist - dist_next, 1.0)  # the crossing of an edge that changes side
    crossing = poly + t[..., None] * (succ - poly)
    # every vertex emits itself if inside, then its outgoing edge's crossing: order is preserved
    points = torch.stack([poly, crossing], 2).flatten(1, 2)
    keep = torch.stack([valid & inside, valid & crosses], 2).flatten(1)
    new_count = keep.sum(1)
    width = int(new_count.max()) if len(poly) else 0
    order = torch.argsort((~keep).to(torch.uint8), dim=1, stable=True)[:, :width]
    return points.gather(1, order[..., None].expand(-1, -1, 2)), new_count


def _polygon_area(poly: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """Shoelace area of polygons with positive orientation (padding vertices ignored)."""
    nxt = _next_index(poly, count)
    valid = torch.arange(poly.shape[1], device=poly.device) < count[:, None]
    succ = poly.gather(1, nxt[..., None].expand_as(poly))
    return (_cross(poly, succ) * valid).sum(1) / 2


def _pair_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """IoU of boxes1[i] with boxes2[i] (float64, both (P, 5), areas >= _MIN_AREA)."""
    # move each pair's midpoint to the origin: smaller coordinates, smaller rounding (as the C++ does)
    mid = (boxes1[:, :2] + boxes2[:, :2]) / 2
    boxes1 = torch.cat([boxes1[:, :2] - mid, boxes1[:, 2:]], 1)
    boxes2 = torch.cat([boxes2[:, :2] - mid, boxes2[:, 2:]], 1)
    poly = _corners(boxes1)
    count = torch.full((len(poly),), 4, dtype=torch.long, device=poly.device)
    clipper = _corners(boxes2)
    for k in range(4):
        start = clipper[:, k]
        poly, count = _clip(poly, count, start, clipper[:, (k + 1) % 4] - start)
    inter = _polygon_area(poly, count)
    area1 = boxes1[:, 2] * boxes1[:, 3]
    area2 = boxes2[:, 2] * boxes2[:, 3]
    return inter / (area1 + area2 - inter)


def _iou_matrix(boxes1: torch.Tensor, boxes2: torch.Tensor, min_iou: float = 0.0) -> torch.Tensor:
    """(N, M) float64 IoU of float64 boxes, clipping only pairs whose circumscribed circles meet.

    With min_iou > 0, pairs that provably have IoU < min_iou (IoU <= smaller area / larger area)
    are also skipped and left at 0.
    """
    n, m = len(boxes1), len(boxes2)
    out = boxes1.new_zeros(n, m)
    if n == 0 or m == 0:
        return out
    radius1 = torch.hypot(boxes1[:, 2], boxes1[:, 3]) / 2
    radius2 = torch.hypot(boxes2[:, 2], boxes2[:, 3]) / 2
    area1, area2 = boxes1[:, 2] * boxes1[:, 3], boxes2[:, 2] * boxes2[:, 3]
    big1, big2 = area1 >= _MIN_AREA, area2 >= _MIN_AREA
    # slack: a pair just below min_iou may still round up to it in float32
    min_ratio = min_iou * (1 - 1e-6)
    rows = max(1, _SCREEN_PAIRS // m)
    for s in range(0, n, rows):
        b1 = boxes1[s : s + rows]
        dist2 = (b1[:, None, 0] - boxes2[:, 0]) ** 2 + (b1[:, None, 1] - boxes2[:, 1]) ** 2
        reach2 = (radius1[s : s + rows, None] + radius2) ** 2
        near = (dist2 <= reach2) & big1[s : s + rows, None] & big2
        if min_ratio > 0:
            a1 = area1[s : s + rows, None]
            near &= torch.minimum(a1, area2) >= min_ratio * torch.maximum(a1, area2)
        i, j = near.nonzero(as_tuple=True)
        i = i + s
        for c in range(0, len(i), _CLIP_PAIRS):
            ii, jj = i[c : c + _CLIP_PAIRS], j[c : c + _CLIP_PAIRS]
            out[ii, jj] = _pair_iou(boxes1[ii], boxes2[jj])
    return out


def box_iou_rotated(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """(N, M) float32 IoU of rotated boxes (N, 5) and (M, 5); boxes of area < 1e-14 give 0."""
    _check_boxes(boxes1, "boxes1")
    _check_boxes(boxes2, "boxes2")
    if boxes1.device != boxes2.device:
        raise ValueError(f"boxes1 is on {boxes1.device} but boxes2 on {boxes2.device}")
    return _iou_matrix(boxes1.double(), boxes2.double()).float()


def _suppressed_by(iou: torch.Tensor, iou_threshold: float, dtype: torch.dtype) -> torch.Tensor:
    # the C++ compares the IoU in the boxes' own precision
    return iou.to(dtype) >= iou_threshold


def _greedy_within(over: np.ndarray) -> np.ndarray:
    """Greedy NMS among boxes sorted by score; over[i, j] (i < j): keeping i removes j. Returns kept mask."""
    removed = np.zeros(len(over), dtype=bool)
    for i in np.flatnonzero(over.any(1)):  # boxes that overlap nothing later cannot remove anything
        if not removed[i]:
            removed |= over[i]
    return ~removed


def nms_rotated(dets: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS: indices (int64) of kept boxes, by decreasing score.

    A box is removed when its IoU with a kept higher-scoring box is >= iou_threshold (as in the C++).
    Boxes are handled in blocks: a block is first checked against the boxes kept so far, then
    resolved within itself, so the work grows with (boxes x kept boxes), not boxes squared.
    """
    _check_boxes(dets, "dets")
    if scores.dim() != 1 or len(scores) != len(dets):
        raise ValueError(f"scores must have shape ({len(dets)},), got {tuple(scores.shape)}")
    if scores.device != dets.device:
        raise ValueError(f"dets is on {dets.device} but scores on {scores.device}")
    if len(dets) == 0:
        return torch.empty(0, dtype=torch.long, device=dets.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    boxes = dets[order].double()
    kept = torch.empty(0, dtype=torch.long, device=dets.device)
    for s in range(0, len(boxes), _NMS_BLOCK):
        block = torch.arange(s, min(s + _NMS_BLOCK, len(boxes)), device=dets.device)
        if len(kept):
            iou = _iou_matrix(boxes[block], boxes[kept], iou_threshold)
            hit = _suppressed_by(iou, iou_threshold, dets.dtype)
            block = block[~hit.any(1)]
        iou = _iou_matrix(boxes[block], boxes[block], iou_threshold)
        over = _suppressed_by(iou, iou_threshold, dets.dtype)
        alive = _greedy_within(over.triu(1).cpu().numpy())
        kept = torch.cat([kept, block[torch.from_numpy(alive).to(block.device)]])
    return order[kept]
