"""Detectron2's DefaultTrainer with seg_d2's evaluators, config set-up, exact resume and fault-tolerant checkpoints."""
import logging
import os
import weakref

from detectron2.config import get_cfg
from detectron2.data import build_detection_test_loader
from detectron2.engine import DefaultTrainer, default_setup, hooks
from detectron2.evaluation import DatasetEvaluators
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng

from seg_d2.config import add_seg_d2_config
from seg_d2.config_checks import check_config
from seg_d2.data.config_datasets import register_datasets_from_config
from seg_d2.data.dataset_mappers import build_mapper
from seg_d2.data.samplers import ResumableTrainLoader, run_seed
from seg_d2.evaluation import build_evaluators

from .amp import CPUAutocastTrainer
from .checkpoint import FaultTolerantCheckpointer
from .hooks import PeriodicCheckpointer, ReseedEachIteration, SkippedSamplesReport
from .progress import training_hooks
from .threads import ThreadPolicy

__all__ = ["Trainer", "prepare_cfg", "setup_cfg"]


def prepare_cfg(cfg):
    """What must happen before a model or loader is built from ``cfg``: register the datasets it
    declares (DATASETS.REGISTER) and refuse settings that would be silently ignored. Idempotent."""
    register_datasets_from_config(cfg)
    check_config(cfg)


class Trainer(DefaultTrainer):
    """DefaultTrainer that picks evaluators by each test dataset's ``evaluator_type`` (mask AP, PQ,
    semantic metrics), runs ``SOLVER.AMP.ENABLED`` on CPU as bfloat16 autocast, and resumes exactly.

    Exact resume: the checkpoint holds the model, the optimizer (and AMP grad scaler), the scheduler, the
    iteration, the run seed and every process's training-stream position (:class:`ResumableTrainLoader`); each
    iteration reseeds the global RNGs (:class:`ReseedEachIteration`). A run killed at any point and resumed ends
    with the weights and metrics of an uninterrupted one, bit for bit on CPU with the same thread count.
    Checkpoints are written atomically and resume falls back past broken ones (:class:`FaultTolerantCheckpointer`).
    """

    def __init__(self, cfg):
        prepare_cfg(cfg)
        super().__init__(cfg)
        if cfg.SOLVER.AMP.ENABLED and cfg.MODEL.DEVICE == "cpu":
            logging.getLogger(__name__).info("SOLVER.AMP.ENABLED on CPU: training under bfloat16 autocast")
            # DefaultTrainer built an AMPTrainer (CUDA-only run_step); keep its state and data iterator.
            self._trainer.__class__ = CPUAutocastTrainer
        # DefaultTrainer builds a plain DetectionCheckpointer inline; only our hooks use this attribute.
        self.checkpointer = FaultTolerantCheckpointer(self.checkpointer.model, cfg.OUTPUT_DIR,
                                                      trainer=weakref.proxy(self))

    def build_hooks(self):
        """DefaultTrainer's hooks, with the iteration reseeding first, seg_d2's checkpointer in place of
        Detectron2's (on every process), and the skipped-samples report before the writers' last write."""
        built = [h for h in super().build_hooks() if not isinstance(h, hooks.PeriodicCheckpointer)]
        self._data_streams = self._resumable_data_streams(built)
        self._gathered_data_states = None
        evaluation = next(i for i, h in enumerate(built) if isinstance(h, hooks.EvalHook))
        built.insert(evaluation, PeriodicCheckpointer(self.cfg.SOLVER.CHECKPOINT_PERIOD, self.cfg.SOLVER.CHECKPOINT_KEEP))
        writers = next((i for i, h in enumerate(built) if isinstance(h, hooks.PeriodicWriter)), len(built))
        built.insert(writers, SkippedSamplesReport())
        built.insert(0, ReseedEachIteration(run_seed(self.cfg)))
        self._thread_policy = ThreadPolicy(self.cfg.SEG_D2.NUM_THREADS)
        built.append(self._thread_policy)  # last: its after_train follows evaluation
        return training_hooks(self.cfg, built)

    def _resumable_data_streams(self, built_hooks):
        """{name: loader} of the training data streams whose positions go into checkpoints."""
        streams = {"train": self.data_loader}
        # PreciseBN reads its own training loader (Detectron2 keeps it in _data_loader)
        streams.update({"precise_bn": h._data_loader for h in built_hooks if isinstance(h, hooks.PreciseBN)})
        for name, loader in list(streams.items()):
            if not isinstance(loader, ResumableTrainLoader):
                logging.getLogger(__name__).warning(f"The {name!r} data loader is not a ResumableTrainLoader: "
                                                    "--resume restarts its stream, so a resumed run is not exact")
                del streams[name]
        return streams

    def _own_data_states(self):
        return {name: loader.state_dict() for name, loader in self._data_streams.items()}

    def collect_data_states(self):
        """Gather every process's data-stream states for the next checkpoint (a collective when distributed)."""
        own = self._own_data_states()
        self._gathered_data_states = (self.iter, comm.all_gather(own) if comm.get_world_size() > 1 else [own])

    def _data_states(self):
        """One {stream name: state} per process (None where this process does not know it)."""
        if comm.get_world_size() == 1:
            return [self._own_data_states()]
        if self._gathered_data_states is not None and self._gathered_data_states[0] == self.iter:
            return self._gathered_data_states[1]
        return [self._own_data_states()] + [None] * (comm.get_world_size() - 1)  # saved outside the schedule

    def skipped_samples(self):
        """Every process's skipped training samples (as of the last gathering when distributed)."""
        gathered = comm.get_world_size() > 1 and self._gathered_data_states is not None
        states = self._gathered_data_states[1] if gathered else [self._own_data_states()]
        return [entry for state in states if state and "train" in state for entry in state["train"]["skipped"]]

    def state_dict(self):
        state = super().state_dict()  # iteration, hooks (scheduler, run seed)
        # This Detectron2 build's DefaultTrainer leaves the optimizer (momentum!) and AMP grad scaler out.
        state["_trainer"] = self._trainer.state_dict()
        state["data"] = self._data_states()
        state["torch_threads"] = self._thread_policy.threads  # None: it follows the load
        return state

    def load_state_dict(self, state_dict):
        logger = logging.getLogger(__name__)
        super().load_state_dict(state_dict)
        if "_trainer" in state_dict:
            self._trainer.load_state_dict(state_dict["_trainer"])
        else:
            logger.warning("The checkpoint holds no optimizer state (an older seg_d2 wrote it): the optimizer "
                           "restarts, so this resume is not exact")
        states = state_dict.get("data") or []
        own = states[comm.get_rank()] if comm.get_rank() < len(states) else None
        for name, loader in self._data_streams.items():
            if own and name in own:
                loader.load_state_dict(own[name])
            else:
                logger.warning(f"The checkpoint holds no state of the {name!r} data stream of process "
                               f"{comm.get_rank()}: it restarts from its beginning, so this resume is not exact")
        if self.cfg.MODEL.DEVICE == "cpu":
            self._resume_thread_count(state_dict)

    def _resume_thread_count(self, state_dict):
        """On CPU, a reduction split over another number of threads sums in another order (a U-Net trained 6
        iterations with 1 and with 2 threads: 50 of 66 tensors differ, by up to 3e-7, and it grows). The policy
        keeps the count of the run that wrote the checkpoint unless the user fixed another or it follows the load."""
        before = state_dict.get("torch_threads")  # None: older seg_d2, or that run followed the load
        self._thread_policy.resume_with(before)
        now = self._thread_policy.threads
        if now is None:
            reason = "follows the machine's load (SEG_D2.NUM_THREADS -1)"
        elif before is not None and before != now:
            reason = f"was {before} in the run that wrote the checkpoint and is {now} now"
        else:
            return
        logging.getLogger(__name__).warning(
            f"The number of torch CPU threads {reason}: this resume may differ from an uninterrupted run in the last "
            "bits, which training amplifies; keep SEG_D2.NUM_THREADS 0 (or the same N) for a bit-exact resume")

    @classmethod
    def build_train_loader(cls, cfg):
        return ResumableTrainLoader(cfg, mapper=build_mapper(cfg, is_train=True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(cfg, dataset_name, mapper=build_mapper(cfg, is_train=False))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return DatasetEvaluators(build_evaluators(cfg, dataset_name, output_folder))


def _add_projects_config(cfg):
    """The keys of the Detectron2 projects seg_d2's build ships (PointRend, DeepLab, Panoptic-DeepLab;
    configs/projects/), as their own train_net.py adds them, so seg_d2's tools read their configs too. They
    are new keys only: no stock or seg_d2 default changes."""
    from detectron2.projects import deeplab, panoptic_deeplab, point_rend

    for add_project_config in (point_rend.add_pointrend_config, deeplab.add_deeplab_config,
                               panoptic_deeplab.add_panoptic_deeplab_config):
        add_project_config(cfg)


def setup_cfg(config_file, opts=(), args=None):
    """A frozen config: Detectron2 defaults + seg_d2 keys (+ those of Detectron2's projects) + the file +
    command-line overrides.

    Seeds the RNGs with ``cfg.SEED`` (+ rank) as Detectron2's ``default_setup`` does; with ``args``
    (parsed command line) runs ``default_setup`` itself (also logging, output dir, config dump).
    """
    cfg = get_cfg()
    add_seg_d2_config(cfg)
    _add_projects_config(cfg)
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
