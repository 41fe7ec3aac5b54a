"""Peak memory and time of tools/predict.py on a 10000x10000 image (sliding windows), for an instance, a
semantic and a panoptic model; whole-image vs tiled inference side by side on a smaller image; and, with
trained weights, tiled vs whole-image mask AP and agreement on a mosaic whose ground truth is known.

    python bench/bench_large_image.py                        # random weights, all three families
    python bench/bench_large_image.py --size 4000 --families instance --weights instance=out/model_final.pth
    python bench/bench_large_image.py --size 0 --compare-size 0 --agreement-size 1024 \
        --families panoptic --weights panoptic=output/panoptic_fpn_R18_demo/model_final.pth

The image is a mosaic of the built-in validation scenes (objects of 20-60 px). Each prediction runs as its
own ``tools/predict.py`` process; its peak RSS is the kernel's (``wait4``'s ru_maxrss). Times depend on the
machine and its load: the script prints its single-thread 1024x1024 float32 matmul GFLOPS beside them, and
the whole-vs-tiled rows alternate A/B/A/B so that their ratio holds under load. Models run at one thread
with tiles of ``--tile`` pixels fed at their own resolution (INPUT.MIN_SIZE_TEST = --tile). With random
weights and the default --score-thresh 0.05 the detectors return their maximum of 100 instances per tile:
the worst case for memory.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import seg_d2  # noqa: F401  (before detectron2)

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_util

from seg_d2.data.builtin import dataset_paths, ensure_builtin_data

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
CONFIGS = {
    "instance": "configs/builtin/mask_rcnn_R18_shapes.yaml",
    "semantic": "configs/builtin/semantic_unet.yaml",
    "panoptic": "configs/builtin/panoptic_fpn_R18_demo.yaml",
}


def matmul_gflops():
    torch.set_num_threads(1)
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b
    start, runs = time.perf_counter(), 20
    for _ in range(runs):
        a @ b
    return 2 * 1024 ** 3 * runs / (time.perf_counter() - start) / 1e9


def mosaic(size, path, truth_json=None):
    """A size x size PNG tiled with the built-in validation scenes; with ``truth_json`` (size a multiple of
    the scenes' side) also its COCO instances ground truth: the scenes' annotations moved into place."""
    paths = dataset_paths(ensure_builtin_data(), "val")
    names = sorted(os.listdir(paths["image_root"]))
    scenes = [np.asarray(Image.open(os.path.join(paths["image_root"], n)).convert("RGB")) for n in names]
    side = scenes[0].shape[0]
    count = -(-size // side)
    index = lambda r, c: (r * count + c) % len(scenes)  # noqa: E731
    rows = [np.concatenate([scenes[index(r, c)] for c in range(count)], axis=1)[:, :size] for r in range(count)]
    Image.fromarray(np.concatenate(rows, axis=0)[:size]).save(path, compress_level=1)
    if truth_json is None:
        return
    assert size % side == 0, "the ground truth needs whole scenes"
    with open(paths["json_file"]) as f:
        coco = json.load(f)
    by_name = {image["file_name"]: image["id"] for image in coco["images"]}
    annotations = []
    for r in range(count):
        for c in range(count):
            scene_id = by_name[names[index(r, c)]]
            for ann in (a for a in coco["annotations"] if a["image_id"] == scene_id):
                dx, dy = c * side, r * side
                polygons = [[v + (dx if k % 2 == 0 else dy) for k, v in enumerate(p)] for p in ann["segmentation"]]
                x, y, w, h = ann["bbox"]
                annotations.append(dict(ann, id=len(annotations) + 1, image_id=1, segmentation=polygons,
                                        bbox=[x + dx, y + dy, w, h]))
    truth = {"images": [{"id": 1, "file_name": os.path.basename(path), "height": size, "width": size}],
             "annotations": annotations, "categories": coco["categories"]}
    with open(truth_json, "w") as f:
        json.dump(truth, f)


def predict(family, image, output, tile, weights, score_thresh, extra=(), more_opts=()):
    """Run tools/predict.py; (peak RSS in GiB, wall seconds, its printed lines)."""
    opts = ["MODEL.WEIGHTS", weights.get(family, ""), "INPUT.MIN_SIZE_TEST", str(tile), "INPUT.MAX_SIZE_TEST",
            str(tile), *more_opts]
    command = [sys.executable, os.path.join(ROOT, "tools", "predict.py"), "--config-file",
               os.path.join(ROOT, CONFIGS[family]), "--input", image, "--output", output, "--tile", str(tile),
               "--score-thresh", str(score_thresh), *extra, "--opts", *opts]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    out = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"predict.py failed for {family}:\n{out[-3000:]}")
    return usage.ru_maxrss / 2 ** 20, seconds, out


def _count(output, family):
    if family == "semantic":
        return "-"
    with open(os.path.join(output, "instances_results.json")) as f:
        return str(len(json.load(f)))


def large_image_rows(args, work):
    image = os.path.join(work, f"mosaic_{args.size}.png")
    mosaic(args.size, image)
    megapixels = args.size ** 2 / 1e6
    print(f"| family | image | tiles of | peak RSS | s per MP | instances |")
    print("|---|---|---:|---:|---:|---:|")
    for family in args.families:
        output = os.path.join(work, f"large_{family}")
        rss, seconds, _ = predict(family, image, output, args.tile, args.weights, args.score_thresh)
        print(f"| {family} | {args.size}x{args.size} | {args.tile} | {rss:.2f} GiB | {seconds / megapixels:.2f} | "
              f"{_count(output, family)} |", flush=True)


def whole_vs_tiled_rows(args, work):
    """Whole-image vs tiled on one image, alternated A/B/A/B: ratios of peak RSS and wall time."""
    image = os.path.join(work, f"mosaic_{args.compare_size}.png")
    mosaic(args.compare_size, image)
    print(f"\nwhole image vs {args.tile}-px tiles on {args.compare_size}x{args.compare_size} "
          f"(INPUT.MIN_SIZE_TEST = image side for the whole image), A/B/A/B:")
    print("| family | whole RSS | tiled RSS | tiled/whole time |")
    print("|---|---:|---:|---:|")
    for family in args.families:
        runs = {"whole": [], "tiled": []}
        for _ in range(2):
            for mode in ("whole", "tiled"):
                tile = args.compare_size if mode == "whole" else args.tile
                extra = ["--tile", "0"] if mode == "whole" else []
                runs[mode].append(predict(family, image, os.path.join(work, f"{mode}_{family}"), tile,
                                          args.weights, args.score_thresh, extra)[:2])
        rss = {m: max(r[0] for r in runs[m]) for m in runs}
        ratio = sum(r[1] for r in runs["tiled"]) / sum(r[1] for r in runs["whole"])
        print(f"| {family} | {rss['whole']:.2f} GiB | {rss['tiled']:.2f} GiB | {ratio:.2f}x |", flush=True)


def _instances(results_json, min_score):
    with open(results_json) as f:
        return [r for r in json.load(f) if r["score"] >= min_score]


def _covered(a, b):
    """Share of the instances ``a`` that an instance of ``b`` of the same class covers with mask IoU >= 0.5."""
    if not a or not b:
        return float(not a)
    ious = mask_util.iou([x["segmentation"] for x in a], [x["segmentation"] for x in b], [0] * len(b))
    same = np.array([[x["category_id"] == y["category_id"] for y in b] for x in a])
    return float(((ious >= 0.5) & same).any(axis=1).mean())


def _config_value(config, key):
    from seg_d2.engine.trainer import setup_cfg

    value = setup_cfg(os.path.join(ROOT, config))
    for part in key.split("."):
        value = value[part]
    return value


def agreement_rows(args, work):
    """Tiled (``--agreement-tile`` px, the model's own resolution) vs whole-image inference on a mosaic of
    the validation scenes with its ground truth: mask AP of each, and how far their instances agree."""
    from seg_d2.evaluation import evaluate_coco

    image, truth = os.path.join(work, "agreement.png"), os.path.join(work, "agreement_truth.json")
    mosaic(args.agreement_size, image, truth)
    print(f"\ntiled ({args.agreement_tile}-px tiles) vs whole-image inference, {args.agreement_size}x"
          f"{args.agreement_size} mosaic of validation scenes, {args.families} weights {args.weights}:")
    print("| family | whole mask AP | tiled mask AP | whole's (score >= 0.5) found in tiled | tiled's found in whole |")
    print("|---|---:|---:|---:|---:|")
    # the whole image may hold as many proposals and detections as all its tiles together
    tiles = (args.agreement_size / args.agreement_tile) ** 2
    caps = []
    for key in ("MODEL.RPN.PRE_NMS_TOPK_TEST", "MODEL.RPN.POST_NMS_TOPK_TEST", "TEST.DETECTIONS_PER_IMAGE"):
        caps += [key, str(int(tiles * _config_value(CONFIGS["instance"], key)))]
    for family in (f for f in args.families if f != "semantic"):
        outputs = {}
        for mode, tile, extra, opts in (("whole", args.agreement_size, ["--tile", "0"], caps),
                                        ("tiled", args.agreement_tile, [], [])):
            outputs[mode] = os.path.join(work, f"agreement_{mode}_{family}")
            predict(family, image, outputs[mode], tile, args.weights, args.score_thresh, extra, opts)
        results = {m: os.path.join(o, "instances_results.json") for m, o in outputs.items()}
        ap = {m: evaluate_coco(truth, r, "segm", "pycocotools")["AP"] for m, r in results.items()}
        # confident instances (score >= 0.5) of one found among all the other's (>= --score-thresh)
        shares = (_covered(_instances(results["whole"], 0.5), _instances(results["tiled"], 0)),
                  _covered(_instances(results["tiled"], 0.5), _instances(results["whole"], 0)))
        print(f"| {family} | {ap['whole']:.2f} | {ap['tiled']:.2f} | {100 * shares[0]:.1f}% | {100 * shares[1]:.1f}% |",
              flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=10000, help="side of the large image (default 10000; 0: skip)")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--compare-size", type=int, default=1536, help="side of the whole-vs-tiled image (0: skip)")
    parser.add_argument("--score-thresh", type=float, default=0.05,
                        help="instances kept (default 0.05, Detectron2's test threshold: the most instances)")
    parser.add_argument("--agreement-size", type=int, default=0, help="side of the tiled-vs-whole agreement mosaic "
                        "(a multiple of 128; needs trained --weights; default 0: skip)")
    parser.add_argument("--agreement-tile", type=int, default=128, help="tile side for the agreement (default 128, "
                        "the built-in models' resolution)")
    parser.add_argument("--families", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--weights", nargs="*", default=[], metavar="FAMILY=PATH", help="trained weights per family")
    args = parser.parse_args()
    args.weights = dict(w.split("=", 1) for w in args.weights)
    print(f"single-thread 1024x1024 float32 matmul: {matmul_gflops():.0f} GFLOPS; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores\n", flush=True)
    with tempfile.TemporaryDirectory() as work:
        if args.size:
            large_image_rows(args, work)
        if args.compare_size:
            whole_vs_tiled_rows(args, work)
        if args.agreement_size:
            agreement_rows(args, work)


if __name__ == "__main__":
    main()
