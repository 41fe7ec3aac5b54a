#!/usr/bin/env python
"""Evaluation speed: seg_d2 vs the reference tools on one synthetic workload, printed in one run.

  PQ offline (PNG folders): seg_d2 pq_compute vs panopticapi pq_compute (same worker count) vs hotcoco
  PQ during training (model outputs): PanopticQualityEvaluator (first evaluation, and repeated with the
    ground truth cached) vs Detectron2's COCOPanopticEvaluator
  COCO AP from JSON files (mask AP of RLE results without and with boxes, box AP): seg_d2 evaluate_coco
    (its input checks included) vs each engine alone reading the files (pycocotools, faster-coco-eval,
    hotcoco, ultrafast), A/B alternated; ratios to pycocotools and to the fastest engine alone
  PNG decoding (what bounds seg_d2's own PQ engine): its reader vs OpenCV's, per PNG, serial and in
    --workers threads, and inflating alone (zlib vs libdeflate)

Workloads: --images at 256x256 and --large-images at 640x480. Every timing is the best of --repeat runs.

  python bench/bench_evaluation.py [--images 200] [--large-images 100] [--workers N] [--repeat 3]
      [--shapes discs] # segments as discs (few repeated rows) instead of rectangles
      [--model-ms T]   # PQ during training: also sleep T ms per batch of 4 before process(), as the model
                       # would take; rows then give the time beyond that model time (what evaluation adds)
"""
import argparse
import contextlib
import io
import json
import os
import tempfile
import time
import uuid
import zlib

import deflate
import numpy as np
from PIL import Image

import seg_d2  # noqa: F401
import torch
from detectron2.data import MetadataCatalog
from detectron2.evaluation import COCOPanopticEvaluator
from pycocotools import mask as mask_util
from seg_d2.evaluation import PanopticQualityEvaluator, pq_compute, run_cocoeval
from seg_d2.evaluation.panoptic_evaluator import GT_CACHE
from seg_d2.evaluation.panoptic_png import _chunks as _png_chunks
from seg_d2.evaluation.panoptic_png import _decode_opencv, read_panoptic_png

NUM_CATS, NUM_THINGS = 20, 12


REPEAT = 3
MODEL_MS = 0.0
SHAPES = "rectangles"


def _timed(fn, before=None):
    """Best wall time of REPEAT runs of ``fn`` (``before`` runs untimed ahead of each) and its last output."""
    best = float("inf")
    for _ in range(REPEAT):
        if before:
            before()
        t = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def _label_map(rng, h, w, n):
    """n shapes painted over each other: segments of many sizes, some tiny, ~20 per image. Rectangles
    repeat most rows (which seg_d2's PNG reader skips); discs, like real objects, change most rows."""
    m = np.zeros((h, w), np.int64)
    yy, xx = np.ogrid[:h, :w]
    for k in range(1, n + 1):
        y, x = rng.integers(0, h), rng.integers(0, w)
        if SHAPES == "discs":
            m[(yy - y) ** 2 + (xx - x) ** 2 < rng.integers(2, h // 3) ** 2] = k
        else:
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


def _coco_classes(engine):
    """(COCO, COCOeval) of an engine; ImportError when it is not installed."""
    if engine == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    elif engine == "faster-coco-eval":
        from faster_coco_eval import COCO
        from faster_coco_eval import COCOeval_faster as COCOeval
    elif engine == "hotcoco":
        from hotcoco import COCO, COCOeval
    else:
        from ultrafast_pycocotools import COCO, COCOeval
    return COCO, COCOeval


def _engine_from_files(engine, gt_path, results_path, iou_type):
    """The engine alone, as its users run it: both files read by the engine's own COCO and loadRes."""
    coco_cls, cocoeval = _coco_classes(engine)

    def run():
        coco = coco_cls(gt_path)
        ev = cocoeval(coco, coco.loadRes(results_path), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        return np.asarray(ev.stats)

    return run


def _row(name, seconds, base):
    print(f"  {name:<60s} {seconds:8.3f} s   {base / seconds:6.1f}x")


def _idat_stream(path):
    with open(path, "rb") as f:
        data = f.read()
    return b"".join(payload for kind, payload in _png_chunks(data, path) if kind == b"IDAT")


def bench_png_decode(paths, workers):
    """ms per PNG: seg_d2's reader vs OpenCV's (both to ids), and inflating alone (zlib vs libdeflate)."""
    from concurrent.futures import ThreadPoolExecutor

    def opencv_ids(path):
        with open(path, "rb") as f:
            return _decode_opencv(f.read(), path)

    for p in paths:  # same ids, or the timing means nothing
        assert np.array_equal(read_panoptic_png(p), opencv_ids(p))
    streams = [_idat_stream(p) for p in paths]
    sizes = [len(zlib.decompress(s)) for s in streams]
    jobs = {
        "seg_d2 read_panoptic_png (libdeflate + C unfilter)": (read_panoptic_png, paths),
        "OpenCV imdecode + cvtColor to ids (libpng, zlib)": (opencv_ids, paths),
        "  inflating alone: zlib.decompress": (zlib.decompress, streams),
        "  inflating alone: deflate.zlib_decompress (libdeflate)": (
            lambda job: deflate.zlib_decompress(*job), list(zip(streams, sizes))),
    }
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for label, (fn, items) in jobs.items():
            serial, _ = _timed(lambda fn=fn, items=items: [fn(x) for x in items])
            threaded, _ = _timed(lambda fn=fn, items=items: list(pool.map(fn, items)))
            print(f"  {label:<60s} {1e3 * serial / len(paths):6.3f} ms/PNG serial, "
                  f"{1e3 * threaded / len(paths):6.3f} ms/PNG in {workers} threads")


def bench_pq(n_images, h, w, workers, rng):
    from hotcoco import panoptic as hc_panoptic
    from panopticapi.evaluation import pq_compute as papi_pq_compute

    with tempfile.TemporaryDirectory() as root:
        gt, outputs = make_panoptic(root, n_images, h, w, rng)
        gj, pj = os.path.join(root, "gt.json"), os.path.join(root, "pred.json")
        print(f"PQ offline, {n_images} images {w}x{h}, ~20 segments, {workers} workers "
              "(panopticapi always uses os.cpu_count())")
        t_ref, ref = _timed(lambda: papi_pq_compute(gj, pj))
        t_own, own = _timed(lambda: pq_compute(gj, pj, num_workers=workers, engine="seg_d2"))
        t_auto, auto = _timed(lambda: pq_compute(gj, pj, num_workers=workers))
        t_hc, _ = _timed(lambda: hc_panoptic.pq_compute(gj, pj))
        for ours in (own, auto):
            assert abs(ours["All"]["pq"] - ref["All"]["pq"]) < 1e-9
        _row("panopticapi pq_compute", t_ref, t_ref)
        _row("hotcoco panoptic.pq_compute", t_hc, t_ref)
        _row("seg_d2 pq_compute (engine=seg_d2: own decoding + scoring, threads)", t_own, t_ref)
        _row("seg_d2 pq_compute (auto: input checks + hotcoco)", t_auto, t_ref)
        print(f"  seg_d2 auto vs hotcoco: {t_hc / t_auto:.2f}x")
        print(f"PNG decoding, {n_images} ground-truth + {n_images} prediction PNGs {w}x{h} (RGB 8-bit, written by PIL):")
        bench_png_decode([os.path.join(root, d, f"{i}.png") for d in ("gt", "pred") for i in range(n_images)], workers)

        name = f"bench_{uuid.uuid4().hex[:6]}"
        things = [c["id"] for c in gt["categories"] if c["isthing"]]
        MetadataCatalog.get(name).set(
            panoptic_json=gj, panoptic_root=os.path.join(root, "gt"),
            thing_dataset_id_to_contiguous_id={c: c for c in things},
            stuff_dataset_id_to_contiguous_id={c["id"]: c["id"] for c in gt["categories"] if not c["isthing"]},
        )
        inputs = [{"image_id": i, "file_name": f"{i}.jpg"} for i in range(n_images)]
        print("PQ during training (process() on every batch of 4 + evaluate()), a new evaluator per run:")

        def run(make, model_s=0.0):
            ev = make()
            ev.reset()
            for k in range(0, len(inputs), 4):
                if model_s:
                    time.sleep(model_s)  # the model's forward pass on this batch (GPU; CPU idle)
                batch = [{"panoptic_seg": (seg, [dict(s) for s in segs])} for seg, segs in outputs[k : k + 4]]
                ev.process(inputs[k : k + 4], batch)
            return ev.evaluate()

        evaluators = (  # label, constructor, what to do before each timed run
            ("detectron2 COCOPanopticEvaluator", lambda: COCOPanopticEvaluator(name), None),
            ("seg_d2 PanopticQualityEvaluator, first evaluation", lambda: PanopticQualityEvaluator(name),
             GT_CACHE.clear),
            ("seg_d2 PanopticQualityEvaluator, repeated (cached GT)", lambda: PanopticQualityEvaluator(name), None),
        )
        times = {}
        for label, make, before in evaluators:
            times[label], res = _timed(lambda make=make: run(make), before)
            assert abs(res["panoptic_seg"]["PQ"] - 100 * ref["All"]["pq"]) < 1e-7
        base = times["detectron2 COCOPanopticEvaluator"]
        for label, t in times.items():
            _row(label, t, base)
        if MODEL_MS:
            model_s = MODEL_MS / 1000
            total_model = model_s * len(range(0, len(inputs), 4))
            print(f"PQ during training with {MODEL_MS:g} ms of simulated model time per batch of 4 "
                  f"({total_model:.2f} s in all); seconds beyond the model time:")
            extra = {}
            for label, make, before in evaluators:
                t, res = _timed(lambda make=make: run(make, model_s), before)
                assert abs(res["panoptic_seg"]["PQ"] - 100 * ref["All"]["pq"]) < 1e-7
                extra[label] = max(t - total_model, 1e-6)
            for label, t in extra.items():
                _row(label, t, extra["detectron2 COCOPanopticEvaluator"])


def _round_robin(runs):
    """{label: (best wall s, best CPU s, last output)}: REPEAT rounds, each running every tool once in turn
    (A/B alternated, so that a load change hits all alike); CPU is the process's, every thread included."""
    best = {label: [float("inf"), float("inf"), None] for label in runs}
    for _ in range(REPEAT):
        for label, fn in runs.items():
            wall, cpu = time.perf_counter(), time.process_time()
            with contextlib.redirect_stdout(io.StringIO()):
                out = fn()
            entry = best[label]
            entry[0], entry[1] = min(entry[0], time.perf_counter() - wall), min(entry[1], time.process_time() - cpu)
            entry[2] = out
    return {label: tuple(v) for label, v in best.items()}


def _results_files(folder, gt, dets):
    """The workload as files: ground truth; RLE detections without boxes, with boxes (as Detectron2 writes
    them), and boxes alone."""
    boxes = mask_util.toBbox([d["segmentation"] for d in dets]).tolist()
    variants = {"gt": gt, "segm": dets, "segm+box": [{**d, "bbox": b} for d, b in zip(dets, boxes)],
                "bbox": [{k: v for k, v in d.items() if k != "segmentation"} | {"bbox": b} for d, b in zip(dets, boxes)]}
    paths = {}
    for name, obj in variants.items():
        paths[name] = os.path.join(folder, f"{name}.json")
        with open(paths[name], "w") as f:
            json.dump(obj, f)
    return paths


def bench_mask_ap(n_images, h, w, rng):
    """COCO AP from JSON files: each engine alone vs seg_d2's evaluate_coco (input checks included)."""
    gt, dets = make_instances(n_images, h, w, rng)
    with tempfile.TemporaryDirectory() as folder:
        paths = _results_files(folder, gt, dets)
        size = os.path.getsize(paths["segm+box"]) / 2**20
        print(f"COCO AP from files, {n_images} images {w}x{h}, {len(gt['annotations'])} GT, {len(dets)} detections "
              f"({size:.1f} MiB with boxes); best of {REPEAT}, wall (CPU) seconds")
        for kind, iou_type in (("segm", "segm"), ("segm+box", "segm"), ("bbox", "bbox")):
            _bench_files(paths["gt"], paths[kind], f"{iou_type} AP, results {kind}", iou_type)


def _bench_files(gt_path, results_path, title, iou_type):
    runs = {}
    for engine in ("pycocotools", "faster-coco-eval", "hotcoco", "ultrafast"):
        try:
            _coco_classes(engine)
        except ImportError:
            print(f"  {engine}: not installed")
            continue
        runs[engine] = _engine_from_files(engine, gt_path, results_path, iou_type)
    for engine in ("auto", "ultrafast"):
        runs[f"seg_d2 evaluate_coco engine={engine}"] = (
            lambda e=engine: run_cocoeval(gt_path, results_path, iou_type, engine=e).stats)
    timed = _round_robin(runs)
    engines_alone = [label for label in timed if not label.startswith("seg_d2")]
    fastest, fastest_cpu = (min(engines_alone, key=lambda label: timed[label][k]) for k in (0, 1))
    base, reference = timed["pycocotools"][0], timed["pycocotools"][2]
    print(f"  {title}: ratios to pycocotools and to the fastest engine alone ({fastest}; by CPU time, "
          f"which a loaded machine disturbs less: {fastest_cpu})")
    for label, (wall, cpu, stats) in timed.items():
        diff = float(np.abs(np.asarray(stats) - reference).max())
        print(f"  {label:<40s} {wall:7.3f} s ({cpu:6.3f}) {base / wall:6.1f}x {timed[fastest][0] / wall:5.2f}x"
              f" (CPU {timed[fastest_cpu][1] / cpu:4.2f}x)"
              f"{'' if diff <= 1e-12 else f'   differs from pycocotools by {diff:.2g}'}")


def main():
    global REPEAT, MODEL_MS, SHAPES
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=200, help="images in the 256x256 workloads")
    p.add_argument("--large-images", type=int, default=100, help="images in the 640x480 workloads")
    p.add_argument("--workers", type=int, default=0, help="PQ threads (default: os.cpu_count(), as panopticapi)")
    p.add_argument("--repeat", type=int, default=REPEAT)
    p.add_argument("--only", choices=["pq", "ap"])
    p.add_argument("--model-ms", type=float, default=0.0,
                   help="simulated model time per batch of 4 for the PQ-during-training rows (0: none)")
    p.add_argument("--shapes", choices=["rectangles", "discs"], default=SHAPES, help="segment shapes")
    args = p.parse_args()
    REPEAT, MODEL_MS, SHAPES = args.repeat, args.model_ms, args.shapes
    workers = args.workers or os.cpu_count()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for n_images, h, w in ((args.images, 256, 256), (args.large_images, 480, 640)):
        rng = np.random.default_rng(0)
        if n_images and args.only != "ap":
            bench_pq(n_images, h, w, workers, rng)
        if n_images and args.only != "pq":
            bench_mask_ap(n_images, h, w, rng)
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
