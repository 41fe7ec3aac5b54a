#!/usr/bin/env python
"""Evaluation speed: seg_d2 vs the reference tools on one synthetic workload, printed in one run.

  PQ offline (PNG folders): seg_d2 pq_compute vs panopticapi pq_compute (same worker count) vs hotcoco
  PQ during training (model outputs): PanopticQualityEvaluator vs Detectron2's COCOPanopticEvaluator
  Mask AP (RLE results): seg_d2 evaluate_coco vs pycocotools, faster-coco-eval, hotcoco, ultrafast

  python bench/bench_evaluation.py [--images 500] [--height 480 --width 640] [--workers N]
"""
import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
import uuid

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import seg_d2  # noqa: E402,F401
import torch  # noqa: E402
from detectron2.data import MetadataCatalog  # noqa: E402
from detectron2.evaluation import COCOPanopticEvaluator  # noqa: E402
from pycocotools import mask as mask_util  # noqa: E402
from seg_d2.evaluation import PanopticQualityEvaluator, pq_compute, run_cocoeval  # noqa: E402

NUM_CATS, NUM_THINGS = 20, 12


def _timed(fn):
    t = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        out = fn()
    return time.perf_counter() - t, out


def _label_map(rng, h, w, n):
    """n rectangles painted over each other: segments of many sizes, some tiny, ~20 per image."""
    m = np.zeros((h, w), np.int64)
    for k in range(1, n + 1):
        y, x = rng.integers(0, h), rng.integers(0, w)
        m[y : y + rng.integers(4, h // 2), x : x + rng.integers(4, w // 2)] = k
    return m


def _id2rgb(ids):
    return np.stack([ids & 255, (ids >> 8) & 255, (ids >> 16) & 255], -1).astype(np.uint8)


def make_panoptic(root, n_images, h, w, rng):
    cats = [{"id": c + 1, "name": f"c{c + 1}", "isthing": int(c < NUM_THINGS)} for c in range(NUM_CATS)]
    gt = {"images": [], "annotations": [], "categories": cats}
    pred = {"annotations": []}
    outputs = []
    for d in ("gt", "pred"):
        os.makedirs(os.path.join(root, d))
    for i in range(n_images):
        g = _label_map(rng, h, w, 20)
        p = np.roll(g, (rng.integers(-3, 4), rng.integers(-3, 4)), (0, 1))  # near miss of every segment
        p[_label_map(rng, h, w, 4) > 0] = 0
        cat_of = rng.integers(1, NUM_CATS + 1, 21)
        for m, ann_list, d in ((g, gt["annotations"], "gt"), (p, pred["annotations"], "pred")):
            ids = np.where(m > 0, m * 1000 + 7, 0)  # large ids as real PNGs have
            Image.fromarray(_id2rgb(ids)).save(os.path.join(root, d, f"{i}.png"))
            segs = [{"id": int(k * 1000 + 7), "category_id": int(cat_of[k]), "iscrowd": int(d == "gt" and k == 1),
                     "area": int((m == k).sum())} for k in np.unique(m) if k]
            ann_list.append({"image_id": i, "file_name": f"{i}.png", "segments_info": segs})
            if d == "pred":
                outputs.append((torch.from_numpy(ids.astype(np.int32)), segs))
        gt["images"].append({"id": i, "width": w, "height": h, "file_name": f"{i}.jpg"})
    for name, obj in (("gt.json", gt), ("pred.json", pred)):
        with open(os.path.join(root, name), "w") as f:
            json.dump(obj, f)
    return gt, outputs


def make_instances(n_images, h, w, rng, gt_per_image=10, dets_per_image=100):
    cats = [{"id": c + 1, "name": f"c{c + 1}"} for c in range(NUM_CATS)]
    images, anns, dets = [], [], []

    def poly(x, y, bw, bh):
        return [[x, y, x + bw, y + rng.uniform(0, bh / 3), x + bw, y + bh, x + rng.uniform(0, bw / 3), y + bh]]

    for i in range(n_images):
        images.append({"id": i, "height": h, "width": w})
        boxes = []
        for _ in range(gt_per_image):
            bw, bh = rng.uniform(8, w / 2), rng.uniform(8, h / 2)
            x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            rle = mask_util.merge(mask_util.frPyObjects(poly(x, y, bw, bh), h, w))
            rle["counts"] = rle["counts"].decode()
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(rng.integers(1, NUM_CATS + 1)),
                         "segmentation": rle, "area": float(mask_util.area(rle)), "bbox": [x, y, bw, bh],
                         "iscrowd": int(rng.random() < 0.05)})
            boxes.append((x, y, bw, bh, anns[-1]["category_id"]))
        for k in range(dets_per_image):
            x, y, bw, bh, c = boxes[k % gt_per_image]
            j = rng.normal(0, 0.1, 4) * (bw + bh) / 2
            bw, bh = max(2, bw + j[2]), max(2, bh + j[3])
            rle = mask_util.merge(mask_util.frPyObjects(poly(x + j[0], y + j[1], bw, bh), h, w))
            rle["counts"] = rle["counts"].decode()
            dets.append({"image_id": i, "category_id": int(c if rng.random() < 0.7 else rng.integers(1, NUM_CATS + 1)),
                         "score": float(rng.random()), "segmentation": rle})
    return {"images": images, "annotations": anns, "categories": cats}, dets


def _coco_engine(module, gt, dets):
    import importlib

    mod = importlib.import_module(module)
    cocoeval = mod.COCOeval if hasattr(mod, "COCOeval") else importlib.import_module(module + ".cocoeval").COCOeval
    coco_cls = mod.COCO if hasattr(mod, "COCO") else importlib.import_module(module + ".coco").COCO

    def run():
        if module == "hotcoco":
            coco = coco_cls(gt)
        else:
            coco = coco_cls()
            coco.dataset = gt
            coco.createIndex()
        ev = cocoeval(coco, coco.loadRes([dict(d) for d in dets]), "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        return np.asarray(ev.stats)

    return run


def _row(name, seconds, base):
    print(f"  {name:<44s} {seconds:8.2f} s   {base / seconds:6.1f}x")


def bench_pq(args, rng):
    from hotcoco import panoptic as hc_panoptic
    from panopticapi.evaluation import pq_compute as papi_pq_compute

    with tempfile.TemporaryDirectory() as root:
        gt, outputs = make_panoptic(root, args.images, args.height, args.width, rng)
        gj, pj = os.path.join(root, "gt.json"), os.path.join(root, "pred.json")
        workers = args.workers or os.cpu_count()
        print(f"PQ offline, {args.images} images {args.width}x{args.height}, ~20 segments, {workers} workers "
              "(panopticapi always uses os.cpu_count())")
        t_ref, ref = _timed(lambda: papi_pq_compute(gj, pj))
        t_ours, ours = _timed(lambda: pq_compute(gj, pj, num_workers=workers))
        t_hc, _ = _timed(lambda: hc_panoptic.pq_compute(gj, pj))
        assert abs(ours["All"]["pq"] - ref["All"]["pq"]) < 1e-9
        _row("panopticapi pq_compute", t_ref, t_ref)
        _row("hotcoco panoptic.pq_compute", t_hc, t_ref)
        _row("seg_d2 pq_compute", t_ours, t_ref)
        print(f"  seg_d2 vs hotcoco: {t_hc / t_ours:.2f}x")

        name = f"bench_{uuid.uuid4().hex[:6]}"
        things = [c["id"] for c in gt["categories"] if c["isthing"]]
        MetadataCatalog.get(name).set(
            panoptic_json=gj, panoptic_root=os.path.join(root, "gt"),
            thing_dataset_id_to_contiguous_id={c: c for c in things},
            stuff_dataset_id_to_contiguous_id={c["id"]: c["id"] for c in gt["categories"] if not c["isthing"]},
        )
        inputs = [{"image_id": i, "file_name": f"{i}.jpg"} for i in range(args.images)]
        outs = [{"panoptic_seg": (seg, [dict(s) for s in segs])} for seg, segs in outputs]
        print("PQ during training (process() on every batch + evaluate()):")
        times = {}
        for label, ev in (("detectron2 COCOPanopticEvaluator", COCOPanopticEvaluator(name)),
                          ("seg_d2 PanopticQualityEvaluator", PanopticQualityEvaluator(name))):
            fresh = [{"panoptic_seg": (o["panoptic_seg"][0], [dict(s) for s in o["panoptic_seg"][1]])} for o in outs]

            def run(ev=ev, fresh=fresh):
                ev.reset()
                for k in range(0, len(inputs), 4):
                    ev.process(inputs[k : k + 4], fresh[k : k + 4])
                return ev.evaluate()

            times[label], res = _timed(run)
            assert abs(res["panoptic_seg"]["PQ"] - 100 * ref["All"]["pq"]) < 1e-7
        base = times["detectron2 COCOPanopticEvaluator"]
        for label, t in times.items():
            _row(label, t, base)


def bench_mask_ap(args, rng):
    gt, dets = make_instances(args.images, args.height, args.width, rng)
    print(f"Mask AP, {args.images} images, {len(gt['annotations'])} GT, {len(dets)} RLE detections")
    engines = [("pycocotools", "pycocotools"), ("faster-coco-eval", "faster_coco_eval"),
               ("hotcoco", "hotcoco"), ("ultrafast-pycocotools", "ultrafast_pycocotools")]
    times, stats = {}, {}
    for label, module in engines:
        try:
            times[label], stats[label] = _timed(_coco_engine(module, gt, dets))
        except ImportError:
            continue
    times["seg_d2 evaluate_coco (auto, with input checks)"], ours = _timed(lambda: run_cocoeval(gt, dets, "segm"))
    assert np.allclose(ours.stats, stats["pycocotools"], atol=1e-9, rtol=0)
    base = times["pycocotools"]
    for label, t in times.items():
        _row(label, t, base)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=500)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--workers", type=int, default=0, help="PQ processes (default: os.cpu_count(), as panopticapi)")
    p.add_argument("--only", choices=["pq", "ap"])
    args = p.parse_args()
    rng = np.random.default_rng(0)
    if args.only != "ap":
        bench_pq(args, rng)
    if args.only != "pq":
        bench_mask_ap(args, rng)


if __name__ == "__main__":
    main()
