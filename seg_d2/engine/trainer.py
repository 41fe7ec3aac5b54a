"""Detectron2's DefaultTrainer with seg_d2's evaluators and config set-up."""
import logging
import os

from detectron2.config import get_cfg
from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer, default_setup
from detectron2.evaluation import DatasetEvaluators
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng

from seg_d2.config import add_seg_d2_config
from seg_d2.config_checks import check_config
from seg_d2.data.config_datasets import register_datasets_from_config
from seg_d2.data.dataset_mappers import build_mapper
from seg_d2.evaluation import build_evaluators

from .amp import CPUAutocastTrainer
from .progress import training_hooks

__all__ = ["Trainer", "prepare_cfg", "setup_cfg"]


def prepare_cfg(cfg):
    """What must happen before a model or loader is built from ``cfg``: register the datasets it
    declares (DATASETS.REGISTER) and refuse settings that would be silently ignored. Idempotent."""
    register_datasets_from_config(cfg)
    check_config(cfg)


class Trainer(DefaultTrainer):
    """DefaultTrainer that picks evaluators by each test dataset's ``evaluator_type`` (mask AP, PQ,
    semantic metrics) and runs ``SOLVER.AMP.ENABLED`` on CPU as bfloat16 autocast."""

    def __init__(self, cfg):
        prepare_cfg(cfg)
        super().__init__(cfg)
        if cfg.SOLVER.AMP.ENABLED and cfg.MODEL.DEVICE == "cpu":
            logging.getLogger(__name__).info("SOLVER.AMP.ENABLED on CPU: training under bfloat16 autocast")
            # DefaultTrainer built an AMPTrainer (CUDA-only run_step); keep its state and data iterator.
            self._trainer.__class__ = CPUAutocastTrainer

    def build_hooks(self):
        return training_hooks(self.cfg, super().build_hooks())

    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=build_mapper(cfg, is_train=True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(cfg, dataset_name, mapper=build_mapper(cfg, is_train=False))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return DatasetEvaluators(build_evaluators(cfg, dataset_name, output_folder))


def setup_cfg(config_file, opts=(), args=None):
    """A frozen config: Detectron2 defaults + seg_d2 keys + the file + command-line overrides.

    Seeds the RNGs with ``cfg.SEED`` (+ rank) as Detectron2's ``default_setup`` does; with ``args``
    (parsed command line) runs ``default_setup`` itself (also logging, output dir, config dump).
    """
    cfg = get_cfg()
    add_seg_d2_config(cfg)
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"--config-file {config_file}: no such file")
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    cfg.freeze()
    prepare_cfg(cfg)
    if args is not None:
        default_setup(cfg, args)
    else:
        seed_all_rng(None if cfg.SEED < 0 else cfg.SEED + comm.get_rank())
    return cfg
