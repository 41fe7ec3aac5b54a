#!/usr/bin/env python
"""Dice, mIoU and mask AP of watershed, U-Net, SegFormer-B0 and Mask R-CNN on real nuclei.

The 512x512 fluorescence image of ../shared/data/nuclei-stardist (BBBC038, 125 labelled nuclei) is cut into
four 256x256 quadrants: three train (as overlapping 128x128 crops), the fourth is the test image, scored
whole. Every trained model gets the same budget (iterations x images per iteration, seed 0, CPU); the
watershed baseline is tuned on the training quadrants only. Foreground Dice and the 2-class mIoU come
from seg_d2's semantic metrics, mask AP from seg_d2's COCO evaluation: instance models give the union of
their masks with score > 0.5 as foreground, semantic models give their connected foreground components
(scored by mean foreground probability) as instances.

    python bench/bench_nuclei.py                 # the table in docs/nuclei_benchmark.md
    python bench/bench_nuclei.py --iters 20      # a quick smoke run
"""
import argparse
import itertools
import json
import os
import sys
import tempfile
import time

import seg_d2  # noqa: F401  (first: makes Detectron2 whole and registers seg_d2)

import cv2
import numpy as np
import pycocotools.mask as mask_util
import scipy.ndimage as ndi
import tifffile
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.coco import load_sem_seg
from detectron2.evaluation.coco_evaluation import instances_to_coco_json

from seg_d2.baselines import WatershedSegmenter
from seg_d2.data import register_coco_instances_dataset
from seg_d2.engine import Trainer, setup_cfg
from seg_d2.evaluation import evaluate_coco, sem_seg_image_stats, sem_seg_metrics
from seg_d2.evaluation.sem_seg_evaluator import SemSegStats

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
DATA_DIR = os.path.join(ROOT, "..", "shared", "data", "nuclei-stardist")
CONFIG_DIR = os.path.join(ROOT, "configs", "builtin")
CLASSES = ["background", "nucleus"]
CATEGORY_ID = 1  # the nucleus category in the COCO JSONs
MIN_PART = 10  # nucleus parts cut by a crop border smaller than this (pixels) are dropped
QUADRANT = 256

# Trained models: config and overrides beyond the shared data/schedule ones.
MODELS = {
    "U-Net": ("semantic_unet.yaml", "sem_seg", ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", 2]),
    "SegFormer-B0": ("segformer_b0.yaml", "sem_seg", ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", 2]),
    "Mask R-CNN R18-FPN": ("mask_rcnn_R18_shapes.yaml", "instances", [
        "MODEL.ROI_HEADS.NUM_CLASSES", 1,
        "MODEL.ANCHOR_GENERATOR.SIZES", [[4], [8], [16], [32], [64]],
        "MODEL.RPN.POST_NMS_TOPK_TEST", 300,  # room for 200 detections on a crowded image
        "TEST.DETECTIONS_PER_IMAGE", 200,
    ]),
}


# ---------------------------------------------------------------- data
def to_uint8(image):
    """Percentile 1-99.8 stretch of a fluorescence image to uint8 (intensity only, no labels used)."""
    lo, hi = np.percentile(image, (1, 99.8))
    return (np.clip((image.astype(np.float64) - lo) / (hi - lo), 0, 1) * 255).round().astype(np.uint8)


def quadrants(array):
    """The four 256x256 quadrants, numbered 1..4 row by row (4 = bottom right)."""
    q = QUADRANT
    return {1 + 2 * r + c: array[r * q:(r + 1) * q, c * q:(c + 1) * q] for r in range(2) for c in range(2)}


def crops(array, size, stride):
    """Overlapping size x size crops, top-left corners on a stride grid that reaches the far border."""
    starts = range(0, array.shape[0] - size + 1, stride)
    return [array[y:y + size, x:x + size] for y in starts for x in starts]


def annotations(labels, image_id, first_id):
    """COCO RLE annotations of an instance label map; parts smaller than MIN_PART pixels are dropped."""
    anns = []
    for value in np.unique(labels[labels > 0]):
        mask = np.asfortranarray(labels == value, dtype=np.uint8)
        area = int(mask.sum())
        if area < MIN_PART:
            continue
        rle = mask_util.encode(mask)
        anns.append({"id": first_id + len(anns), "image_id": image_id, "category_id": CATEGORY_ID,
                     "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
                     "area": area, "bbox": mask_util.toBbox(rle).tolist(), "iscrowd": 0})
    return anns


def write_split(root, split, tiles):
    """Writes image PNGs, semantic PNGs (0/1) and a COCO JSON of ``tiles`` [(image, labels)];
    registers ``nuclei_<split>`` (instances) and ``nuclei_<split>_sem_seg``."""
    image_root, sem_root = os.path.join(root, split, "images"), os.path.join(root, split, "sem_seg")
    os.makedirs(image_root)
    os.makedirs(sem_root)
    images, anns = [], []
    for image_id, (image, labels) in enumerate(tiles, start=1):
        name = f"{split}_{image_id:03d}.png"
        cv2.imwrite(os.path.join(image_root, name), cv2.merge([image] * 3))
        cv2.imwrite(os.path.join(sem_root, name), (labels > 0).astype(np.uint8))
        images.append({"id": image_id, "file_name": name, "height": image.shape[0], "width": image.shape[1]})
        anns += annotations(labels, image_id, len(anns) + 1)
    json_file = os.path.join(root, split, "instances.json")
    with open(json_file, "w") as f:
        json.dump({"images": images, "annotations": anns,
                   "categories": [{"id": CATEGORY_ID, "name": "nucleus"}]}, f)
    register_coco_instances_dataset(f"nuclei_{split}", json_file, image_root)
    DatasetCatalog.register(f"nuclei_{split}_sem_seg",
                            lambda: load_sem_seg(sem_root, image_root, gt_ext="png", image_ext="png"))
    MetadataCatalog.get(f"nuclei_{split}_sem_seg").set(
        image_root=image_root, sem_seg_root=sem_root, evaluator_type="sem_seg",
        stuff_classes=CLASSES, ignore_label=255)
    return json_file


def prepare(root, test_quadrant, crop, stride):
    """Writes the splits under ``root``: "train" (crops of the training quadrants), "trainquads" (the
    training quadrants whole, for tuning the watershed) and "test"; returns {split: COCO JSON path}."""
    image = quadrants(to_uint8(tifffile.imread(os.path.join(DATA_DIR, "img2d.tif"))))
    labels = quadrants(tifffile.imread(os.path.join(DATA_DIR, "mask2d.tif")).astype(np.int32))
    train = [k for k in sorted(image) if k != test_quadrant]
    train_crops = [pair for k in train for pair in zip(crops(image[k], crop, stride), crops(labels[k], crop, stride))]
    return {
        "train": write_split(root, "train", train_crops),
        "trainquads": write_split(root, "trainquads", [(image[k], labels[k]) for k in train]),
        "test": write_split(root, "test", [(image[test_quadrant], labels[test_quadrant])]),
    }


# ---------------------------------------------------------------- predictions -> (foreground, COCO results)
def from_instances(instances, image_id):
    """Foreground = union of the masks scored > 0.5; every detection goes to AP."""
    keep = instances.scores > 0.5
    fg = instances.pred_masks[keep].any(dim=0).numpy() if keep.any() else np.zeros(instances.image_size, bool)
    results = instances_to_coco_json(instances, image_id)
    for r in results:
        r["category_id"] = CATEGORY_ID  # contiguous class 0 -> the JSON's category id
    return fg, results


def from_semantic(logits, image_id):
    """Foreground = argmax; instances = its 8-connected components, scored by mean foreground probability."""
    prob = logits.softmax(dim=0)[1].numpy()
    fg = prob > 0.5
    components, n = ndi.label(fg, structure=np.ones((3, 3)))
    scores = ndi.mean(prob, components, index=np.arange(1, n + 1))
    results = []
    for label, score in zip(range(1, n + 1), scores):
        rle = mask_util.encode(np.asfortranarray(components == label, dtype=np.uint8))
        results.append({"image_id": image_id, "category_id": CATEGORY_ID, "score": float(score),
                        "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")}})
    return fg, results


def predict(model, records, kind):
    """(foregrounds, COCO results) of a model in eval mode on dataset records (images read as BGR)."""
    fgs, results = [], []
    with torch.no_grad():
        for record in records:
            image = cv2.imread(record["file_name"])
            output = model([{"image": torch.from_numpy(image.transpose(2, 0, 1).copy()),
                             "height": record["height"], "width": record["width"]}])[0]
            fg, res = (from_instances(output["instances"].to("cpu"), record["image_id"]) if kind == "instances"
                       else from_semantic(output["sem_seg"].cpu(), record["image_id"]))
            fgs.append(fg)
            results += res
    return fgs, results


def score(split, json_file, fgs, results):
    """Foreground Dice, mIoU, mask AP and AP50 (percent) of predictions on one split."""
    stats = SemSegStats.zeros(len(CLASSES))
    for record, fg in zip(DatasetCatalog.get(f"nuclei_{split}_sem_seg"), fgs):
        gt = cv2.imread(record["sem_seg_file_name"], cv2.IMREAD_UNCHANGED)
        stats += sem_seg_image_stats(gt, fg.astype(np.int64), len(CLASSES))
    sem = sem_seg_metrics(stats, CLASSES)
    ap = evaluate_coco(json_file, results, "segm")
    return {"Dice": sem["Dice-nucleus"], "mIoU": sem["mIoU"], "AP": ap["AP"], "AP50": ap["AP50"]}


# ---------------------------------------------------------------- methods
def watershed(jsons):
    """Watershed with (min_distance, min_area) picked by mask AP on the whole training quadrants."""
    def evaluate(split, segmenter):
        return score(split, jsons[split], *predict(segmenter, DatasetCatalog.get(f"nuclei_{split}"), "instances"))

    grid = list(itertools.product((4, 6, 8, 10, 12, 16), (10, 50, 100, 200)))  # nuclei: ~400 px, radius ~11
    start = time.perf_counter()
    tuned = {p: evaluate("trainquads", WatershedSegmenter(min_distance=p[0], min_area=p[1]))["AP"] for p in grid}
    best = max(tuned, key=tuned.get)
    seconds = time.perf_counter() - start
    print(f"watershed: min_distance {best[0]}, min_area {best[1]} (train AP {tuned[best]:.1f})", flush=True)
    return evaluate("test", WatershedSegmenter(min_distance=best[0], min_area=best[1])), seconds


def train_and_score(config, kind, extra, args, jsons, output_dir):
    """Trains one model on the crops with the shared budget; its scores on the test quadrant and train seconds."""
    train_set = "nuclei_train_sem_seg" if kind == "sem_seg" else "nuclei_train"
    cfg = setup_cfg(os.path.join(CONFIG_DIR, config), extra + [
        "DATASETS.TRAIN", (train_set,), "DATASETS.TEST", (),
        "INPUT.MIN_SIZE_TRAIN", (args.crop,), "INPUT.MAX_SIZE_TRAIN", args.crop,
        "INPUT.MIN_SIZE_TEST", QUADRANT, "INPUT.MAX_SIZE_TEST", QUADRANT,
        "SOLVER.MAX_ITER", args.iters, "SOLVER.STEPS", (int(args.iters * 0.8),),
        "SOLVER.IMS_PER_BATCH", args.batch, "SOLVER.CHECKPOINT_PERIOD", args.iters + 1,
        "SEED", 0, "OUTPUT_DIR", output_dir])
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    trainer.model.eval()
    fgs, results = predict(trainer.model, DatasetCatalog.get("nuclei_test"), kind)
    return score("test", jsons["test"], fgs, results), seconds


# ---------------------------------------------------------------- main
def table(rows):
    lines = ["| method | Dice | mIoU | mask AP | AP50 | train s |", "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {name} | {m['Dice']:.1f} | {m['mIoU']:.1f} | {m['AP']:.1f} | {m['AP50']:.1f} | {s:.0f} |"
              for name, m, s in rows]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iters", type=int, default=300, help="training iterations per model (default 300)")
    parser.add_argument("--batch", type=int, default=4, help="images per iteration (default 4)")
    parser.add_argument("--crop", type=int, default=128, help="training crop size (default 128)")
    parser.add_argument("--stride", type=int, default=64, help="training crop stride (default 64)")
    parser.add_argument("--test-quadrant", type=int, default=4, choices=(1, 2, 3, 4),
                        help="held-out quadrant, row by row: 1 top left .. 4 bottom right (default 4)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args()
    if not os.path.isdir(DATA_DIR):
        print(f"skipped: {os.path.normpath(DATA_DIR)} not found (the shared real-image data)")
        return 0
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        jsons = prepare(os.path.join(tmp, "data"), args.test_quadrant, args.crop, args.stride)
        metrics, seconds = watershed(jsons)
        rows = [("Watershed (tuned on train)", metrics, seconds)]
        for name, (config, kind, extra) in MODELS.items():
            metrics, seconds = train_and_score(config, kind, extra, args, jsons, os.path.join(tmp, config))
            rows.append((name, metrics, seconds))
            print(f"{name}: " + ", ".join(f"{k} {v:.1f}" for k, v in metrics.items()) + f", {seconds:.0f} s",
                  flush=True)

    print(f"\nTest quadrant {args.test_quadrant} (256x256, whole); {args.iters} iterations x {args.batch} crops "
          f"of {args.crop} px, seed 0, CPU, {args.threads} thread(s); watershed 'train s' = its grid search\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
