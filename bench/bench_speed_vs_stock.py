#!/usr/bin/env python
"""seg_d2's defaults vs stock Detectron2 on a CPU, side by side in one process, A/B alternated.

1. DefaultPredictor inference and 2. training steps (forward, backward, SGD step) of Detectron2's model-zoo
Mask R-CNN R50-FPN and Panoptic FPN R50: random weights (made to give 100 distinct detections), built-in
shapes images resized as the zoo configs resize them (800 px at test, 640-800 px in training). "stock" is
the same config with SEG_D2.FOLD_NORMS False, i.e. Detectron2's own modules; both models hold the same
weights, and the outputs are compared.
3. The demo's training speed (configs/builtin/panoptic_fpn_regnetx002_demo.yaml) at 1 thread, 2 threads, torch's
default and seg_d2's thread policy (SEG_D2.NUM_THREADS 0), in alternated blocks of iterations.

Times are medians over the rounds; "cpu" is this process's CPU time, which other jobs on a shared machine
disturb less than wall time. Ratios are stock / seg_d2 (> 1: seg_d2 faster).

    python bench/bench_speed_vs_stock.py              # the tables in docs/speed.md
    python bench/bench_speed_vs_stock.py --rounds 2   # a quick look
    python bench/bench_speed_vs_stock.py --only gflops   # the machine's yardstick (printed by `make demo`)
"""
import argparse
import copy
import os
import statistics
import time

import seg_d2  # noqa: F401  (first: makes Detectron2 whole and registers seg_d2)

import torch
from detectron2 import model_zoo
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.data.detection_utils import read_image
from detectron2.engine import DefaultPredictor
from detectron2.solver import build_optimizer
from detectron2.utils.events import EventStorage

from seg_d2.engine import Trainer, setup_cfg
from seg_d2.engine.threads import ThreadPolicy

MODELS = {  # name: (model-zoo config, built-in training set in the form the model trains on)
    "Mask R-CNN R50-FPN": ("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml", "seg_d2_shapes_train"),
    "Panoptic FPN R50": ("COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml",
                         "seg_d2_shapes_train_panoptic_separated"),
}
TORCH_DEFAULT_THREADS = torch.get_num_threads()  # before main() sets --threads
DEMO_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs", "builtin",
                           "panoptic_fpn_regnetx002_demo.yaml")


def zoo_cfg(zoo_config, fold_norms):
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(zoo_config))
    # 2 images per step, at the zoo's learning rate per image (0.02 for 16) and without warm-up, far lower
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "SOLVER.IMS_PER_BATCH", 2,
                         "SOLVER.BASE_LR", 0.0005, "SEG_D2.FOLD_NORMS", fold_norms])
    return cfg


def give_distinct_detections(model):
    """Random R50 weights detect nothing useful: activations grow through 16 residual blocks with unit
    BatchNorm, so boxes regress to the image border. Pretrained-like norm scale, no box regression and
    spread class scores give 100 distinct detections of several classes, as a trained model does."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "running_var") and module.weight is not None:
                module.weight.copy_(torch.rand(module.weight.shape, generator=generator) * 0.4 + 0.3)
        for layer in (model.proposal_generator.rpn_head.anchor_deltas, model.roi_heads.box_predictor.bbox_pred):
            layer.weight.zero_()
            layer.bias.zero_()
        model.roi_heads.box_predictor.cls_score.weight.mul_(300.0)


def alternate(runs, rounds):
    """Calls each of ``runs`` ({name: fn}) once per round, in turn: {name: (median wall s, median cpu s)}."""
    times = {name: ([], []) for name in runs}
    for _ in range(rounds):
        for name, fn in runs.items():
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            times[name][0].append(time.perf_counter() - wall)
            times[name][1].append(time.process_time() - cpu)
    return {name: (statistics.median(w), statistics.median(c)) for name, (w, c) in times.items()}


def print_ratio_row(label, times):
    (stock_wall, stock_cpu), (ours_wall, ours_cpu) = times["stock"], times["seg_d2"]
    print(f"| {label} | {stock_wall:.2f} / {stock_cpu:.2f} | {ours_wall:.2f} / {ours_cpu:.2f} "
          f"| {stock_wall / ours_wall:.2f}× / {stock_cpu / ours_cpu:.2f}× |", flush=True)


def shapes_images(count):
    return [read_image(d["file_name"], format="BGR") for d in DatasetCatalog.get("seg_d2_shapes_val")[:count]]


def compare_predictions(stock, ours):
    """Largest box / score difference and the fraction of mask pixels that differ, over all images."""
    box = score = mask = 0.0
    for a, b in zip(stock, ours):
        a, b = a["instances"], b["instances"]
        if len(a) != len(b) or not torch.equal(a.pred_classes, b.pred_classes):
            return f"detections differ ({len(a)} vs {len(b)})"
        box = max(box, (a.pred_boxes.tensor - b.pred_boxes.tensor).abs().max().item())
        score = max(score, (a.scores - b.scores).abs().max().item())
        mask = max(mask, (a.pred_masks != b.pred_masks).float().mean().item())
    return f"boxes ±{box:.1e} px, scores ±{score:.1e}, {mask:.1e} of mask pixels differ"


def bench_inference(rounds, images):
    print("\n| DefaultPredictor, s/image (wall / cpu) | stock | seg_d2 | speed-up |\n|---|---:|---:|---:|")
    notes = []
    for name, (zoo_config, _) in MODELS.items():
        predictors = {}
        for label, fold in (("stock", False), ("seg_d2", True)):
            torch.manual_seed(0)
            predictors[label] = DefaultPredictor(zoo_cfg(zoo_config, fold))
        give_distinct_detections(predictors["stock"].model)
        predictors["seg_d2"].model.load_state_dict(predictors["stock"].model.state_dict())
        outputs = {label: [p(image) for image in images] for label, p in predictors.items()}  # also warms up
        times = alternate({label: lambda p=p: [p(image) for image in images] for label, p in predictors.items()},
                          rounds)
        print_ratio_row(name, {k: (w / len(images), c / len(images)) for k, (w, c) in times.items()})
        notes.append(f"{name}: {compare_predictions(outputs['stock'], outputs['seg_d2'])}")
    print("\n".join(notes))


def training_batches(cfg, dataset, count):
    mapper = DatasetMapper(cfg, is_train=True)  # the zoo config's resize: shortest side 640..800
    dicts = DatasetCatalog.get(dataset)
    n = cfg.SOLVER.IMS_PER_BATCH
    return [[mapper(copy.deepcopy(d)) for d in dicts[i * n:(i + 1) * n]] for i in range(count)]


def bench_training(rounds):
    print("\n| training step, s/iter (wall / cpu) | stock | seg_d2 | speed-up |\n|---|---:|---:|---:|")
    for name, (zoo_config, dataset) in MODELS.items():
        cfgs = {"stock": zoo_cfg(zoo_config, False), "seg_d2": zoo_cfg(zoo_config, True)}
        torch.manual_seed(0)
        models = {label: Trainer.build_model(cfg) for label, cfg in cfgs.items()}
        give_distinct_detections(models["stock"])  # also keeps random-weight training from diverging
        models["seg_d2"].load_state_dict(models["stock"].state_dict())
        optimizers = {label: build_optimizer(cfgs[label], model) for label, model in models.items()}
        batches = training_batches(cfgs["stock"], dataset, rounds + 1)
        remaining = {label: iter(batches[1:]) for label in models}
        first_losses = {}

        def step(label, batch):
            total = sum(models[label](batch).values())
            optimizers[label].zero_grad()
            total.backward()
            optimizers[label].step()
            first_losses.setdefault(label, total.item())

        with EventStorage():
            for label in models:  # warm-up, and the first losses: same weights, batch and sampled ROIs
                torch.manual_seed(0)
                step(label, batches[0])
            times = alternate({label: lambda label=label: step(label, next(remaining[label])) for label in models},
                              rounds)
        print_ratio_row(name, times)
        print(f"  first-step loss: stock {first_losses['stock']:.6f}, seg_d2 {first_losses['seg_d2']:.6f}")


def bench_threads(rounds, block):
    """Demo training in blocks of ``block`` iterations per thread setting, the settings in turn."""
    cfg = setup_cfg(DEMO_CONFIG, ["OUTPUT_DIR", os.path.join("output", "bench_speed_threads")])
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    default_threads = TORCH_DEFAULT_THREADS
    policy = ThreadPolicy(num_threads=0, period_s=0.0, max_threads=default_threads)
    settings = {"1 thread": lambda: torch.set_num_threads(1), "2 threads": lambda: torch.set_num_threads(2),
                f"torch default ({default_threads})": lambda: torch.set_num_threads(default_threads),
                "seg_d2 policy": policy.after_step}
    chosen = set()

    def run_block(name):
        settings[name]()
        if name == "seg_d2 policy":
            chosen.add(torch.get_num_threads())
        for _ in range(block):
            trainer._trainer.run_step()

    with EventStorage(0):
        for _ in range(3):
            trainer._trainer.run_step()  # warm-up
        times = alternate({name: lambda name=name: run_block(name) for name in settings}, rounds)
    print(f"\n| demo training, wall s/iter ({rounds} blocks of {block} iterations) | s/iter | vs 1 thread |")
    print("|---|---:|---:|")
    one = times["1 thread"][0]
    for name, (wall, _) in times.items():
        note = f" (chose {sorted(chosen)})" if name == "seg_d2 policy" else ""
        print(f"| {name}{note} | {wall / block:.3f} | {one / wall:.2f}× |")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


def matmul_gflops(size=1024, repeats=20):
    """This machine's single-thread float32 matmul rate (best of ``repeats``), the yardstick the project quotes
    beside every time so that a reader can scale it to their machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    a = torch.randn(size, size)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - start)
    torch.set_num_threads(threads)
    return 2 * size**3 / best / 1e9


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="alternations per comparison (default 5)")
    parser.add_argument("--images", type=int, default=2, help="images per inference round (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for parts 1-2 (default 1)")
    parser.add_argument("--only", choices=["inference", "training", "threads", "gflops"], help="run one part")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs, single-thread 1024² float32 matmul {matmul_gflops():.0f} GFLOPS")
    if args.only == "gflops":
        return
    if args.only in (None, "inference"):
        bench_inference(args.rounds, shapes_images(args.images))
    if args.only in (None, "training"):
        bench_training(args.rounds)
    if args.only in (None, "threads"):
        bench_threads(args.rounds, block=10)


if __name__ == "__main__":
    main()
