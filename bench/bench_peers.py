#!/usr/bin/env python
"""seg_d2's semantic models beside segmentation_models_pytorch's Unet, on the same data, metric and CPU budget.

segmentation_models_pytorch (smp) is what many users pick instead; it is a peer, not a dependency: this
script runs in its own environment (.cache/bench-peers-venv, made on first use from
bench/requirements-peers.txt, reusing .venv's torch), never in .venv.

Every model trains on the built-in seg_d2_shapes_train_sem_seg through seg_d2's Trainer (same data loader,
SGD schedule of configs/builtin/semantic_base_shapes.yaml, seed) for the same CPU-time budget: each
model's CPU s/iter is measured first (alternated), then it gets budget / (s/iter) iterations. mIoU comes
from seg_d2's SemSegMetricsEvaluator on seg_d2_shapes_val_sem_seg for all. smp's Unet is wrapped as a
Detectron2 meta-architecture here (no encoder weights: nothing is downloaded; CE loss, ignore 255).

    python bench/bench_peers.py                  # the table in docs/speed.md
    python bench/bench_peers.py --budget-s 20    # a quick look
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PEERS_VENV = os.path.join(ROOT, ".cache", "bench-peers-venv")
PEERS_PYTHON = os.path.join(PEERS_VENV, "bin", "python")


def ensure_peers_environment():
    """Re-runs this script in the peers' environment, creating it first: a venv whose site-packages also
    see .venv's (a .pth file; seg_d2's editable install included), so only the peers and what .venv lacks
    are installed there."""
    if os.path.realpath(sys.prefix) == os.path.realpath(PEERS_VENV):
        return
    if not os.path.exists(PEERS_PYTHON):
        subprocess.run([sys.executable, "-m", "venv", PEERS_VENV], check=True)
        purelib = subprocess.run([PEERS_PYTHON, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 check=True, capture_output=True, text=True).stdout.strip()
        import sysconfig

        with open(os.path.join(purelib, "seg_d2_venv.pth"), "w") as f:  # addsitedir: .venv's own .pth files too
            f.write(f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n")
    subprocess.run([PEERS_PYTHON, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r",
                    os.path.join(HERE, "requirements-peers.txt")], check=True)
    os.execv(PEERS_PYTHON, [PEERS_PYTHON, *sys.argv])


SEMANTIC_MODELS = {  # name: config in configs/builtin ("smp:<encoder>": smp's Unet on semantic_base_shapes.yaml)
    "smp Unet, ResNet-18 encoder": "smp:resnet18",
    "smp Unet, ResNet-34 encoder": "smp:resnet34",
    "seg_d2 U-Net (UNetSegmentor)": "semantic_unet.yaml",
    "seg_d2 UNetHead on R18-FPN": "semantic_unet_head_R18.yaml",
    "seg_d2 SegFormer-B0": "segformer_b0.yaml",
}


def register_smp_unets(encoders):
    """One Detectron2 meta-architecture per smp encoder, "BenchSMPUnet_<encoder>": smp.Unet (no encoder
    weights) on Detectron2's batched inputs, CE loss with MODEL.SEM_SEG_HEAD.IGNORE_VALUE."""
    import segmentation_models_pytorch as smp
    import torch
    import torch.nn.functional as F
    from detectron2.modeling import META_ARCH_REGISTRY
    from detectron2.modeling.postprocessing import sem_seg_postprocess
    from detectron2.structures import ImageList

    class SMPUnet(torch.nn.Module):
        encoder = None

        def __init__(self, cfg):
            super().__init__()
            self.net = smp.Unet(encoder_name=self.encoder, encoder_weights=None,
                                classes=cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES)
            self.ignore_value = cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE
            self.register_buffer("pixel_mean", torch.tensor(cfg.MODEL.PIXEL_MEAN).view(-1, 1, 1), False)
            self.register_buffer("pixel_std", torch.tensor(cfg.MODEL.PIXEL_STD).view(-1, 1, 1), False)

        def forward(self, batched_inputs):
            images = ImageList.from_tensors([(x["image"] - self.pixel_mean) / self.pixel_std
                                             for x in batched_inputs], size_divisibility=32)
            logits = self.net(images.tensor)
            if self.training:
                targets = ImageList.from_tensors([x["sem_seg"] for x in batched_inputs], 32, self.ignore_value)
                return {"loss_sem_seg": F.cross_entropy(logits, targets.tensor, ignore_index=self.ignore_value)}
            return [{"sem_seg": sem_seg_postprocess(logit, size, x.get("height", size[0]), x.get("width", size[1]))}
                    for logit, size, x in zip(logits, images.image_sizes, batched_inputs)]

    for encoder in encoders:
        META_ARCH_REGISTRY.register(type(f"BenchSMPUnet_{encoder}", (SMPUnet,), {"encoder": encoder}))


def semantic_configs():
    """{name: (config file, opts)} of SEMANTIC_MODELS."""
    configs = os.path.join(ROOT, "configs", "builtin")
    out = {}
    for name, config in SEMANTIC_MODELS.items():
        if config.startswith("smp:"):
            out[name] = (os.path.join(configs, "semantic_base_shapes.yaml"),
                         ["MODEL.META_ARCHITECTURE", f"BenchSMPUnet_{config[4:]}"])
        else:
            out[name] = (os.path.join(configs, config), [])
    return out


def cpu_seconds_per_iter(configs, iters=8, warmup=3):
    """Training CPU s/iter of each config, the models stepped in turn (alternated) after a warm-up."""
    from detectron2.utils.events import EventStorage

    from seg_d2.engine import Trainer, setup_cfg

    trainers = {}
    for name, (config, opts) in configs.items():
        cfg = setup_cfg(config, [*opts, "OUTPUT_DIR", tempfile.mkdtemp()])
        trainers[name] = Trainer(cfg)._trainer
    spent = {name: 0.0 for name in trainers}
    with EventStorage(0):
        for i in range(warmup + iters):
            for name, trainer in trainers.items():
                start = time.process_time()
                trainer.run_step()
                if i >= warmup:
                    spent[name] += time.process_time() - start
    return {name: s / iters for name, s in spent.items()}


def run_semantic(budget_s, threads):
    import seg_d2  # noqa: F401  (first: makes Detectron2 whole and registers seg_d2)
    import torch

    import bench_common

    torch.set_num_threads(threads)
    register_smp_unets([c[4:] for c in SEMANTIC_MODELS.values() if c.startswith("smp:")])
    configs = semantic_configs()
    per_iter = cpu_seconds_per_iter(configs)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (config, opts) in configs.items():
            iters = max(10, int(budget_s / per_iter[name]))
            trainer, metrics, _ = bench_common.train(config, iters, os.path.join(tmp, str(len(rows))), opts)
            inference = time_inference(trainer)
            params = sum(p.numel() for p in trainer.model.parameters())
            rows.append((name, metrics["sem_seg/mIoU"][0], iters, per_iter[name], inference, params))
            print(f"{name}: mIoU {rows[-1][1]:.1f} after {iters} iterations", flush=True)
    print(f"\nCPU budget {budget_s:.0f} s of training per model, batch 4 at 128 px, {threads} thread(s); "
          "mIoU on seg_d2_shapes_val_sem_seg (seg_d2's SemSegMetricsEvaluator)\n")
    print("| model | params | train CPU s/iter | iterations in budget | mIoU | inference CPU ms/image |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, miou, iters, s_iter, inference, params in rows:
        print(f"| {name} | {params / 1e6:.2f} M | {s_iter:.3f} | {iters} | {miou:.1f} | {inference * 1e3:.1f} |")


def time_inference(trainer, images=20):
    """CPU seconds per image of the trained model in eval mode on the first validation images."""
    import torch
    from detectron2.data import DatasetCatalog
    from detectron2.data.detection_utils import read_image

    model = trainer.model.eval()
    dicts = DatasetCatalog.get(trainer.cfg.DATASETS.TEST[0])[:images]
    images = [read_image(d["file_name"], format=trainer.cfg.INPUT.FORMAT) for d in dicts]  # test size: as stored
    inputs = [{"image": torch.as_tensor(image.transpose(2, 0, 1).copy())} for image in images]
    with torch.no_grad():
        model([inputs[0]])
        start = time.process_time()
        for x in inputs:
            model([x])
        return (time.process_time() - start) / len(inputs)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget-s", type=float, default=120.0, help="CPU seconds of training per model")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args()
    ensure_peers_environment()
    run_semantic(args.budget_s, args.threads)


if __name__ == "__main__":
    main()
