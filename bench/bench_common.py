"""What bench_semantic.py, bench_panoptic.py and bench_mask_heads.py share: the command line, training one
builtin config for N iterations (seed from the config) and evaluating it, and the Markdown table whose
speeds are relative to its first row. Imported as ``bench_common`` (the scripts run as
``python bench/bench_x.py``, which puts bench/ first on sys.path)."""
import argparse
import os
import tempfile

import seg_d2  # noqa: F401  (first: makes Detectron2 whole and registers seg_d2)

import torch

from seg_d2.engine import Trainer, setup_cfg

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs", "builtin")


def parse_args(doc, default_max_iter, per="variant"):
    """``--max-iter`` and ``--threads`` (applied to torch); the description is the first line of ``doc``."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--max-iter", type=int, default=default_max_iter,
                        help=f"iterations per {per} (default {default_max_iter})")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    return args


def train(config_file, max_iter, output_dir, opts=(), trainer_class=Trainer):
    """Trains ``config_file`` for ``max_iter`` iterations (LR step at 80%, no checkpoint), which evaluates on
    cfg.DATASETS.TEST after the last one: (trainer, its latest metrics, training iter/s)."""
    cfg = setup_cfg(config_file, ["SOLVER.MAX_ITER", max_iter, "SOLVER.STEPS", (int(max_iter * 0.8),), *opts,
                                  "SOLVER.CHECKPOINT_PERIOD", max_iter + 1, "OUTPUT_DIR", output_dir])
    trainer = trainer_class(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()  # evaluates on cfg.DATASETS.TEST after the last iteration
    return trainer, trainer.storage.latest(), 1.0 / trainer.storage.history("time").global_avg()


def run_variants(variants, max_iter, run, summary):
    """``run(config_file, max_iter, output_dir)`` for each {name: config file in configs/builtin}, in a
    temporary folder, printing ``name: summary(result)`` as each ends; [(name, *result)]."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, config in variants.items():
            row = run(os.path.join(CONFIG_DIR, config), max_iter, os.path.join(tmp, config))
            rows.append((name, *row))
            print(f"{name}: {summary(row)}", flush=True)
    return rows


def print_table(columns, rows):
    """A Markdown table of ``rows`` = [(name, [formatted cells], iter/s)] under ``columns`` (the name's and
    the cells'), with "train iter/s" and "vs stock" (iter/s relative to the first row) appended."""
    stock_speed = rows[0][-1]
    print("| " + " | ".join([*columns, "train iter/s", "vs stock"]) + " |")
    print("|---|" + "---:|" * (len(columns) + 1))
    for name, cells, speed in rows:
        print("| " + " | ".join([name, *cells, f"{speed:.2f}", f"{speed / stock_speed:.2f}×"]) + " |")
