#!/usr/bin/env python
"""mIoU, mean Dice and training speed of the semantic models on the built-in shapes data.

Trains stock SemSegFPNHead, UNetHead and DeepLabV3PlusASPPHead (each on a from-scratch ResNet-18) and
the plain U-Net (UNetSegmentor) from configs/builtin/semantic_*.yaml, with the same schedule and seed,
evaluates each on seg_d2_shapes_val_sem_seg with seg_d2's SemSegMetricsEvaluator and prints a Markdown
table; iter/s is relative to the stock head.

    python bench/bench_semantic.py                 # the table in docs/semantic.md
    python bench/bench_semantic.py --max-iter 20   # a quick smoke run
"""
import seg_d2  # noqa: F401  (first: makes Detectron2 whole and registers seg_d2)
import seg_d2.data  # noqa: F401  (registers the built-in datasets until seg_d2 imports them itself)
import seg_d2.modeling  # noqa: F401  (likewise, the semantic heads)

import bench_common

VARIANTS = {
    "SemSegFPNHead (stock)": "semantic_fpn_R18.yaml",
    "UNetHead": "semantic_unet_head_R18.yaml",
    "DeepLabV3PlusASPPHead": "semantic_deeplabv3plus_R18.yaml",
    "U-Net (UNetSegmentor)": "semantic_unet.yaml",
}


def run(config_file, max_iter, output_dir):
    """(mIoU, mDice, training iter/s, parameters) of one variant."""
    # Trainer's evaluator for "sem_seg" data: SemSegMetricsEvaluator
    trainer, metrics, speed = bench_common.train(config_file, max_iter, output_dir)
    params = sum(p.numel() for p in trainer.model.parameters())
    return metrics["sem_seg/mIoU"][0], metrics["sem_seg/mDice"][0], speed, params


def main():
    args = bench_common.parse_args(__doc__, default_max_iter=300)
    rows = bench_common.run_variants(
        VARIANTS, args.max_iter, run, lambda row: f"mIoU {row[0]:.1f}, mDice {row[1]:.1f}, {row[2]:.2f} iter/s"
    )
    print(f"\n{args.max_iter} iterations, batch 4 at 128 px, seed from the config, CPU, "
          f"{args.threads} thread(s)\n")
    bench_common.print_table(
        ["model", "mIoU", "mDice", "params"],
        [(name, [f"{miou:.1f}", f"{mdice:.1f}", f"{params / 1e6:.2f} M"], speed)
         for name, miou, mdice, speed, params in rows],
    )


if __name__ == "__main__":
    main()
