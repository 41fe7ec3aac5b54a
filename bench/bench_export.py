#!/usr/bin/env python
"""Per-image CPU latency of exported models: onnxruntime and TorchScript vs the PyTorch model, per family.

For one config per family (semantic FPN, Mask R-CNN, Mask Scoring cascade, Panoptic FPN; random weights,
R18 backbones) it exports ONNX and TorchScript and times, on the same preprocessed images, side by side and
alternating (PyTorch, onnxruntime, TorchScript, PyTorch, ...) so that the machine's load falls on all three
alike: PyTorch ``model([{"image", "height", "width"}])``, the onnxruntime session, the TorchScript module.
It prints the median milliseconds per image and the ratios to PyTorch, and the parity figures (largest
difference per output over the images). Run it on an idle machine; a shared one gives noisy absolute
times (the ratios hold better).

    python bench/bench_export.py                       # 128 px images (the configs' size)
    python bench/bench_export.py --size 512 --repeats 5
"""
import argparse
import statistics
import tempfile
import time

import seg_d2  # noqa: F401  (first: makes Detectron2 whole and registers seg_d2)

import torch

from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model

from seg_d2.engine import setup_cfg
from seg_d2.export import ExportedPredictor, check_export, export_model, preprocess, read_input_image

CONFIGS = {
    "semantic (SemSegFPNHead)": "configs/builtin/semantic_fpn_R18.yaml",
    "instance (Mask R-CNN)": "configs/builtin/mask_rcnn_R18_shapes.yaml",
    "instance (cascade Mask Scoring)": "configs/builtin/mask_rcnn_R18_shapes_cascade_scoring.yaml",
    "panoptic (Panoptic FPN)": "configs/builtin/panoptic_fpn_R18_demo.yaml",
}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=128, help="INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST (default 128)")
    parser.add_argument("--images", type=int, default=8, help="validation images timed (default 8)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes over the images (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="threads for torch and onnxruntime (default 1)")
    return parser.parse_args()


def _timed(run):
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def bench(config, args, output_dir):
    cfg = setup_cfg(config, ["INPUT.MIN_SIZE_TEST", args.size, "INPUT.MAX_SIZE_TEST", args.size])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    records = DatasetCatalog.get(cfg.DATASETS.TEST[0])[: args.images]
    images = [read_input_image(cfg, r["file_name"], r.get("window")) for r in records]
    paths = export_model(cfg, output_dir, model=model, image=images[0])
    runners = {"pytorch": None, "onnxruntime": ExportedPredictor(paths["onnx"], threads=args.threads),
               "torchscript": ExportedPredictor(paths["torchscript"])}
    inputs = [(torch.from_numpy(preprocess(image, runners["onnxruntime"].meta)), image.shape[:2]) for image in images]

    def run(name, tensor, size):
        if name == "pytorch":
            with torch.no_grad():
                return model([{"image": tensor, "height": size[0], "width": size[1]}])
        return runners[name].run(tensor.numpy(), size)

    times = {name: [] for name in runners}
    for tensor, size in inputs:  # warm-up
        for name in runners:
            run(name, tensor, size)
    for _ in range(args.repeats):
        for tensor, size in inputs:
            for name in runners:
                times[name].append(_timed(lambda: run(name, tensor, size)))
    medians = {name: 1000 * statistics.median(t) for name, t in times.items()}
    parity = {fmt: _worst(check_export(paths[fmt], model, images, tolerances=None)) for fmt in ("onnx", "torchscript")}
    return medians, parity


def _worst(reports):
    return {k: max(r[k] for r in reports) for k in reports[0]}


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.images} images at {args.size} px, {args.repeats} passes, {args.threads} thread(s), CPU; "
          "median ms per image, ratio = PyTorch time / exported time (> 1: the export is faster)\n")
    print("| family | PyTorch ms | onnxruntime ms | ratio | TorchScript ms | ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    parities = {}
    with tempfile.TemporaryDirectory() as tmp:
        for index, (family, config) in enumerate(CONFIGS.items()):
            ms, parities[family] = bench(config, args, f"{tmp}/{index}")
            print(f"| {family} | {ms['pytorch']:.1f} | {ms['onnxruntime']:.1f} | "
                  f"{ms['pytorch'] / ms['onnxruntime']:.2f}× | {ms['torchscript']:.1f} | "
                  f"{ms['pytorch'] / ms['torchscript']:.2f}× |", flush=True)
    print("\nLargest difference to PyTorch over the images (boxes px, scores, logits: absolute; masks, labels, "
          "panoptic: fraction of pixels; detections: count)")
    for family, parity in parities.items():
        for fmt, worst in parity.items():
            print(f"- {family}, {fmt}: " + ", ".join(f"{k} {v:.2g}" for k, v in worst.items()))


if __name__ == "__main__":
    main()
