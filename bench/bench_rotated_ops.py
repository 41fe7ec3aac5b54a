"""Time seg_d2's rotated-box IoU (N x N boxes) against shapely's vectorised polygon intersection, and
rotated NMS on detector-like boxes. Usage: python bench/bench_rotated_ops.py [--n 1000] [--threads 1]"""
import argparse
import math
import time

import numpy as np
import shapely
import torch

import seg_d2  # noqa: F401
from seg_d2.compat.c_ops import box_iou_rotated, nms_rotated


def random_boxes(n, seed, image=1000.0):
    """Boxes of 16-256 px at any angle in an image: a realistic share of pairs overlap."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.rand(n, 2, generator=g) * image
    sizes = 2 ** (4 + 4 * torch.rand(n, 2, generator=g))
    angles = torch.rand(n, 1, generator=g) * 360 - 180
    return torch.cat([centers, sizes, angles], 1)


def proposals(n, seed, objects=100):
    """Jittered copies of a few boxes, as RPN proposals crowd around objects."""
    g = torch.Generator().manual_seed(seed)
    boxes = random_boxes(objects, seed)[torch.randint(0, objects, (n,), generator=g)]
    jitter = 1 + (torch.rand(n, 2, generator=g) * 2 - 1) * 0.2
    centers = boxes[:, :2] + (torch.rand(n, 2, generator=g) - 0.5) * boxes[:, 2:4] * 0.4
    angles = boxes[:, 4:] + (torch.rand(n, 1, generator=g) * 2 - 1) * 15
    return torch.cat([centers, boxes[:, 2:4] * jitter, angles], 1)


def shapely_polygons(boxes):
    xc, yc, w, h, a = boxes.double().unbind(1)
    t = torch.deg2rad(a)
    dx = torch.tensor([-0.5, 0.5, 0.5, -0.5], dtype=torch.float64)[None] * w[:, None]
    dy = torch.tensor([-0.5, -0.5, 0.5, 0.5], dtype=torch.float64)[None] * h[:, None]
    x = t.sin()[:, None] * dy + t.cos()[:, None] * dx + xc[:, None]
    y = t.cos()[:, None] * dy - t.sin()[:, None] * dx + yc[:, None]
    return shapely.polygons(torch.stack([x, y], -1).numpy())


def shapely_iou(boxes1, boxes2):
    p1, p2 = shapely_polygons(boxes1)[:, None], shapely_polygons(boxes2)[None, :]
    inter = shapely.area(shapely.intersection(p1, p2))
    return inter / (shapely.area(p1) + shapely.area(p2) - inter)


def timed(fn, repeat):
    best, out = math.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    boxes1, boxes2 = random_boxes(args.n, 0), random_boxes(args.n, 1)

    ours, iou = timed(lambda: box_iou_rotated(boxes1, boxes2), 3)
    ref_time, ref = timed(lambda: shapely_iou(boxes1, boxes2), 1)
    print(f"box_iou_rotated {args.n}x{args.n} ({(ref > 0).mean():.1%} pairs overlap), {args.threads} thread(s)")
    print(f"  seg_d2: {ours * 1e3:.1f} ms   shapely: {ref_time * 1e3:.1f} ms   speed-up: {ref_time / ours:.1f}x")
    print(f"  max |difference|: {np.abs(iou.numpy() - ref).max():.2e}")

    for name, boxes in (("proposal-like", proposals(args.n * 2, 2)), ("random", random_boxes(args.n * 2, 2))):
        scores = torch.rand(len(boxes), generator=torch.Generator().manual_seed(3))
        nms_time, keep = timed(lambda: nms_rotated(boxes, scores, 0.7), 3)
        print(f"nms_rotated on {len(boxes)} {name} boxes: {nms_time * 1e3:.1f} ms, kept {len(keep)}")


if __name__ == "__main__":
    main()
