#!/usr/bin/env python
"""Mask AP and training speed of the Mask R-CNN variants on the built-in shapes data.

Trains stock Mask R-CNN, BCE + Dice, Dice and focal mask losses, and Mask Scoring R-CNN from the
configs/builtin/mask_rcnn_R18_shapes*.yaml configs, with the same schedule and seed, evaluates each on
seg_d2_shapes_val (COCO mask AP) and prints a Markdown table; iter/s is relative to stock Mask R-CNN.

    python bench/bench_mask_heads.py                 # the table in docs/mask_heads.md
    python bench/bench_mask_heads.py --max-iter 20   # a quick smoke run
"""
import argparse
import os
import tempfile

import seg_d2  # noqa: F401  (first: makes Detectron2 whole and registers seg_d2)
import seg_d2.data  # noqa: F401  (registers the built-in datasets until seg_d2 imports them itself)
import seg_d2.modeling  # noqa: F401  (likewise, the Mask R-CNN variants)

import torch
from detectron2.engine import DefaultTrainer
from detectron2.evaluation import COCOEvaluator

from seg_d2.engine import setup_cfg

VARIANTS = {
    "Mask R-CNN (stock BCE)": "mask_rcnn_R18_shapes.yaml",
    "BCE + Dice": "mask_rcnn_R18_shapes_bce_dice.yaml",
    "Dice": "mask_rcnn_R18_shapes_dice.yaml",
    "Focal": "mask_rcnn_R18_shapes_focal.yaml",
    "Mask Scoring R-CNN": "mask_rcnn_R18_shapes_scoring.yaml",
}
CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs", "builtin")


class BenchTrainer(DefaultTrainer):
    """Mask (and box) AP with Detectron2's own COCO evaluator, nothing else."""

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return COCOEvaluator(dataset_name, tasks=("bbox", "segm"), distributed=False, output_dir=output_folder)


def run(config_file, max_iter, output_dir):
    """(mask AP, box AP, training iter/s) of one variant."""
    steps = (int(max_iter * 0.8),)
    cfg = setup_cfg(config_file, ["SOLVER.MAX_ITER", max_iter, "SOLVER.STEPS", steps,
                                  "SOLVER.CHECKPOINT_PERIOD", max_iter + 1, "OUTPUT_DIR", output_dir])
    trainer = BenchTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()  # evaluates on cfg.DATASETS.TEST after the last iteration
    metrics = trainer.storage.latest()
    seconds_per_iter = trainer.storage.history("time").global_avg()
    return metrics["segm/AP"][0], metrics["bbox/AP"][0], 1.0 / seconds_per_iter


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-iter", type=int, default=200, help="iterations per variant (default 200)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, config in VARIANTS.items():
            mask_ap, box_ap, speed = run(os.path.join(CONFIG_DIR, config), args.max_iter, os.path.join(tmp, config))
            rows.append((name, mask_ap, box_ap, speed))
            print(f"{name}: mask AP {mask_ap:.1f}, box AP {box_ap:.1f}, {speed:.2f} iter/s", flush=True)

    stock_speed = rows[0][3]
    print(f"\n{args.max_iter} iterations, seed from the config, CPU, {args.threads} thread(s)\n")
    print("| variant | mask AP | box AP | train iter/s | vs stock |")
    print("|---|---:|---:|---:|---:|")
    for name, mask_ap, box_ap, speed in rows:
        print(f"| {name} | {mask_ap:.1f} | {box_ap:.1f} | {speed:.2f} | {speed / stock_speed:.2f}× |")


if __name__ == "__main__":
    main()
