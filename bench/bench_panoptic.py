#!/usr/bin/env python
"""PQ and training speed of stock Panoptic FPN vs SegD2PanopticFPN on the built-in shapes data.

Trains stock PanopticFPN (configs/builtin/panoptic_fpn_R18_demo.yaml) and the SegD2PanopticFPN variants
(configs/builtin/panoptic_seg_d2_R18_*.yaml) with the same schedule and seed, evaluates each on
seg_d2_shapes_val_panoptic_separated with seg_d2's PanopticQualityEvaluator (via the Trainer's evaluators)
and prints a Markdown table; iter/s is relative to stock.

    python bench/bench_panoptic.py                 # the table in docs/panoptic.md
    python bench/bench_panoptic.py --max-iter 10   # a quick smoke run
"""
import argparse
import os
import tempfile

import seg_d2  # noqa: F401  (first: makes Detectron2 whole and registers seg_d2)

import torch

from seg_d2.engine import Trainer, setup_cfg

VARIANTS = {
    "PanopticFPN (stock)": "panoptic_fpn_R18_demo.yaml",
    "SegD2PanopticFPN, UNetHead + BCE/Dice mask loss": "panoptic_seg_d2_R18_unet_head.yaml",
    "SegD2PanopticFPN, DeepLabV3+ + Mask Scoring": "panoptic_seg_d2_R18_deeplabv3plus_scoring.yaml",
}
CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs", "builtin")


def run(config_file, max_iter, output_dir):
    """(PQ, PQ things, PQ stuff, training iter/s) of one model."""
    cfg = setup_cfg(config_file, ["SOLVER.MAX_ITER", max_iter, "SOLVER.STEPS", (int(max_iter * 0.8),),
                                  "SOLVER.WARMUP_ITERS", min(50, max_iter // 5),
                                  "SOLVER.CHECKPOINT_PERIOD", max_iter + 1, "OUTPUT_DIR", output_dir])
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()  # evaluates on cfg.DATASETS.TEST after the last iteration
    metrics = trainer.storage.latest()
    pq = [metrics[f"panoptic_seg/{k}"][0] for k in ("PQ", "PQ_th", "PQ_st")]
    return (*pq, 1.0 / trainer.storage.history("time").global_avg())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-iter", type=int, default=120, help="iterations per model (default 120)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, config in VARIANTS.items():
            row = run(os.path.join(CONFIG_DIR, config), args.max_iter, os.path.join(tmp, config))
            rows.append((name, *row))
            print(f"{name}: PQ {row[0]:.1f}, {row[3]:.2f} iter/s", flush=True)

    stock_speed = rows[0][4]
    print(f"\n{args.max_iter} iterations, batch 4 at 128 px, seed from the config, CPU, "
          f"{args.threads} thread(s)\n")
    print("| model | PQ | PQ things | PQ stuff | train iter/s | vs stock |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, pq, pq_th, pq_st, speed in rows:
        print(f"| {name} | {pq:.1f} | {pq_th:.1f} | {pq_st:.1f} | {speed:.2f} | {speed / stock_speed:.2f}× |")


if __name__ == "__main__":
    main()
