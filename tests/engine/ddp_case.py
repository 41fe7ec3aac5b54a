"""Train or evaluate a small semantic model on 1 or 2 CPU processes, for tests/engine/test_ddp.py.

    python ddp_case.py train OUT_DIR NUM_PROCESSES
    python ddp_case.py resume OUT_DIR NUM_PROCESSES      # from OUT_DIR's last checkpoint
    python ddp_case.py eval OUT_DIR NUM_PROCESSES WEIGHTS

Uses the built-in semantic data restricted to images with no ignored pixel: each rank's loss is then a
mean over the same number of pixels, so DDP's average of per-rank gradients equals the gradient of
one process's mean over the whole batch.
"""
import json
import os
import sys

import seg_d2  # noqa: F401

import numpy as np
from PIL import Image

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils import comm

from seg_d2.engine import Trainer, launch, setup_cfg

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs", "builtin", "semantic_unet.yaml")


def _register_without_ignored_pixels(source, name):
    def load():
        dicts = DatasetCatalog.get(source)
        return [d for d in dicts if not (np.asarray(Image.open(d["sem_seg_file_name"])) == 255).any()][:8]

    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, load)
        MetadataCatalog.get(name).set(**{k: v for k, v in MetadataCatalog.get(source).as_dict().items() if k != "name"})


def _cfg(out_dir, test_sets="()"):
    _register_without_ignored_pixels("seg_d2_shapes_train_sem_seg", "ddp_case_train")
    _register_without_ignored_pixels("seg_d2_shapes_val_sem_seg", "ddp_case_val")
    opts = [
        "OUTPUT_DIR", out_dir, "DATASETS.TRAIN", "('ddp_case_train',)", "DATASETS.TEST", test_sets,
        # no normalisation: BatchNorm statistics would differ between 1x2 and 2x1 images, and a
        # from-scratch GroupNorm net is chaotic (a 1e-6 weight change moves gradients by ~3%), which
        # would amplify the expected float32 summation-order noise beyond any meaningful tolerance.
        "MODEL.UNET.NORM", "", "MODEL.UNET.DEPTH", "2", "MODEL.UNET.BASE_CHANNELS", "8",
        "INPUT.RANDOM_FLIP", "none", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "3",
        "SOLVER.WARMUP_ITERS", "0", "SOLVER.BASE_LR", "0.05", "SOLVER.CHECKPOINT_PERIOD", "1",
    ]
    return setup_cfg(CONFIG, opts)  # seeds as tools/train_net.py does (rank 0's model is broadcast)


def train(out_dir, resume=False):
    trainer = Trainer(_cfg(out_dir))
    trainer.resume_or_load(resume=resume)
    trainer.train()


def evaluate(out_dir, weights):
    cfg = _cfg(out_dir, "('ddp_case_val',)")
    model = Trainer.build_model(cfg)
    DetectionCheckpointer(model).load(weights)
    results = Trainer.test(cfg, model)
    if comm.is_main_process():
        with open(os.path.join(out_dir, "results.json"), "w") as f:
            json.dump(results, f)


if __name__ == "__main__":
    mode, out, processes = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode in ("train", "resume"):
        launch(train, processes, args=(out, mode == "resume"))
    else:
        launch(evaluate, processes, args=(out, sys.argv[4]))
