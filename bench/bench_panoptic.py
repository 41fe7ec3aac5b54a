#!/usr/bin/env python
"""PQ and training speed of stock Panoptic FPN vs SegD2PanopticFPN on the built-in shapes data.

Trains stock PanopticFPN (configs/builtin/panoptic_fpn_R18_demo.yaml) and the SegD2PanopticFPN variants
(configs/builtin/panoptic_seg_d2_R18_*.yaml) with the same schedule and seed, evaluates each on
seg_d2_shapes_val_panoptic_separated with seg_d2's PanopticQualityEvaluator (via the Trainer's evaluators)
and prints a Markdown table; iter/s is relative to stock.

    python bench/bench_panoptic.py                 # the table in docs/panoptic.md
    python bench/bench_panoptic.py --max-iter 10   # a quick smoke run
"""
import seg_d2  # noqa: F401  (first: makes Detectron2 whole and registers seg_d2)

import bench_common

VARIANTS = {
    "PanopticFPN (stock)": "panoptic_fpn_R18_demo.yaml",
    "SegD2PanopticFPN, UNetHead + BCE/Dice mask loss": "panoptic_seg_d2_R18_unet_head.yaml",
    "SegD2PanopticFPN, DeepLabV3+ + Mask Scoring": "panoptic_seg_d2_R18_deeplabv3plus_scoring.yaml",
}


def run(config_file, max_iter, output_dir):
    """(PQ, PQ things, PQ stuff, training iter/s) of one model."""
    _, metrics, speed = bench_common.train(
        config_file, max_iter, output_dir, opts=["SOLVER.WARMUP_ITERS", min(50, max_iter // 5)]
    )
    pq = [metrics[f"panoptic_seg/{k}"][0] for k in ("PQ", "PQ_th", "PQ_st")]
    return (*pq, speed)


def main():
    args = bench_common.parse_args(__doc__, default_max_iter=120, per="model")
    rows = bench_common.run_variants(VARIANTS, args.max_iter, run, lambda row: f"PQ {row[0]:.1f}, {row[3]:.2f} iter/s")
    print(f"\n{args.max_iter} iterations, batch 4 at 128 px, seed from the config, CPU, "
          f"{args.threads} thread(s)\n")
    bench_common.print_table(
        ["model", "PQ", "PQ things", "PQ stuff"],
        [(name, [f"{pq:.1f}", f"{pq_th:.1f}", f"{pq_st:.1f}"], speed) for name, pq, pq_th, pq_st, speed in rows],
    )


if __name__ == "__main__":
    main()
