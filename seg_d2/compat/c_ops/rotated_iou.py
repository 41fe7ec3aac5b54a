"""IoU and greedy NMS of rotated boxes: ``box_iou_rotated`` and ``nms_rotated`` of Detectron2 v0.6's ``_C``.

A box is (x_ctr, y_ctr, width, height, angle_degrees); a positive angle turns it counter-clockwise on
the image (y points down), as ``detectron2.structures.RotatedBoxes`` documents.

The values are those of the compiled CPU op, bit for bit, not the exact geometric IoU: Detectron2's
``box_iou_rotated_utils.h`` collects candidate vertices with tolerances (1e-5 on segment parameters
and on dot products, so a box's vertex up to 1e-5 / edge length outside the other box counts as
inside), orders them by a Graham scan whose angle sort calls points within 1e-6 (cross product)
collinear, and does every step in the boxes' own precision (float32 for ``box_iou_rotated``). Each
step here repeats that arithmetic in the same order, vectorised over box pairs. The difference
matters: exact IoUs tie where the compiled ones differ in the last bit, and Detectron2's matchers
pick anchors by equality with the best IoU (its test_rroi_heads losses depend on it). The CUDA kernel
(another sort, fused multiply-adds) is not what is reproduced.

One case is only reproduced, not proven equal: with more than 17 candidate vertices libstdc++'s
``std::sort`` partitions before its insertion sort; the insertion sort used here gives the same
order unless the 1e-6 tolerance makes the comparison inconsistent among those points.
"""
import numpy as np
import torch

__all__ = ["box_iou_rotated", "nms_rotated"]

# constants of box_iou_rotated_utils.h
_EPS = 1e-5  # tolerance on segment parameters and on dot products (a double in the C++)
_COLLINEAR = 1e-6  # |cross| below which the angle sort orders by distance
_PARALLEL = 1e-14  # |det| at or below which two edges count as parallel
_SAME_POINT = 1e-8  # squared distance below which a point is the hull's start point
_MIN_AREA = 1e-14  # boxes smaller than this have IoU 0 with everything
_DEG_TO_RAD = 0.01745329251  # the C++'s truncated pi / 180

_SCREEN_PAIRS = 1 << 20  # pairs screened at once (bounds memory)
_CLIP_PAIRS = 1 << 14  # pairs computed at once (bounds memory)
_NMS_BLOCK = 256  # boxes NMS resolves among themselves at a time
_COUNT_GROUPS = ((3, 8), (9, 12), (13, 16), (17, 24))  # pairs by number of candidate vertices (<= 2: no area)


def _check_boxes(boxes: torch.Tensor, name: str) -> None:
    if not isinstance(boxes, torch.Tensor) or boxes.dim() != 2 or boxes.shape[1] != 5:
        shape = tuple(boxes.shape) if isinstance(boxes, torch.Tensor) else type(boxes).__name__
        raise ValueError(f"{name} must be an (N, 5) tensor of (x_ctr, y_ctr, w, h, angle), got {shape}")
    if not boxes.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor, got {boxes.dtype}")


def _half_cos_sin(angles: torch.Tensor):
    """(T)cos(a * 0.01745329251) * 0.5 and the same for sin, the double cos/sin as libm gives them."""
    theta = angles.detach().double().cpu().numpy() * _DEG_TO_RAD
    cos = torch.from_numpy(np.cos(theta)).to(angles.device, angles.dtype)
    sin = torch.from_numpy(np.sin(theta)).to(angles.device, angles.dtype)
    return cos * 0.5, sin * 0.5


def _vertices(x, y, w, h, cos2, sin2) -> torch.Tensor:
    """(P,) box parameters -> (P, 4, 2) corners, with get_rotated_vertices' expressions."""
    x0, y0 = x + sin2 * h + cos2 * w, y + cos2 * h - sin2 * w
    x1, y1 = x - sin2 * h + cos2 * w, y - cos2 * h - sin2 * w
    xs = torch.stack([x0, x1, 2 * x - x0, 2 * x - x1], 1)
    ys = torch.stack([y0, y1, 2 * y - y0, 2 * y - y1], 1)
    return torch.stack([xs, ys], 2)


def _cross(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a[..., 0] * b[..., 1] - b[..., 0] * a[..., 1]


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1]


def _open_interval(low: float, high: float, dtype: torch.dtype):
    """The closed [a, b] of dtype values equal to the open (low, high) of doubles: the C++ compares
    floats with double constants, which float32 tensors would round."""
    a, b = np.array([low, high], dtype=torch.empty(0, dtype=dtype).numpy().dtype)
    a = a if float(a) > low else np.nextafter(a, np.inf)
    b = b if float(b) < high else np.nextafter(b, -np.inf)
    return float(a), float(b)


def _edge_crossings(pts1, pts2, vec1, vec2):
    """Crossings of every edge i of box 1 with every edge j of box 2, (P, 16, 2) in i-major order, and
    which count: not parallel, and both segment parameters in (-EPS, 1 + EPS)."""
    v1, p1 = vec1[:, :, None], pts1[:, :, None]  # (P, 4, 1, 2): edge i
    v2, p2 = vec2[:, None], pts2[:, None]  # (P, 1, 4, 2): edge j
    det = _cross(v2, v1)
    v12 = p2 - p1
    t1, t2 = _cross(v2, v12) / det, _cross(v1, v12) / det
    low, high = _open_interval(-_EPS, 1.0 + _EPS, det.dtype)
    valid = det.abs() >= _open_interval(_PARALLEL, np.inf, det.dtype)[0]
    for t in (t1, t2):
        valid &= (t >= low) & (t <= high)
    points = p1 + v1 * t1[..., None]
    return points.flatten(1, 2), valid.flatten(1)


def _inside(points, pts, vec):
    """Which of (P, 4, 2) points lie in the box (pts, vec), with the C++'s EPS on the dot products."""
    ab, da = vec[:, 0:1], vec[:, 3:4]
    ap = points - pts[:, 0:1]
    along_ab, along_ad = _dot(ap, ab).double(), -_dot(ap, da).double()
    len_ab, len_ad = _dot(ab, ab).double(), _dot(da, da).double()
    return (along_ab > -_EPS) & (along_ad > -_EPS) & (along_ab < len_ab + _EPS) & (along_ad < len_ad + _EPS)


def _candidates(pts1, pts2):
    """get_intersection_points: edge crossings, then box 1's vertices in box 2, then box 2's in box 1."""
    vec1 = pts1.roll(-1, dims=1) - pts1
    vec2 = pts2.roll(-1, dims=1) - pts2
    crossings, crossing_valid = _edge_crossings(pts1, pts2, vec1, vec2)
    points = torch.cat([crossings, pts1, pts2], 1)
    valid = torch.cat([crossing_valid, _inside(pts1, pts2, vec2), _inside(pts2, pts1, vec1)], 1)
    return points, valid


def _compact(points, valid):
    """Move each pair's valid points to the front, in order; (P, K, 2) with K the largest count."""
    count = valid.sum(1)
    width = int(count.max()) if len(count) else 0
    order = torch.argsort((~valid).to(torch.uint8), dim=1, stable=True)[:, :width]
    return points.gather(1, order[..., None].expand(-1, -1, 2)), count


def _at(points, index):
    """points[p, index[p]] for each pair p: (P, K, 2), (P,) -> (P, 2)."""
    return points.gather(1, index[:, None, None].expand(-1, 1, 2))[:, 0]


def _angle_less(a, b):
    """The C++ sort's comparator: by angle around the start point, by distance among collinear points."""
    cross = _cross(a, b)
    collinear = cross.abs() <= _open_interval(-np.inf, _COLLINEAR, cross.dtype)[1]
    return torch.where(collinear, _dot(a, a) < _dot(b, b), cross > 0)


def _start_first(points, count):
    """Points relative to the lowest (then leftmost) one, which is swapped to index 0."""
    width = points.shape[1]
    slot = torch.arange(width, device=points.device)
    valid = slot < count[:, None]
    x, y = points[..., 0], points[..., 1]
    lowest = valid & (y == torch.where(valid, y, torch.inf).min(1, keepdim=True).values)
    leftmost = lowest & (x == torch.where(lowest, x, torch.inf).min(1, keepdim=True).values)
    start = leftmost.to(torch.uint8).argmax(1)  # the first such point, as the C++ loop keeps it
    q = points - _at(points, start)[:, None]
    swap = torch.where(slot == 0, start[:, None], torch.where(slot == start[:, None], 0, slot))
    return q.gather(1, swap[..., None].expand(-1, -1, 2))


def _insertion_sort(q, count):
    """Sort q[:, 1:count] with _angle_less the way libstdc++'s insertion sort does (for <= 16 points
    std::sort is exactly this): each point goes in front of the run of points it is less than.
    The comparisons are made once; the sort moves indices."""
    num, width = q.shape[:2]
    less = _angle_less(q[:, :, None], q[:, None])  # less[p, a, b]: q[a] before q[b]
    slot = torch.arange(width, device=q.device)
    order = slot.expand(num, width)
    for i in range(2, width):
        # is q[i] less than each point now at positions 1..i-1?
        ahead = less[:, i].gather(1, order[:, 1:i])
        # scanning down from i - 1 it stops at the last point it is not less than (none: the front)
        not_less = torch.where(~ahead, slot[1:i], 0)
        pos = torch.where(ahead[:, 0], 1, not_less.max(1).values + 1)
        pos = torch.where(i < count, pos, i)
        source = torch.where(slot < pos[:, None], slot, torch.where(slot <= i, slot - 1, slot))
        source = torch.where(slot == pos[:, None], i, source)
        order = order.gather(1, source)
    return q.gather(1, order[..., None].expand(-1, -1, 2))


def _hull_area(points, count):
    """convex_hull_graham (shift_to_zero) then polygon_area, in the points' dtype."""
    q = _insertion_sort(_start_first(points, count), count)
    num, width = q.shape[:2]
    slot = torch.arange(width, device=q.device)
    # the first point (after the start) that is not the start point again opens the hull
    apart = (_dot(q, q) >= _open_interval(_SAME_POINT, np.inf, q.dtype)[0]) & (slot >= 1) & (slot < count[:, None])
    has_second = apart.any(1)
    second = torch.where(has_second, apart.to(torch.uint8).argmax(1), 0)
    stack = q.clone()
    stack[:, 1] = _at(q, second)
    top = torch.where(has_second, 2, 1)  # stack size
    rows = torch.arange(num, device=q.device)
    for i in range(2, width):
        point = q[:, i]
        active = has_second & (i > second) & (i < count)
        while True:  # pop while the turn base -> top -> point is not strictly left (counter-clockwise)
            base = stack[rows, (top - 2).clamp(min=0)]
            q1, q2 = point - base, stack[rows, (top - 1).clamp(min=0)] - base
            pop = active & (top > 1) & (q1[:, 0] * q2[:, 1] >= q2[:, 0] * q1[:, 1])
            if not pop.any():
                break
            top = top - pop.long()
        stack[rows[active], top[active]] = point[active]
        top = top + active.long()
    area = q.new_zeros(num)
    for i in range(1, width - 1):  # fan from stack[0], summed in order as the C++ does
        term = _cross(stack[:, i] - stack[:, 0], stack[:, i + 1] - stack[:, 0]).abs()
        area = torch.where(i < top - 1, area + term, area)
    return torch.where(top > 2, area, 0.0)


def _pair_iou(boxes1, boxes2, cos_sin1, cos_sin2):
    """single_box_iou_rotated of boxes1[p] and boxes2[p], (P, 5) in the computing dtype."""
    dtype = boxes1.dtype
    # both centers relative to their midpoint, the midpoint in double as in the C++
    mid = (boxes1[:, :2] + boxes2[:, :2]).double() / 2.0
    center1 = (boxes1[:, :2].double() - mid).to(dtype)
    center2 = (boxes2[:, :2].double() - mid).to(dtype)
    pts1 = _vertices(center1[:, 0], center1[:, 1], boxes1[:, 2], boxes1[:, 3], *cos_sin1)
    pts2 = _vertices(center2[:, 0], center2[:, 1], boxes2[:, 2], boxes2[:, 3], *cos_sin2)
    points, count = _compact(*_candidates(pts1, pts2))
    inter = points.new_zeros(len(points))
    for low, high in _COUNT_GROUPS:  # narrower loops for the many pairs with few candidates
        group = ((count >= low) & (count <= high)).nonzero()[:, 0]
        if len(group):
            inter[group] = _hull_area(points[group, :high], count[group]) / 2.0
    area1, area2 = boxes1[:, 2] * boxes1[:, 3], boxes2[:, 2] * boxes2[:, 3]
    return inter / (area1 + area2 - inter)


def _tolerance_reach(boxes):
    """How far (per box) a point may lie outside it and still be a candidate vertex: EPS times an edge
    along edges, EPS / edge across (the dot-product test), with margin for float rounding."""
    long_edge = torch.maximum(boxes[:, 2], boxes[:, 3])
    short_edge = torch.minimum(boxes[:, 2], boxes[:, 3])
    return 2 * (_EPS * long_edge + _EPS / short_edge) + 1e-5 * long_edge


def _aspect(boxes):
    return torch.maximum(boxes[:, 2], boxes[:, 3]) / torch.minimum(boxes[:, 2], boxes[:, 3])


def _parallel(angles1, angles2):
    """(n, m): edges parallel to within 1e-3 degrees."""
    return (torch.remainder(angles1[:, None] - angles2 + 45.0, 90.0) - 45.0).abs() < 1e-3


def _collinear_edges(b1, b2):
    """For parallel box pairs b1[p], b2[p] (float64): has each an edge on nearly one line (within 1e-4
    of the distances involved, times the aspect ratios)? Only there can float rounding put the two
    lines' crossing anywhere on the segments (a det above 1e-14 by rounding alone), so only there
    does the C++ find vertices far from the other box."""
    turned = torch.remainder(b1[:, 4] - b2[:, 4] + 45.0, 180.0) >= 90.0  # box 2's width along box 1's height
    theta = torch.deg2rad(b1[:, 4])
    axis_w = torch.stack([theta.cos(), -theta.sin()], 1)  # box 1's width axis, as RotatedBoxes
    axis_h = torch.stack([theta.sin(), theta.cos()], 1)
    delta = b2[:, :2] - b1[:, :2]
    dist = delta.norm(dim=1) + torch.hypot(b1[:, 2], b1[:, 3]) + torch.hypot(b2[:, 2], b2[:, 3])
    tolerance = 1e-4 * dist * (1 + _aspect(b1) + _aspect(b2))
    coincide = torch.zeros_like(turned)
    sides = ((axis_w, b1[:, 2], b2[:, 2], b2[:, 3]), (axis_h, b1[:, 3], b2[:, 3], b2[:, 2]))
    for axis, size1, size2, size2_turned in sides:
        position = (delta * axis).sum(1)  # box 2's center on this axis of box 1
        half1, half2 = size1 / 2, torch.where(turned, size2_turned, size2) / 2
        for edge1 in (-half1, half1):
            for edge2 in (position - half2, position + half2):
                coincide |= (edge2 - edge1).abs() <= tolerance
    return coincide


def _iou_matrix(boxes1: torch.Tensor, boxes2: torch.Tensor, min_iou: float = 0.0) -> torch.Tensor:
    """(N, M) IoU in the boxes' dtype; pairs that provably give 0 (or, with min_iou > 0, less than
    min_iou) are not computed. The bounds allow for the C++'s tolerances: a candidate vertex lies
    within reach of both boxes, so the intersection fits in either box grown by its reach."""
    n, m = len(boxes1), len(boxes2)
    out = boxes1.new_zeros(n, m)
    if n == 0 or m == 0:
        return out
    cos_sin1, cos_sin2 = _half_cos_sin(boxes1[:, 4]), _half_cos_sin(boxes2[:, 4])
    b1, b2 = boxes1.double(), boxes2.double()
    reach1, reach2 = _tolerance_reach(b1), _tolerance_reach(b2)
    radius1 = torch.hypot(b1[:, 2], b1[:, 3]) / 2 + reach1 * 1.5  # the grown box's circumcircle
    radius2 = torch.hypot(b2[:, 2], b2[:, 3]) / 2 + reach2 * 1.5
    area1, area2 = boxes1[:, 2] * boxes1[:, 3], boxes2[:, 2] * boxes2[:, 3]
    grown1 = (b1[:, 2] + 2 * reach1) * (b1[:, 3] + 2 * reach1)
    grown2 = (b2[:, 2] + 2 * reach2) * (b2[:, 3] + 2 * reach2)
    big1, big2 = area1.double() >= _MIN_AREA, area2.double() >= _MIN_AREA
    rows = max(1, _SCREEN_PAIRS // m)
    for s in range(0, n, rows):
        part = slice(s, s + rows)
        dist = torch.hypot(b1[part, None, 0] - b2[:, 0], b1[part, None, 1] - b2[:, 1])
        near = dist * (1 - 1e-5) <= radius1[part, None] + radius2  # relative slack: rounding grows with it
        if min_iou > 0:
            inter = torch.minimum(grown1[part, None], grown2) * (1 + 1e-5)
            union = area1[part, None].double() + area2.double() - inter
            near &= (union <= 0) | (inter >= min_iou * (1 - 1e-5) * union)
        i, j = (_parallel(b1[part, 4], b2[:, 4]) & ~near).nonzero(as_tuple=True)
        near[i, j] = _collinear_edges(b1[part][i], b2[j])
        i, j = (near & big1[part, None] & big2).nonzero(as_tuple=True)
        i = i + s
        for c in range(0, len(i), _CLIP_PAIRS):
            ii, jj = i[c : c + _CLIP_PAIRS], j[c : c + _CLIP_PAIRS]
            pick1 = tuple(v[ii] for v in cos_sin1)
            pick2 = tuple(v[jj] for v in cos_sin2)
            out[ii, jj] = _pair_iou(boxes1[ii], boxes2[jj], pick1, pick2)
    return out


def _computing_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def box_iou_rotated(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """(N, M) float32 IoU of rotated boxes (N, 5) and (M, 5); boxes of area < 1e-14 give 0.

    float32 boxes give the compiled CPU op's values bit for bit (it takes float32 only; float64
    boxes are computed in float64 here, as its nms_rotated does).
    """
    _check_boxes(boxes1, "boxes1")
    _check_boxes(boxes2, "boxes2")
    if boxes1.device != boxes2.device:
        raise ValueError(f"boxes1 is on {boxes1.device} but boxes2 on {boxes2.device}")
    dtype = _computing_dtype(torch.promote_types(boxes1.dtype, boxes2.dtype))
    return _iou_matrix(boxes1.to(dtype), boxes2.to(dtype)).float()


def _suppresses(iou: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    # the C++ compares the IoU with the double threshold (a float32 tensor would round the threshold)
    return iou.double() >= iou_threshold


def _greedy_within(over: np.ndarray) -> np.ndarray:
    """Greedy NMS among boxes sorted by score; over[i, j] (i < j): keeping i removes j. Returns kept mask."""
    removed = np.zeros(len(over), dtype=bool)
    for i in np.flatnonzero(over.any(1)):  # boxes that overlap nothing later cannot remove anything
        if not removed[i]:
            removed |= over[i]
    return ~removed


def nms_rotated(dets: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS: indices (int64) of kept boxes, by decreasing score, as the compiled CPU op.

    Like the C++: boxes are ordered by ``scores.sort(descending=True)`` (the same, unstable, order
    among equal scores), a box is removed when its IoU with a kept higher-scoring box (computed with
    the kept box first, in the boxes' precision) is >= iou_threshold. Boxes are handled in blocks: a
    block is first checked against the boxes kept so far, then resolved within itself, so the work
    grows with (boxes x kept boxes), not boxes squared.
    """
    _check_boxes(dets, "dets")
    if scores.dim() != 1 or len(scores) != len(dets):
        raise ValueError(f"scores must have shape ({len(dets)},), got {tuple(scores.shape)}")
    if scores.device != dets.device:
        raise ValueError(f"dets is on {dets.device} but scores on {scores.device}")
    if len(dets) == 0:
        return torch.empty(0, dtype=torch.long, device=dets.device)
    order = scores.sort(0, descending=True).indices
    boxes = dets[order].to(_computing_dtype(dets.dtype))
    kept = torch.empty(0, dtype=torch.long, device=dets.device)
    for s in range(0, len(boxes), _NMS_BLOCK):
        block = torch.arange(s, min(s + _NMS_BLOCK, len(boxes)), device=dets.device)
        if len(kept):
            iou = _iou_matrix(boxes[kept], boxes[block], iou_threshold)
            block = block[~_suppresses(iou, iou_threshold).any(0)]
        iou = _iou_matrix(boxes[block], boxes[block], iou_threshold)
        alive = _greedy_within(_suppresses(iou, iou_threshold).triu(1).cpu().numpy())
        kept = torch.cat([kept, block[torch.from_numpy(alive).to(block.device)]])
    return order[kept]
