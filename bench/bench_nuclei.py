#!/usr/bin/env python
"""Dice, mIoU and mask AP of watershed, U-Net, SegFormer-B0 and Mask R-CNN on real nuclei.

The 512x512 16-bit fluorescence image of ../shared/data/nuclei-stardist (BBBC038, 125 labelled nuclei) is
split by quadrants with seg_d2's own datasets (DATASETS.REGISTER formats "image_mask_folders", "sem_seg",
"tiles", "region"): three quadrants train (as overlapping 128x128 tiles), the fourth is the test image,
scored whole. Every trained model gets the same budget (iterations x images per iteration, seed 0, CPU); the
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

import numpy as np
import pycocotools.mask as mask_util
import scipy.ndimage as ndi
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation.coco_evaluation import instances_to_coco_json

from seg_d2.baselines import WatershedSegmenter
from seg_d2.data import converters, read_image, read_label_map
from seg_d2.data.config_datasets import register_dataset_entry
from seg_d2.engine import Trainer, setup_cfg
from seg_d2.evaluation import evaluate_coco, sem_seg_image_stats, sem_seg_metrics
from seg_d2.evaluation.sem_seg_evaluator import SemSegStats

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
DATA_DIR = os.path.join(ROOT, "..", "shared", "data", "nuclei-stardist")
CONFIG_DIR = os.path.join(ROOT, "configs", "builtin")
CLASSES = ["background", "nucleus"]
CATEGORY_ID = 1  # the nucleus category in the COCO JSONs
MIN_PART = 10  # nucleus parts cut by a tile border smaller than this (pixels) are dropped
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
def quadrant_window(k):
    """Quadrant k (1..4 row by row, 4 = bottom right) as a fractional window "x0,y0,x1,y1"."""
    x, y = (k - 1) % 2 * 0.5, (k - 1) // 2 * 0.5
    return f"{x},{y},{x + 0.5},{y + 0.5}"


def prepare(root, test_quadrant, crop, stride):
    """Registers, as a user would in DATASETS.REGISTER, the splits of the nuclei image in instance
    ("nuclei_<split>") and semantic ("nuclei_<split>_sem_seg") form: "train" (crop-pixel tiles of the three
    training quadrants), "trainquads" (those quadrants whole, for tuning the watershed) and "test" (the
    held-out quadrant, whole); nucleus parts cut by a tile border under MIN_PART pixels are left out.
    The 16-bit image is read by seg_d2's reader (INPUT.NORMALIZE "auto": the whole image's 1/99.8 %
    stretch). Returns {split: COCO JSON path}."""
    folders = {sub: os.path.join(root, sub) for sub in ("img", "masks", "labels")}
    for sub, name in (("img", "img2d.tif"), ("masks", "mask2d.tif")):  # one stem for image and raster
        os.makedirs(folders[sub])
        os.symlink(os.path.abspath(os.path.join(DATA_DIR, name)), os.path.join(folders[sub], "nuclei.tif"))
    coco = converters.instance_rasters_to_coco(folders["img"], folders["masks"], "nucleus")
    classes = converters.coco_to_semantic(coco, folders["labels"])  # ["background", "nucleus"]
    assert classes == CLASSES, classes
    classes_json = os.path.join(root, "classes.json")
    with open(classes_json, "w") as f:
        json.dump(classes, f)
    test = quadrant_window(test_quadrant)
    splits = {"train": ("tiles", f"size={crop}", f"overlap={crop - stride}", f"exclude={test}"),
              "trainquads": ("tiles", f"size={QUADRANT}", f"exclude={test}"),
              "test": ("region", test)}
    entries = [("nuclei", "image_mask_folders", folders["img"], folders["masks"], "nucleus"),
               ("nuclei_sem_seg", "sem_seg", folders["img"], folders["labels"], classes_json)]
    for split, (fmt, *args) in splits.items():
        for form in ("", "_sem_seg"):
            entries.append((f"nuclei_{split}{form}", fmt, f"nuclei{form}", *args, f"min_area={MIN_PART}"))
    for entry in entries:
        register_dataset_entry(entry)
    return {split: MetadataCatalog.get(f"nuclei_{split}").json_file for split in splits}


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
            image = read_image(record["file_name"], "BGR", window=record.get("window"))
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
        gt = read_label_map(record["sem_seg_file_name"])
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
