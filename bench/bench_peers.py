#!/usr/bin/env python
"""seg_d2's models beside the peers users pick instead, on the same data, metric and CPU budget:
segmentation_models_pytorch's Unet (semantic) and Ultralytics' YOLO-seg (instance).

The peers are not dependencies: this script runs in its own environment (.cache/bench-peers-venv, made on
first use from bench/requirements-peers.txt, reusing .venv's torch), never in .venv.

Semantic: every model trains on the built-in seg_d2_shapes_train_sem_seg through seg_d2's Trainer (same data
loader, SGD schedule of configs/builtin/semantic_base_shapes.yaml, seed) for the same CPU-time budget: each
model's CPU s/iter is measured first (alternated), then it gets budget / (s/iter) iterations. mIoU comes
from seg_d2's SemSegMetricsEvaluator on seg_d2_shapes_val_sem_seg for all. smp's Unet is wrapped as a
Detectron2 meta-architecture here (no encoder weights: nothing is downloaded; CE loss, ignore 255).

Instance: seg_d2's Mask R-CNN variants (configs/builtin/mask_rcnn_R18_shapes*.yaml) through bench_common.train
and Ultralytics' YOLO-seg n models built from their yaml (no weights), trained with Ultralytics' own recipe
(its defaults but for 128 px images, CPU, no dataloader workers, AMP, plots or per-epoch validation) on
seg_d2_shapes_train in YOLO-seg form (seg_d2's COCO -> YOLO-seg converter). Each model's training steps (data
loading included) are timed in CPU s as it trains, and a run that misses the budget by over 10% is run again
with its iterations (Mask R-CNN; first guess: budget / the s/iter measured as above) or epochs (YOLO; first
guess: one) scaled to fit; the table shows what the kept run spent. Every model's masks on
seg_d2_shapes_val, at the image size, become COCO RLE results scored by pycocotools' COCOeval (segm).
Ultralytics runs offline (YOLO_OFFLINE, no auto-install, amp=False: no AMP check, its font download skipped)
and after seg_d2's models; any network use fails the run.

    python bench/bench_peers.py                                  # both tables in docs/speed.md
    python bench/bench_peers.py --only instance --budget-s 60    # the instance table alone
    python bench/bench_peers.py --budget-s 20                    # a quick look
"""
import argparse
import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import traceback

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


INSTANCE_MODELS = {  # name: config in configs/builtin ("yolo:<yaml>": Ultralytics' model from its yaml), run in order
    "seg_d2 Mask R-CNN R18-FPN (stock BCE mask loss)": "mask_rcnn_R18_shapes.yaml",
    "seg_d2 Mask R-CNN R18-FPN, BCE + Dice mask loss": "mask_rcnn_R18_shapes_bce_dice.yaml",
    "seg_d2 Mask Scoring R-CNN R18-FPN": "mask_rcnn_R18_shapes_scoring.yaml",
    "Ultralytics YOLOv8n-seg": "yolo:yolov8n-seg.yaml",  # last: importing ultralytics changes process state
    "Ultralytics YOLO26n-seg": "yolo:yolo26n-seg.yaml",  # 8.4's current n-seg
}
YOLO_BATCH = 16  # Ultralytics' default


def forbid_network():
    """Makes every name lookup and IP connection of this process fail, recording them (with the calls that
    made them): the list returned."""
    attempts = []

    def refuse(what):
        attempts.append(f"{what}, from:\n" + "".join(traceback.format_stack(limit=14)[:-2]))
        raise OSError(f"bench_peers: no network ({what})")

    connect = socket.socket.connect

    def checked_connect(sock, address):
        return refuse(address) if sock.family in (socket.AF_INET, socket.AF_INET6) else connect(sock, address)

    socket.socket.connect = checked_connect
    socket.socket.connect_ex = lambda sock, address: refuse(address)
    socket.getaddrinfo = lambda host, *args, **kwargs: refuse(host)
    return attempts


def write_yolo_dataset(folder):
    """seg_d2_shapes_train / _val in YOLO-seg form under ``folder``: images linked, labels by seg_d2's
    COCO -> YOLO-seg converter. (the data yaml, YOLO class index -> COCO category id)."""
    from seg_d2.data import converters
    from seg_d2.data.builtin import dataset_paths, ensure_builtin_data

    root = ensure_builtin_data()
    for split in ("train", "val"):
        paths = dataset_paths(root, split)
        coco = converters.read_json(paths["json_file"], ("images", "annotations", "categories"))
        os.makedirs(os.path.join(folder, "images", split))
        for image in coco["images"]:  # one link a file: Ultralytics resolves a linked folder, then misses labels/
            os.symlink(os.path.join(paths["image_root"], image["file_name"]),
                       os.path.join(folder, "images", split, image["file_name"]))
        names = converters.coco_to_yolo(coco, os.path.join(folder, "labels", split))
    data = os.path.join(folder, "data.yaml")
    with open(data, "w") as f:  # JSON is YAML
        json.dump({"path": folder, "train": "images/train", "val": "images/val", "names": dict(enumerate(names))}, f)
    return data, sorted(c["id"] for c in coco["categories"])


def coco_results(image_id, masks, scores, category_ids):
    """COCO results (compressed RLE) of one image's boolean (N, H, W) masks at the image size."""
    from seg_d2.data.converters import mask_to_rle

    return [{"image_id": image_id, "category_id": int(c), "score": float(s), "segmentation": mask_to_rle(m)}
            for m, s, c in zip(masks, scores, category_ids)]


def mask_ap(json_file, results):
    """(AP, AP50) of COCO results against ``json_file``, by pycocotools' COCOeval (segm), in %."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not results:
        return 0.0, 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(json_file)
        evaluation = COCOeval(truth, truth.loadRes(results), "segm")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation.stats[0] * 100, evaluation.stats[1] * 100


def score_on_val(predict):
    """``predict(BGR image) -> (masks, scores, COCO category ids)`` on seg_d2_shapes_val: ((AP, AP50) by
    :func:`mask_ap`, CPU s/image of ``predict`` after one warm-up call)."""
    from seg_d2.data.builtin import dataset_paths, ensure_builtin_data
    from seg_d2.data.converters import read_json
    from seg_d2.data.image_io import read_image

    paths = dataset_paths(ensure_builtin_data(), "val")
    images = [(image["id"], read_image(os.path.join(paths["image_root"], image["file_name"]), format="BGR"))
              for image in read_json(paths["json_file"], ("images",))["images"]]
    predict(images[0][1])
    results, spent = [], 0.0
    for image_id, image in images:
        start = time.process_time()
        prediction = predict(image)
        spent += time.process_time() - start
        results += coco_results(image_id, *prediction)
    return mask_ap(paths["json_file"], results), spent / len(images)


def mask_rcnn_predictor(trainer):
    import torch
    from detectron2.data import MetadataCatalog

    model = trainer.model.eval()
    to_id = {v: k for k, v in MetadataCatalog.get(trainer.cfg.DATASETS.TRAIN[0])
             .thing_dataset_id_to_contiguous_id.items()}

    def predict(image):
        with torch.no_grad():
            x = {"image": torch.as_tensor(image.transpose(2, 0, 1).copy()), "height": image.shape[0],
                 "width": image.shape[1]}
            instances = model([x])[0]["instances"]
        return instances.pred_masks.numpy(), instances.scores.numpy(), [to_id[int(c)] for c in instances.pred_classes]

    return predict


def train_yolo(model_yaml, data, epochs, output_dir, threads):
    """Ultralytics' ``model_yaml`` (no weights) trained with its own recipe on ``data`` for ``epochs``: (YOLO of
    the final weights, iterations), CPU s of the training batches with their data loading. Ultralytics is
    imported here, set up to reach no network."""
    os.environ.update(YOLO_OFFLINE="1", YOLO_AUTOINSTALL="false", YOLO_VERBOSE="false",
                      YOLO_CONFIG_DIR=os.path.join(output_dir, "settings"))  # read on the first import only
    import torch
    import ultralytics.data.utils
    from ultralytics import YOLO

    # 8.4.190's check_det_dataset fetches Arial.ttf whatever plots= and YOLO_OFFLINE say; nothing here draws
    ultralytics.data.utils.check_font = lambda *args, **kwargs: None
    model, spent, clock = YOLO(model_yaml), [], [0.0]

    def on_train_start(trainer):
        torch.set_num_threads(threads)  # select_device set Ultralytics' own count

    def on_train_epoch_start(trainer):
        clock[0] = time.process_time()

    def on_train_batch_end(trainer):
        spent.append(time.process_time() - clock[0])
        clock[0] = time.process_time()

    for callback in (on_train_start, on_train_epoch_start, on_train_batch_end):
        model.add_callback(callback.__name__, callback)
    model.train(data=data, epochs=epochs, imgsz=128, batch=YOLO_BATCH, workers=0, device="cpu", amp=False,
                plots=False, val=False, project=output_dir, name="train", exist_ok=True, seed=0)
    return (YOLO(str(model.trainer.last)), len(spent)), sum(spent)


def fit_budget(train, budget_s, n, tries=3, tolerance=0.1):
    """``train(n) -> (result, training CPU s)`` run again with ``n`` scaled by budget_s / the CPU s spent
    until a run spends ``budget_s`` ± ``tolerance`` (a short probe's cost per iteration or epoch misses:
    Mask R-CNN's grows as its RPN finds more objects, YOLO's changes with mosaic), ``tries`` runs at most:
    (result, CPU s, n) of the last run."""
    result, spent = train(n)
    for _ in range(tries - 1):
        scaled = max(1, round(n * budget_s / spent))
        if abs(spent - budget_s) <= tolerance * budget_s or scaled == n:
            break
        n = scaled
        result, spent = train(n)
    return result, spent, n


def yolo_predictor(model, category_ids, threads):
    import torch

    def predict(image):  # Ultralytics' validation settings (conf 0.001, NMS IoU 0.7); masks at the image size
        result = model.predict(image, imgsz=128, conf=0.001, iou=0.7, max_det=100, retina_masks=True,
                               device="cpu", verbose=False)[0]
        torch.set_num_threads(threads)  # the predictor's select_device set Ultralytics' own count
        if result.masks is None:
            return [], [], []
        return (result.masks.data.numpy() > 0.5, result.boxes.conf.numpy(),
                [category_ids[int(c)] for c in result.boxes.cls])

    return predict


def train_mask_rcnn(config_file, iters, output_dir):
    """``config_file`` trained for ``iters`` by bench_common.train: (trainer, its metrics), the CPU s of its
    training steps (data loading included, the evaluation after the last step not)."""
    from detectron2.engine import HookBase

    import bench_common
    from seg_d2.engine import Trainer

    class StepCPUTime(HookBase):
        def before_step(self):
            self.start = time.process_time()

        def after_step(self):
            self.trainer.cpu_s += time.process_time() - self.start

    class CPUTimedTrainer(Trainer):
        cpu_s = 0.0

        def build_hooks(self):
            return [StepCPUTime(), *super().build_hooks()]  # first: its after_step runs before the evaluation

    trainer, metrics, _ = bench_common.train(config_file, iters, output_dir, trainer_class=CPUTimedTrainer)
    return (trainer, metrics), trainer.cpu_s


def run_instance(budget_s, threads):
    import seg_d2  # noqa: F401  (first: makes Detectron2 whole and registers seg_d2)
    import torch

    torch.set_num_threads(threads)
    attempts = forbid_network()
    configs = {name: (os.path.join(ROOT, "configs", "builtin", config), [])
               for name, config in INSTANCE_MODELS.items() if not config.startswith("yolo:")}
    per_iter, rows = cpu_seconds_per_iter(configs), []
    with tempfile.TemporaryDirectory() as tmp:
        data, category_ids = write_yolo_dataset(os.path.join(tmp, "yolo_data"))
        for name, config in INSTANCE_MODELS.items():
            output_dir = os.path.join(tmp, str(len(rows)))
            if config.startswith("yolo:"):
                (model, iters), spent, _ = fit_budget(lambda epochs: train_yolo(  # a first epoch as the probe
                    config[5:], data, epochs, os.path.join(output_dir, str(epochs)), threads), budget_s, 1)
                predict, batch = yolo_predictor(model, category_ids, threads), YOLO_BATCH
                params, check = sum(p.numel() for p in model.model.parameters()), ""
            else:
                (trainer, metrics), spent, iters = fit_budget(lambda iters: train_mask_rcnn(
                    configs[name][0], iters, os.path.join(output_dir, str(iters))), budget_s,
                    max(10, int(budget_s / per_iter[name])))
                predict, batch = mask_rcnn_predictor(trainer), trainer.cfg.SOLVER.IMS_PER_BATCH
                params = sum(p.numel() for p in trainer.model.parameters())
                check = f" (Detectron2's COCOEvaluator: {metrics['segm/AP'][0]:.2f})"
            (ap, ap50), inference = score_on_val(predict)
            rows.append((name, params, iters, batch, spent, ap, ap50, inference))
            print(f"{name}: mask AP {ap:.2f}{check} after {iters} iterations, {spent:.0f} CPU s", flush=True)
    if attempts:
        raise SystemExit("network use attempted (refused): " + "\n".join(attempts))
    print(f"\nCPU budget {budget_s:.0f} s of training per model at 128 px, {threads} thread(s); mask AP on "
          "seg_d2_shapes_val by pycocotools (COCOeval segm, RLE at the image size); no network use\n")
    print("| model | params | iterations × batch | train CPU s | train CPU ms/image | mask AP | mask AP50 "
          "| inference CPU ms/image |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, params, iters, batch, spent, ap, ap50, inference in rows:
        print(f"| {name} | {params / 1e6:.2f} M | {iters} × {batch} | {spent:.0f} | {spent / iters / batch * 1e3:.1f} "
              f"| {ap:.1f} | {ap50:.1f} | {inference * 1e3:.1f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget-s", type=float, default=120.0, help="CPU seconds of training per model")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--only", choices=("semantic", "instance"), help="one table (default both)")
    args = parser.parse_args()
    ensure_peers_environment()
    if args.only != "instance":
        run_semantic(args.budget_s, args.threads)
    if args.only != "semantic":
        run_instance(args.budget_s, args.threads)


if __name__ == "__main__":
    main()
