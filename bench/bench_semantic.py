#!/usr/bin/env python
"""mIoU, mean Dice and training speed of the semantic models on the built-in shapes data.

Trains stock SemSegFPNHead, UNetHead and DeepLabV3PlusASPPHead (each on a from-scratch ResNet-18) and
the plain U-Net (UNetSegmentor) from configs/builtin/semantic_*.yaml, with the same schedule and seed,
evaluates each on seg_d2_shapes_val_sem_seg with seg_d2's SemSegMetricsEvaluator and prints a Markdown
table; iter/s is relative to the stock head.

    python bench/bench_semantic.py                 # the table in docs/semantic.md
    python bench/bench_semantic.py --max-iter 20   # a quick smoke run
"""
import argparse
import os
import tempfile

import seg_d2  # noqa: F401  (first: makes Detectron2 whole and registers seg_d2)
import seg_d2.data  # noqa: F401  (registers the built-in datasets until seg_d2 imports them itself)
import seg_d2.modeling  # noqa: F401  (likewise, the semantic heads)

import torch

from seg_d2.engine import Trainer, setup_cfg

VARIANTS = {
    "SemSegFPNHead (stock)": "semantic_fpn_R18.yaml",
    "UNetHead": "semantic_unet_head_R18.yaml",
    "DeepLabV3PlusASPPHead": "semantic_deeplabv3plus_R18.yaml",
    "U-Net (UNetSegmentor)": "semantic_unet.yaml",
}
CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs", "builtin")


def run(config_file, max_iter, output_dir):
    """(mIoU, mDice, training iter/s, parameters) of one variant."""
    steps = (int(max_iter * 0.8),)
    cfg = setup_cfg(config_file, ["SOLVER.MAX_ITER", max_iter, "SOLVER.STEPS", steps,
                                  "SOLVER.CHECKPOINT_PERIOD", max_iter + 1, "OUTPUT_DIR", output_dir])
    trainer = Trainer(cfg)  # evaluator for "sem_seg" data: SemSegMetricsEvaluator
    trainer.resume_or_load(resume=False)
    trainer.train()  # evaluates on cfg.DATASETS.TEST after the last iteration
    metrics = trainer.storage.latest()
    seconds_per_iter = trainer.storage.history("time").global_avg()
    params = sum(p.numel() for p in trainer.model.parameters())
    return metrics["sem_seg/mIoU"][0], metrics["sem_seg/mDice"][0], 1.0 / seconds_per_iter, params


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-iter", type=int, default=300, help="iterations per variant (default 300)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, config in VARIANTS.items():
            row = run(os.path.join(CONFIG_DIR, config), args.max_iter, os.path.join(tmp, config))
            rows.append((name, *row))
            print(f"{name}: mIoU {row[0]:.1f}, mDice {row[1]:.1f}, {row[2]:.2f} iter/s", flush=True)

    stock_speed = rows[0][3]
    print(f"\n{args.max_iter} iterations, batch 4 at 128 px, seed from the config, CPU, "
          f"{args.threads} thread(s)\n")
    print("| model | mIoU | mDice | params | train iter/s | vs stock |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, miou, mdice, speed, params in rows:
        print(f"| {name} | {miou:.1f} | {mdice:.1f} | {params / 1e6:.2f} M | {speed:.2f} | "
              f"{speed / stock_speed:.2f}× |")


if __name__ == "__main__":
    main()
