"""Hooks of seg_d2's Trainer for exact resume, checkpoints that survive faults and skipped samples.

They need a :class:`seg_d2.engine.Trainer` (its ``checkpointer``, ``collect_data_states`` and
``skipped_samples``), except :class:`ReseedEachIteration`, which any Detectron2 trainer can use.
"""
import json
import logging
import os
import re

from detectron2.engine import HookBase
from detectron2.utils import comm

from seg_d2.data.dataset_mappers.skip_bad_samples import describe_sample
from seg_d2.data.samplers import SeedUse, derive_seed, seed_global_rngs

from .checkpoint import atomic_write, remove_checkpoint

__all__ = ["PeriodicCheckpointer", "ReseedEachIteration", "SkippedSamplesReport"]

logger = logging.getLogger(__name__)


class ReseedEachIteration(HookBase):
    """Before every iteration, seed python, numpy and torch from (run seed, rank, iteration).

    What an iteration draws (ROI sampling, dropout, ...) then depends on nothing that ran before it: not on an
    evaluation, a hook or a DataLoader iterator made in between. A resumed run, which ran none of those, draws
    the same. The run seed is this hook's state, so it is in every checkpoint.
    """

    def __init__(self, seed):
        self.seed = seed

    def before_step(self):
        seed_global_rngs(derive_seed(self.seed, SeedUse.STEP, comm.get_rank(), self.trainer.iter))

    def state_dict(self):
        return {"seed": self.seed}

    def load_state_dict(self, state_dict):
        self.seed = state_dict["seed"]


class PeriodicCheckpointer(HookBase):
    """Detectron2's PeriodicCheckpointer (``model_{iter:07d}.pth`` every ``period`` iterations, ``model_final.pth``
    after the last) that runs on every process, so that the data-loader states of all of them are gathered into
    the checkpoint, and keeps only the newest ``keep`` periodic checkpoints when ``keep`` > 0."""

    _PERIODIC = re.compile(r"model_(\d{7})\.pth")

    def __init__(self, period, keep=0):
        if keep < 0:
            raise ValueError(f"SOLVER.CHECKPOINT_KEEP must be >= 0 (0 keeps every checkpoint), got {keep}")
        self.period, self.keep = period, keep

    def after_step(self):
        iteration = self.trainer.iter
        periodic = (iteration + 1) % self.period == 0
        final = iteration >= self.trainer.max_iter - 1
        if not (periodic or final):
            return
        self.trainer.collect_data_states()  # a collective when there are several processes
        checkpointer = self.trainer.checkpointer
        if periodic:
            checkpointer.save(f"model_{iteration:07d}", iteration=iteration)
            if self.keep and checkpointer.save_to_disk:
                self._remove_older_than_newest_kept(checkpointer.save_dir, iteration)
        if final:
            checkpointer.save("model_final", iteration=iteration)

    def _remove_older_than_newest_kept(self, folder, iteration):
        # Files of later iterations are from an earlier try of this run (resumed from before them): they are
        # neither counted nor removed, and will be overwritten when training gets there.
        done = sorted((int(m.group(1)), m.group(0)) for m in map(self._PERIODIC.fullmatch, os.listdir(folder))
                      if m and int(m.group(1)) <= iteration)
        for _, name in done[:-self.keep]:
            logger.info(f"SOLVER.CHECKPOINT_KEEP {self.keep}: removing {name}")
            remove_checkpoint(os.path.join(folder, name))


class SkippedSamplesReport(HookBase):
    """At the end of training: the number of skipped training samples into the metrics ("skipped_samples"), and
    on the main process the list in the log and in ``OUTPUT_DIR/skipped_samples.json``."""

    def after_train(self):
        skipped = self.trainer.skipped_samples()
        self.trainer.storage.put_scalar("skipped_samples", len(skipped), smoothing_hint=False)
        if not (skipped and comm.is_main_process()):
            return
        path = os.path.join(self.trainer.cfg.OUTPUT_DIR, "skipped_samples.json")
        atomic_write(path, lambda file: file.write(json.dumps(skipped, indent=1).encode()))
        logger.warning(f"{len(skipped)} training samples were skipped ({sum(s['count'] for s in skipped)} times in all;"
                       f" list in {path}):\n" + "\n".join(
                           f"  {describe_sample(s)}, {s['count']}x: {s['reason']}" for s in skipped))
