#!/usr/bin/env python
"""Mask AP and training speed of the Mask R-CNN variants on the built-in shapes data.

Trains stock Mask R-CNN, BCE + Dice, Dice and focal mask losses, and Mask Scoring R-CNN from the
configs/builtin/mask_rcnn_R18_shapes*.yaml configs, with the same schedule and seed, evaluates each on
seg_d2_shapes_val (COCO mask AP) and prints a Markdown table; iter/s is relative to stock Mask R-CNN.

    python bench/bench_mask_heads.py                 # the table in docs/mask_heads.md
    python bench/bench_mask_heads.py --max-iter 20   # a quick smoke run
"""
import seg_d2  # noqa: F401  (first: makes Detectron2 whole and registers seg_d2)
import seg_d2.data  # noqa: F401  (registers the built-in datasets until seg_d2 imports them itself)
import seg_d2.modeling  # noqa: F401  (likewise, the Mask R-CNN variants)

from detectron2.engine import DefaultTrainer
from detectron2.evaluation import COCOEvaluator

import bench_common

VARIANTS = {
    "Mask R-CNN (stock BCE)": "mask_rcnn_R18_shapes.yaml",
    "BCE + Dice": "mask_rcnn_R18_shapes_bce_dice.yaml",
    "Dice": "mask_rcnn_R18_shapes_dice.yaml",
    "Focal": "mask_rcnn_R18_shapes_focal.yaml",
    "Mask Scoring R-CNN": "mask_rcnn_R18_shapes_scoring.yaml",
}


class BenchTrainer(DefaultTrainer):
    """Mask (and box) AP with Detectron2's own COCO evaluator, nothing else."""

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return COCOEvaluator(dataset_name, tasks=("bbox", "segm"), distributed=False, output_dir=output_folder)


def run(config_file, max_iter, output_dir):
    """(mask AP, box AP, training iter/s) of one variant."""
    _, metrics, speed = bench_common.train(config_file, max_iter, output_dir, trainer_class=BenchTrainer)
    return metrics["segm/AP"][0], metrics["bbox/AP"][0], speed


def main():
    args = bench_common.parse_args(__doc__, default_max_iter=200)
    rows = bench_common.run_variants(
        VARIANTS, args.max_iter, run,
        lambda row: f"mask AP {row[0]:.1f}, box AP {row[1]:.1f}, {row[2]:.2f} iter/s",
    )
    print(f"\n{args.max_iter} iterations, seed from the config, CPU, {args.threads} thread(s)\n")
    bench_common.print_table(
        ["variant", "mask AP", "box AP"],
        [(name, [f"{mask_ap:.1f}", f"{box_ap:.1f}"], speed) for name, mask_ap, box_ap, speed in rows],
    )


if __name__ == "__main__":
    main()
