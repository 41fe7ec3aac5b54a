"""Rotated-box ops of seg_d2.compat.c_ops against independent references (shapely polygons, brute-force
greedy NMS, axis-aligned ROIAlign on rotated feature maps, a scalar transcription of the C++ sampling),
and end-to-end through Detectron2's own API."""
import math

import numpy as np
import pytest
import shapely
import torch
from torch import Tensor

import seg_d2  # noqa: F401  (installs the ops before detectron2 is imported)
from detectron2.layers import ROIAlign, ROIAlignRotated, batched_nms_rotated, nms_rotated
from detectron2.layers.roi_align_rotated import roi_align_rotated
from detectron2.structures import RotatedBoxes, pairwise_iou_rotated
from seg_d2.compat.c_ops import box_iou_rotated, register_torch_ops
from seg_d2.compat.c_ops import roi_align_rotated_backward, roi_align_rotated_forward
from seg_d2.compat.c_ops import nms_rotated as c_nms_rotated


# ---------------------------------------------------------------- references
def ref_polygons(boxes):
    """Shapely polygons from the vertex formula documented in detectron2.structures.RotatedBoxes."""
    polys = []
    for xc, yc, w, h, a in boxes.double().tolist():
        t = math.radians(a)
        pts = []
        for dx, dy in ((-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2)):
            pts.append((math.sin(t) * dy + math.cos(t) * dx + xc, math.cos(t) * dy - math.sin(t) * dx + yc))
        polys.append(shapely.Polygon(pts))
    return np.array(polys, dtype=object)


def ref_iou(boxes1, boxes2):
    p1, p2 = ref_polygons(boxes1)[:, None], ref_polygons(boxes2)[None, :]
    inter = shapely.area(shapely.intersection(p1, p2))
    union = shapely.area(p1) + shapely.area(p2) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def ref_nms(boxes, scores, threshold):
    iou = ref_iou(boxes, boxes)
    order = sorted(range(len(boxes)), key=lambda i: -float(scores[i]))
    keep = []
    for i in order:
        if all(np.float32(iou[i, k]) < threshold for k in keep):
            keep.append(i)
    return keep


def random_boxes(n, seed, spread=30.0, max_size=12.0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.rand(n, 2, generator=g) * spread
    sizes = torch.rand(n, 2, generator=g) * max_size + 0.2
    angles = torch.rand(n, 1, generator=g) * 360 - 180
    return torch.cat([centers, sizes, angles], 1)


def clustered_boxes(n, seed, clusters=30):
    """Jittered copies of a few boxes: IoUs spread over (0, 1], as among detector outputs."""
    g = torch.Generator().manual_seed(seed)
    base = random_boxes(clusters, seed + 1000, spread=60.0)[torch.randint(0, clusters, (n,), generator=g)]
    jitter = (torch.rand(n, 5, generator=g) * 2 - 1) * torch.tensor([0.8, 0.8, 0.0, 0.0, 8.0])
    scale = 1 + (torch.rand(n, 2, generator=g) * 2 - 1) * 0.15
    return torch.cat([base[:, :2], base[:, 2:4] * scale, base[:, 4:]], 1) + jitter


# ---------------------------------------------------------------- box_iou_rotated
def test_iou_matches_shapely_on_random_boxes():
    b1, b2 = random_boxes(50, 0), random_boxes(40, 1)
    iou = box_iou_rotated(b1, b2)
    assert iou.dtype == torch.float32 and iou.shape == (50, 40)
    ref = ref_iou(b1, b2)
    assert (ref > 0).mean() > 0.1  # the test must see many intersecting pairs
    np.testing.assert_allclose(iou.numpy(), ref, atol=2e-6)


def test_iou_angle_convention_is_counter_clockwise_on_image():
    # docstring example of RotatedBoxes: (5, 3, 4, 2, 90) covers [4, 6] x [1, 5]
    doc = torch.tensor([[5.0, 3, 4, 2, 90]])
    assert box_iou_rotated(doc, torch.tensor([[5.0, 3, 2, 4, 0]])).item() == pytest.approx(1, abs=1e-6)
    # a long box at +45 degrees points up-right (y down), so it reaches (3, -3) but not (3, 3)
    stick = torch.tensor([[0.0, 0, 10, 0.5, 45]])
    dots = torch.tensor([[3.0, -3, 0.5, 0.5, 0], [3.0, 3, 0.5, 0.5, 0]])
    iou = box_iou_rotated(stick, dots)[0]
    assert iou[0] > 0.01 and iou[1] == 0


def test_iou_special_cases():
    big = [10.0, 10, 8, 6, 30]
    cases = [
        ([3.0, 4, 5, 2, 180], [3.0, 4, 5, 2, -180], 1.0),  # +-180: same region
        ([3.0, 4, 5, 2, 90], [3.0, 4, 2, 5, 0], 1.0),
        ([3.0, 4, 5, 2, 17], [3.0, 4, 5, 2, 17 + 360], 1.0),
        ([0.0, 0, 1e-3, 2e-3, 33], [0.0, 0, 1e-3, 2e-3, 33], 1.0),  # tiny but valid
        (big, [10.0, 10, 2, 1, -70], 2 / 48),  # contained
        (big, [40.0, 10, 8, 6, 30], 0.0),  # disjoint
        ([0.0, 0, 2, 2, 0], [2.0, 0, 2, 2, 0], 0.0),  # touching along an edge
        (big, [10.0, 10, 1e-8, 1e-7, 0], 0.0),  # area < 1e-14: 0 as in the C++
        (big, [10.0, 10, 0, 5, 0], 0.0),
    ]
    b1 = torch.tensor([c[0] for c in cases])
    b2 = torch.tensor([c[1] for c in cases])
    expected = torch.tensor([c[2] for c in cases])
    torch.testing.assert_close(box_iou_rotated(b1, b2).diag(), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(box_iou_rotated(b2, b1).diag(), expected, atol=1e-6, rtol=0)


def test_iou_identical_boxes_and_empty_inputs():
    boxes = random_boxes(30, 2)
    torch.testing.assert_close(box_iou_rotated(boxes, boxes).diag(), torch.ones(30))
    assert box_iou_rotated(boxes[:0], boxes).shape == (0, 30)
    assert box_iou_rotated(boxes, boxes[:0]).shape == (30, 0)
    with pytest.raises(ValueError, match=r"\(N, 5\)"):
        box_iou_rotated(boxes[:, :4], boxes)


def test_pairwise_iou_through_detectron2_api():
    b1, b2 = random_boxes(20, 3), random_boxes(25, 4)
    got = pairwise_iou_rotated(RotatedBoxes(b1), RotatedBoxes(b2))
    np.testing.assert_allclose(got.numpy(), ref_iou(b1, b2), atol=2e-6)


# ---------------------------------------------------------------- nms_rotated
@pytest.mark.parametrize("threshold", [0.1, 0.3, 0.7])
def test_nms_matches_brute_force_greedy(threshold):
    boxes = clustered_boxes(300, 5)  # more than one 256-box block
    scores = torch.rand(300, generator=torch.Generator().manual_seed(6))
    keep = c_nms_rotated(boxes, scores, threshold)
    assert keep.dtype == torch.int64
    expected = ref_nms(boxes, scores, threshold)
    assert 30 < len(expected) < 270  # much is suppressed, not all
    assert keep.tolist() == expected
    assert nms_rotated(boxes, scores, threshold).tolist() == expected  # through detectron2.layers


def test_nms_threshold_is_inclusive_and_empty_input():
    boxes = torch.tensor([[5.0, 5, 4, 2, 30], [5.0, 5, 4, 2, 30 - 360]])
    scores = torch.tensor([0.2, 0.9])
    assert c_nms_rotated(boxes, scores, 1.0).tolist() == [1]  # IoU 1 >= 1: suppressed, as the C++
    apart = random_boxes(5, 20, spread=1000.0)
    assert c_nms_rotated(apart, torch.arange(5.0), 0.0).tolist() == [4]  # IoU 0 >= 0 too
    empty = c_nms_rotated(boxes[:0], scores[:0], 0.5)
    assert empty.dtype == torch.int64 and empty.shape == (0,)
    with pytest.raises(ValueError, match="scores"):
        c_nms_rotated(boxes, scores[:1], 0.5)


def test_batched_nms_rotated_through_detectron2_api():
    boxes = clustered_boxes(120, 7)
    scores = torch.rand(120, generator=torch.Generator().manual_seed(8))
    classes = torch.randint(0, 3, (120,), generator=torch.Generator().manual_seed(9))
    keep = batched_nms_rotated(boxes, scores, classes, 0.4)
    expected = []
    for c in range(3):
        idx = (classes == c).nonzero()[:, 0]
        expected += idx[ref_nms(boxes[idx], scores[idx], 0.4)].tolist()
    expected.sort(key=lambda i: -float(scores[i]))
    assert keep.tolist() == expected


def test_nms_rotated_torch_op_in_torchscript():
    register_torch_ops()  # idempotent: a second registration must not fail or clash
    register_torch_ops()

    @torch.jit.script
    def scripted(boxes: Tensor, scores: Tensor, threshold: float) -> Tensor:
        return torch.ops.detectron2.nms_rotated(boxes, scores, threshold)

    class Module(torch.nn.Module):  # how Detectron2's own layers get scripted (unannotated args)
        def forward(self, boxes, scores, threshold):
            return nms_rotated(boxes, scores, threshold)

    boxes = clustered_boxes(60, 10, clusters=8)
    scores = torch.rand(60, generator=torch.Generator().manual_seed(11))
    expected = ref_nms(boxes, scores, 0.5)
    assert scripted(boxes, scores, 0.5).tolist() == expected
    assert torch.jit.script(Module())(boxes, scores, torch.tensor(0.5)).tolist() == expected


# ---------------------------------------------------------------- ROIAlignRotated
def random_rois(n, seed, height, width, scale):
    g = torch.Generator().manual_seed(seed)
    centers = torch.rand(n, 2, generator=g) * torch.tensor([width, height]) / scale
    sizes = torch.rand(n, 2, generator=g) * 10 / scale + 0.5
    angles = torch.rand(n, 1, generator=g) * 360 - 180
    batch = torch.randint(0, 2, (n, 1), generator=g).double()
    return torch.cat([batch, centers, sizes, angles], 1)  # some stick out of the map


# angle 90k samples the feature map rotated k quarter turns clockwise on screen (torch.rot90 by -k);
# where the ROI center lands there, with (H, W) the map size in input-image units:
_ROT_CENTER = {
    1: lambda xc, yc, h, w: (h - yc, xc),
    2: lambda xc, yc, h, w: (w - xc, h - yc),
    3: lambda xc, yc, h, w: (yc, w - xc),
}


@pytest.mark.parametrize("quarter_turns", [0, 1, 2, 3])
@pytest.mark.parametrize("ratio", [2, 0])
def test_roi_align_rotated_quarter_turns_vs_axis_aligned_roi_align(quarter_turns, ratio):
    scale, pooled = 0.5, (4, 3)
    feature = torch.randn(2, 3, 10, 13, generator=torch.Generator().manual_seed(14))
    rois = random_rois(10, 15, 10, 13, scale).float()
    rois[:, 5] = 90.0 * quarter_turns + torch.tensor([0.0, 360.0, -360.0, 0, 0, 0, 0, 0, 0, 0])
    got = ROIAlignRotated(pooled, scale, ratio)(feature, rois)

    rotated = torch.rot90(feature, -quarter_turns, dims=(2, 3))
    b, xc, yc, w, h = rois[:, :5].unbind(1)
    if quarter_turns:
        xc, yc = _ROT_CENTER[quarter_turns](xc, yc, 10 / scale, 13 / scale)
    axis_boxes = torch.stack([b, xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2], 1)
    expected = ROIAlign(pooled, scale, ratio, aligned=True)(rotated, axis_boxes)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("ratio", [2, 0])
def test_roi_align_rotated_gradcheck(ratio):
    feature = torch.randn(2, 2, 6, 7, generator=torch.Generator().manual_seed(16), dtype=torch.float64)
    rois = random_rois(5, 17, 6, 7, scale=1.0)
    feature.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda f: roi_align_rotated(f, rois, (3, 2), 1.0, ratio), (feature,))


def test_roi_align_rotated_bad_input():
    feature = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError, match="non-negative size"):
        roi_align_rotated_forward(feature, torch.tensor([[0.0, 2, 2, -1, 1, 0]]), 1.0, 2, 2, 0)
    with pytest.raises(ValueError, match="batch indices"):
        roi_align_rotated_forward(feature, torch.tensor([[1.0, 2, 2, 1, 1, 0]]), 1.0, 2, 2, 0)
    empty = roi_align_rotated_forward(feature, torch.zeros(0, 6), 1.0, 2, 3, 0)
    assert empty.shape == (0, 1, 2, 3)


# ---------------------------------------------------------------- the compiled op's arithmetic
F32 = np.float32
_EPS = 1e-5


def _sub(a, b):
    return (a[0] - b[0], a[1] - b[1])


def _cross2(a, b):
    return a[0] * b[1] - b[0] * a[1]


def _dot2(a, b):
    return a[0] * b[0] + a[1] * b[1]


def _c_vertices(x, y, w, h, a):
    cos2, sin2 = F32(math.cos(float(a) * 0.01745329251)) * F32(0.5), F32(math.sin(float(a) * 0.01745329251)) * F32(0.5)
    p0 = (x + sin2 * h + cos2 * w, y + cos2 * h - sin2 * w)
    p1 = (x - sin2 * h + cos2 * w, y - cos2 * h - sin2 * w)
    return [p0, p1, (F32(2) * x - p0[0], F32(2) * y - p0[1]), (F32(2) * x - p1[0], F32(2) * y - p1[1])]


def _c_candidates(p1, p2):
    v1 = [_sub(p1[(i + 1) % 4], p1[i]) for i in range(4)]
    v2 = [_sub(p2[(i + 1) % 4], p2[i]) for i in range(4)]
    out = []
    for i in range(4):
        for j in range(4):
            det = _cross2(v2[j], v1[i])
            if abs(float(det)) <= 1e-14:
                continue
            v12 = _sub(p2[j], p1[i])
            t1, t2 = _cross2(v2[j], v12) / det, _cross2(v1[i], v12) / det
            if -_EPS < float(t1) < 1 + _EPS and -_EPS < float(t2) < 1 + _EPS:
                out.append((p1[i][0] + v1[i][0] * t1, p1[i][1] + v1[i][1] * t1))
    for points, box, vec in ((p1, p2, v2), (p2, p1, v1)):
        ab, da = vec[0], vec[3]
        for p in points:
            ap = _sub(p, box[0])
            u, v = float(_dot2(ap, ab)), float(-_dot2(ap, da))
            if u > -_EPS and v > -_EPS and u < float(_dot2(ab, ab)) + _EPS and v < float(_dot2(da, da)) + _EPS:
                out.append(p)
    return out


def _c_hull_area(p):
    n = len(p)
    t = 0
    for i in range(1, n):
        if p[i][1] < p[t][1] or (p[i][1] == p[t][1] and p[i][0] < p[t][0]):
            t = i
    q = [_sub(v, p[t]) for v in p]
    q[0], q[t] = q[t], q[0]

    def less(a, b):
        c = _cross2(a, b)
        return _dot2(a, a) < _dot2(b, b) if abs(float(c)) < 1e-6 else c > 0

    for i in range(2, n):  # libstdc++'s insertion sort of q[1:] (all of std::sort for <= 16 points)
        val = q[i]
        if less(val, q[1]):
            q[2 : i + 1] = q[1:i]
            q[1] = val
        else:
            j = i
            while less(val, q[j - 1]):
                q[j] = q[j - 1]
                j -= 1
            q[j] = val
    k = next((k for k in range(1, n) if float(_dot2(q[k], q[k])) > 1e-8), n)
    if k == n:
        return F32(0)
    q[1], m = q[k], 2
    for i in range(k + 1, n):
        while m > 1:
            q1, q2 = _sub(q[i], q[m - 2]), _sub(q[m - 1], q[m - 2])
            if q1[0] * q2[1] >= q2[0] * q1[1]:
                m -= 1
            else:
                break
        q[m] = q[i]
        m += 1
    area = F32(0)
    for i in range(1, m - 1):
        area += abs(_cross2(_sub(q[i], q[0]), _sub(q[i + 1], q[0])))
    return F32(float(area) / 2.0) if m > 2 else F32(0)


def c_box_iou(box1, box2):
    """Scalar transcription of Detectron2 v0.6's single_box_iou_rotated<float> (box_iou_rotated_utils.h)."""
    (x1, y1, w1, h1, a1), (x2, y2, w2, h2, a2) = (F32(v) for v in box1), (F32(v) for v in box2)
    shift_x, shift_y = float(x1 + x2) / 2.0, float(y1 + y2) / 2.0
    area1, area2 = w1 * h1, w2 * h2
    if float(area1) < 1e-14 or float(area2) < 1e-14:
        return F32(0)
    p1 = _c_vertices(F32(float(x1) - shift_x), F32(float(y1) - shift_y), w1, h1, a1)
    p2 = _c_vertices(F32(float(x2) - shift_x), F32(float(y2) - shift_y), w2, h2, a2)
    points = _c_candidates(p1, p2)
    inter = _c_hull_area(points) if len(points) > 2 else F32(0)
    return inter / (area1 + area2 - inter)


def c_iou_matrix(boxes1, boxes2):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.array([[c_box_iou(a, b) for b in boxes2.tolist()] for a in boxes1.tolist()], dtype=np.float32)


def rroi_anchors():
    """The 90 anchors Detectron2's test_rroi_heads matches its ground truth to (RotatedAnchorGenerator defaults)."""
    from detectron2.config import get_cfg
    from detectron2.layers import ShapeSpec
    from detectron2.modeling.anchor_generator import build_anchor_generator

    cfg = get_cfg()
    cfg.MODEL.ANCHOR_GENERATOR.NAME = "RotatedAnchorGenerator"
    generator = build_anchor_generator(cfg, [ShapeSpec(channels=1024, stride=16)])
    return generator([torch.zeros(1, 1024, 1, 2)])[0].tensor


RROI_GT = torch.tensor([[2.0, 2, 2, 2, 30], [4, 4, 4, 4, 0], [1.5, 5.5, 1, 3, 0], [8.5, 4, 3, 2, -50]])


def test_iou_ties_as_the_compiled_op_on_test_rroi_heads_inputs():
    """Detectron2's RPN matcher takes every anchor whose IoU equals a gt's best: exact IoUs tie where
    the compiled op's float32 arithmetic does not. Best IoUs and their anchors as the compiled v0.6
    CPU op gives them (recorded from Detectron2 v0.6's csrc built against this torch)."""
    anchors = rroi_anchors()
    iou = box_iou_rotated(RROI_GT, anchors)
    compiled_best = [
        (0.003906250931322575, [46, 48, 49, 50, 51, 53]),  # 1/256 + 2 ulp; the exact 1/256 ties 15 anchors
        (0.015625, [0, 1, 2, 3, 4, 5, 6, 7, 8, 46, 48, 49, 50, 51, 53]),
        (0.0029296875, [0, 1, 2, 3, 4, 5, 6, 7, 8, 46, 48, 49, 50, 51, 53]),
        (0.005859375931322575, [0, 1, 2, 3, 4, 5, 6, 7, 8]),  # 3/512 + 2 ulp; the exact 3/512 ties 18
    ]
    for row, (best, anchor_ids) in zip(iou, compiled_best):
        assert row.max().item() == best
        assert (row == row.max()).nonzero()[:, 0].tolist() == anchor_ids
    np.testing.assert_array_equal(iou.numpy(), c_iou_matrix(RROI_GT, anchors))


@pytest.mark.parametrize(
    "boxes",
    [
        lambda: (random_boxes(30, 21), random_boxes(25, 22)),
        lambda: (random_boxes(20, 23, spread=0.05, max_size=0.01), random_boxes(20, 24, spread=0.05, max_size=0.01)),
        lambda: (clustered_boxes(40, 25, clusters=5), clustered_boxes(30, 25, clusters=5)),  # near-identical
        lambda: (torch.cat([random_boxes(30, 26).round()[:, :4], torch.full((30, 1), 60.0)], 1),
                 torch.cat([random_boxes(30, 27).round()[:, :4], torch.full((30, 1), -30.0)], 1)),  # parallel edges
    ],
    ids=["random", "tiny", "near-identical", "parallel"],
)
def test_iou_is_bitwise_the_compiled_arithmetic(boxes):
    b1, b2 = boxes()
    expected = c_iou_matrix(b1, b2)
    assert (expected > 0).sum() > 20
    np.testing.assert_array_equal(box_iou_rotated(b1, b2).numpy(), expected)


def test_nms_orders_equal_scores_as_torch_sort_like_the_compiled_op():
    # 32 copies of one box; the C++ keeps the first of scores.sort(0, descending=True), an unstable sort
    boxes = torch.tensor([[5.0, 5, 4, 2, 30]]).repeat(32, 1)
    scores = torch.zeros(32)
    scores[::3] = 1.0
    first = scores.sort(0, descending=True).indices[0].item()
    assert c_nms_rotated(boxes, scores, 0.5).tolist() == [first]


def test_nms_compares_float32_iou_with_the_double_threshold():
    b1 = torch.tensor([[0.0, 0, 10, 10, 0]])
    b2 = torch.tensor([[7.0, 0, 10, 10, 0]])
    iou = box_iou_rotated(b1, b2).item()  # 30 / 170 in float32
    ulp = float(np.nextafter(np.float32(iou), np.float32(1))) - iou
    threshold = iou + ulp / 4  # above the IoU in double, equal to it once rounded to float32
    assert float(np.float32(threshold)) == iou
    assert c_nms_rotated(torch.cat([b1, b2]), torch.tensor([1.0, 0.5]), threshold).tolist() == [0, 1]


def _c_roi_samples(roi, scale, pooled, ratio, height, width, T):
    """Scalar transcription of ROIAlignRotated_cpu.cpp's sampling in dtype T: for each bin (ph-major),
    its samples' (weights, pixels) of the 4 corners, None off the map; and the sample count."""
    b, xc, yc, w, h, a = (T(v) for v in roi.tolist())
    s = T(np.float32(scale))  # the C++ API takes a float
    cx, cy, rw, rh = xc * s - T(0.5), yc * s - T(0.5), w * s, h * s
    theta = T(float(a) * math.pi / 180.0)
    cos, sin = T(math.cos(float(theta))), T(math.sin(float(theta)))
    bin_h, bin_w = rh / T(pooled), rw / T(pooled)
    gh = ratio if ratio > 0 else math.ceil(float(rh / T(pooled)))
    gw = ratio if ratio > 0 else math.ceil(float(rw / T(pooled)))
    bins = []
    for ph in range(pooled):
        for pw in range(pooled):
            samples = []
            for iy in range(gh):
                yy = -rh / T(2) + T(ph) * bin_h + T(iy + 0.5) * bin_h / T(gh)
                for ix in range(gw):
                    xx = -rw / T(2) + T(pw) * bin_w + T(ix + 0.5) * bin_w / T(gw)
                    y, x = yy * cos - xx * sin + cy, yy * sin + xx * cos + cx
                    if y < -1 or y > height or x < -1 or x > width:
                        samples.append(None)
                        continue
                    y, x = max(y, T(0)), max(x, T(0))
                    y0, x0 = min(int(y), height - 1), min(int(x), width - 1)
                    y = T(y0) if y0 == height - 1 else y
                    x = T(x0) if x0 == width - 1 else x
                    y1, x1 = min(y0 + 1, height - 1), min(x0 + 1, width - 1)
                    ly, lx = y - T(y0), x - T(x0)
                    hy, hx = T(1) - ly, T(1) - lx
                    samples.append(((hy * hx, hy * lx, ly * hx, ly * lx), ((y0, x0), (y0, x1), (y1, x0), (y1, x1))))
            bins.append(samples)
    return int(b), bins, gh * gw


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_roi_align_rotated_is_bitwise_the_compiled_arithmetic(dtype):
    T = np.float32 if dtype == torch.float32 else np.float64
    feature = torch.randn(2, 3, 9, 11, generator=torch.Generator().manual_seed(30), dtype=dtype)
    rois = random_rois(12, 31, 9, 11, scale=1 / 3).to(dtype)  # overlapping ROIs: the gradient's order matters
    for ratio in (0, 2):
        got = roi_align_rotated_forward(feature, rois, 1 / 3, 3, 3, ratio).numpy()
        grad = torch.randn(got.shape, generator=torch.Generator().manual_seed(32), dtype=dtype)
        got_grad = roi_align_rotated_backward(grad, rois, 1 / 3, 3, 3, 2, 3, 9, 11, ratio).numpy()
        expected_grad = np.zeros((2, 3, 9, 11), dtype=T)
        for k, roi in enumerate(rois):
            b, bins, count = _c_roi_samples(roi, 1 / 3, 3, ratio, 9, 11, T)
            image = feature[b].numpy()
            for c in range(3):
                for i, samples in enumerate(bins):
                    total, g = T(0), grad[k, c].flatten()[i].numpy()
                    for sample in samples:
                        weights, pixels = sample if sample else ((T(0),) * 4, ((0, 0),) * 4)
                        total += ((weights[0] * image[c][pixels[0]] + weights[1] * image[c][pixels[1]])
                                  + weights[2] * image[c][pixels[2]]) + weights[3] * image[c][pixels[3]]
                        for weight, pixel in zip(weights, pixels) if sample else ():
                            expected_grad[b, c][pixel] += g * weight / T(count)  # in the C++'s loop order
                    assert got[k, c].flatten()[i] == total / T(max(count, 1)), (ratio, k, c, i)
        np.testing.assert_array_equal(got_grad, expected_grad)
