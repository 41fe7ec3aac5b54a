"""Helpers the model tests share, handed out as fixtures (pytest runs with --import-mode=importlib, so a
test file cannot import a helper module): ``semseg`` for the semantic models (test_semantic.py,
test_fcn_segformer.py), ``detector`` for the Mask R-CNN / panoptic models (test_mask_heads.py,
test_panoptic.py)."""
import copy

import numpy as np
import pytest
import torch

import seg_d2  # noqa: F401  (first: makes Detectron2 whole)
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, DatasetMapper, build_detection_train_loader
from detectron2.engine import DefaultPredictor
from detectron2.modeling import build_model
from detectron2.solver import build_optimizer
from detectron2.utils.events import EventStorage

from seg_d2.modeling.fast_inference import fold_norms


class SemSeg:
    """Build, train and evaluate a semantic model on the first images of its training set."""

    @staticmethod
    def model(cfg, seed=0):
        torch.manual_seed(seed)
        return build_model(cfg)

    @staticmethod
    def batch(cfg, n=2):
        """The first ``n`` training images, mapped as the trainer maps them (resize, flip, tensors)."""
        mapper = DatasetMapper(cfg, is_train=True)
        return [mapper(copy.deepcopy(d)) for d in DatasetCatalog.get(cfg.DATASETS.TRAIN[0])[:n]]

    @staticmethod
    def train(model, cfg, batch, iters):
        """``iters`` optimizer steps on ``batch``; the total loss of each."""
        torch.manual_seed(0)
        optimizer = build_optimizer(cfg, model)
        model.train()
        losses = []
        for _ in range(iters):
            loss = sum(model(batch).values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        return losses

    @staticmethod
    def eval(model, batch):
        """The stacked ``sem_seg`` outputs of ``model`` in eval mode on the images of ``batch``."""
        model.eval()
        with torch.no_grad():
            return torch.stack([r["sem_seg"] for r in model([{"image": x["image"]} for x in batch])])

    @classmethod
    def checkpoint_round_trip(cls, make_cfg, tmp_path):
        """Trains a model of ``make_cfg()`` one step, checkpoints it and loads the checkpoint into a
        DefaultPredictor of ``make_cfg("MODEL.WEIGHTS", ...)`` under another seed: asserts the loaded model
        predicts exactly as the trained one and a fresh one of that seed does not. Returns the predictor."""
        cfg = make_cfg()
        batch = cls.batch(cfg)
        model = cls.model(cfg)
        cls.train(model, cfg, batch, iters=1)  # moves weights and BN statistics off their initial values
        DetectionCheckpointer(model, save_dir=str(tmp_path)).save("model")
        if cfg.SEG_D2.FOLD_NORMS:
            fold_norms(model)  # as DefaultPredictor's model is: the same arithmetic, so bit for bit
        expected = cls.eval(model, batch)

        cfg = make_cfg("MODEL.WEIGHTS", str(tmp_path / "model.pth"))
        torch.manual_seed(1)  # another initialisation: the outputs differ unless the weights were loaded
        predictor = DefaultPredictor(cfg)
        assert torch.equal(cls.eval(predictor.model, batch), expected)
        assert not torch.equal(cls.eval(cls.model(cfg, seed=1), batch), expected)
        return predictor


class Detector:
    """Train a detector-based model (Mask R-CNN, panoptic) on one batch, checkpoint and reload it."""

    @staticmethod
    def train_on_one_batch(model, cfg, iters=6):
        """Fits one batch of the built-in data; (the last iteration's losses, the total loss per iteration)."""
        batch = next(iter(build_detection_train_loader(cfg)))
        optimizer = torch.optim.SGD(model.parameters(), lr=cfg.SOLVER.BASE_LR, momentum=0.9)
        totals = []
        with EventStorage():
            for _ in range(iters):
                losses = model(batch)
                total = sum(losses.values())
                optimizer.zero_grad()
                total.backward()
                optimizer.step()
                totals.append(total.item())
        return losses, totals

    @staticmethod
    def reload_and_predict(model, cfg, tmp_path):
        """Checkpoints ``model``, loads it into a DefaultPredictor (a fresh model of ``cfg``) and runs both
        models on one random 96x112 image: (predictor, the BGR image, model's output, the loaded model's)."""
        DetectionCheckpointer(model, save_dir=str(tmp_path)).save("model")
        cfg.MODEL.WEIGHTS = str(tmp_path / "model.pth")
        predictor = DefaultPredictor(cfg)  # builds a fresh model and loads the checkpoint
        image = np.random.default_rng(0).integers(0, 255, (96, 112, 3), dtype=np.uint8)
        inputs = [{"image": torch.as_tensor(image.transpose(2, 0, 1).astype("float32")), "height": 96, "width": 112}]
        model.eval()
        with torch.no_grad():
            return predictor, image, model(inputs)[0], predictor.model(inputs)[0]


@pytest.fixture
def semseg():
    return SemSeg


@pytest.fixture
def detector():
    return Detector
