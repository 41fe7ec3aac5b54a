#!/usr/bin/env python
"""Export any seg_d2 / Detectron2 config + weights to ONNX and TorchScript, and check the export.

    python tools/export_model.py --config-file configs/builtin/mask_rcnn_R18_shapes.yaml \\
        --output export/ MODEL.WEIGHTS output/mask_rcnn_R18_shapes/model_final.pth
    python tools/export_model.py --config-file CFG --format onnx --sample-image img.jpg \\
        --check-image a.jpg --check-image b.png MODEL.WEIGHTS w.pth

Writes ``<output>/model.onnx``, ``model.ts`` and ``model.json`` (see docs/export.md), then runs each export
and the PyTorch model on the sample image and every ``--check-image`` and prints the largest difference
per output. Exit status: 0 when every export is within ``seg_d2.export.TOLERANCES``, 1 when one is not,
2 for bad arguments or files. Config overrides (KEY VALUE ...) come last.
"""
import argparse
import os
import pickle
import sys

import seg_d2  # noqa: F401  (first: makes Detectron2 whole and registers seg_d2)

from detectron2.utils.logger import setup_logger

from seg_d2.data.image_io import ImageReadError
from seg_d2.engine import setup_cfg
from seg_d2.export import TOLERANCES, check_export, export_model, read_input_image
from seg_d2.export.api import load_model, sample_image
from seg_d2.export.parity import beyond_tolerance

FORMATS = {"onnx": ("onnx",), "torchscript": ("torchscript",), "both": ("onnx", "torchscript")}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--output", default="export", metavar="DIR", help="folder for the exported files")
    parser.add_argument("--format", choices=sorted(FORMATS), default="both")
    parser.add_argument("--name", default="model", help="file name stem of the exported files")
    parser.add_argument("--sample-image", metavar="FILE",
                        help="image to trace on (default: the first image of DATASETS.TEST)")
    parser.add_argument("--check-image", action="append", default=[], metavar="FILE",
                        help="another image to compare the export on (repeat the option for more)")
    parser.add_argument("--no-check", action="store_true", help="export only, do not compare with PyTorch")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    return parser.parse_args(argv)


def _read(cfg, path):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such image")
    return read_input_image(cfg, path)  # 16-bit / float images normalised as INPUT.NORMALIZE says


def _check(path, model, names, images) -> bool:
    """Print each image's differences between the export at ``path`` and the model; True if all are
    within tolerance."""
    passed = True
    for name, report in zip(names, check_export(path, model, images, tolerances=None)):
        failed = beyond_tolerance(report)
        cells = ", ".join(f"{k} {v:.3g}" for k, v in report.items())
        print(f"{os.path.basename(path)} on {name}: {cells}" + (f"  BEYOND TOLERANCE: {sorted(failed)}" if failed else ""))
        passed = passed and not failed
    return passed


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logger(name="seg_d2")
    try:
        cfg = setup_cfg(args.config_file, args.opts)
        image = _read(cfg, args.sample_image) if args.sample_image else sample_image(cfg)
        checks = [_read(cfg, p) for p in args.check_image]
    except (FileNotFoundError, ImageReadError, ValueError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        model = load_model(cfg)
    except (OSError, ValueError, RuntimeError, EOFError, pickle.UnpicklingError) as error:  # missing, unreachable, corrupt
        print(f"error: MODEL.WEIGHTS {cfg.MODEL.WEIGHTS!r}: {error}", file=sys.stderr)
        return 2
    paths = export_model(cfg, args.output, model=model, image=image, formats=FORMATS[args.format], name=args.name)
    for fmt, path in paths.items():
        print(f"{fmt}: {path}")
    if args.no_check:
        return 0
    names = [args.sample_image or "the sample image", *args.check_image]
    results = [_check(paths[fmt], model, names, [image, *checks]) for fmt in FORMATS[args.format]]
    print(f"tolerances: {TOLERANCES}")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
