"""What a user sees of a training run: an early first log line with ETA, the run's wall time and speed
at the end, and OUTPUT_DIR/curves.png after each evaluation and at the end."""
import datetime
import logging
import os
import time

from detectron2.engine.hooks import PeriodicWriter
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from seg_d2.utils.curves import plot_training_curves

__all__ = ["ProgressWriter", "training_hooks"]

logger = logging.getLogger(__name__)

# Scalars put with smoothing_hint=False that are not evaluation results.
_UNSMOOTHED_TRAINING_SCALARS = {"lr", "eta_seconds"}


class ProgressWriter(PeriodicWriter):
    """Detectron2's PeriodicWriter (log line with ETA, metrics.json, TensorBoard) on a schedule that
    starts early: after the ``early_iters``-th iteration since the start (or resume), every ``period``
    iterations, after each periodic evaluation and at the end. After evaluations and at the end it
    draws ``curves_png``; at the end it logs the wall time and iterations per second."""

    def __init__(self, writers, *, period, early_iters=(), eval_period=0, curves_png=None):
        super().__init__(writers, period=period)
        self._early = set(early_iters)
        self._eval_period = eval_period
        self._curves_png = curves_png
        self._metrics_json = os.path.join(os.path.dirname(curves_png), "metrics.json") if curves_png else None
        self._start = self._last_step_end = None

    def before_train(self):
        self._start = time.perf_counter()

    def _evaluated(self, next_iter):
        # EvalHook's rule: every eval_period, except at the end (after_train runs that evaluation)
        return self._eval_period > 0 and next_iter % self._eval_period == 0 and next_iter != self.trainer.max_iter

    def after_step(self):
        self._last_step_end = time.perf_counter()
        next_iter = self.trainer.iter + 1
        evaluated = self._evaluated(next_iter)
        if (next_iter - self.trainer.start_iter in self._early or next_iter % self._period == 0
                or next_iter == self.trainer.max_iter or evaluated):
            for writer in self._writers:
                writer.write()
        if evaluated:
            self._draw_curves()

    def after_train(self):
        super().after_train()  # writes the final evaluation, closes the writers
        if self.trainer.iter >= self.trainer.max_iter:  # not after a failed run
            self._draw_curves()
        self._log_summary()

    def _draw_curves(self):
        if self._curves_png is None:
            return
        hints = self.trainer.storage.smoothing_hints()
        eval_keys = {k for k, smoothed in hints.items() if not smoothed} - _UNSMOOTHED_TRAINING_SCALARS
        try:
            path = plot_training_curves(self._metrics_json, self._curves_png, eval_keys)
        except Exception as e:  # a picture must never stop a training run; say why there is none
            logger.warning(f"could not draw {self._curves_png}: {type(e).__name__}: {e}")
            return
        if path:
            logger.info(f"Training curves: {path}")

    def _log_summary(self):
        if self._last_step_end is None:
            return
        iterations = self.trainer.iter - self.trainer.start_iter  # iter is max_iter after a full run
        wall = datetime.timedelta(seconds=round(time.perf_counter() - self._start))
        try:  # IterationTimer's step times (from the 3rd iteration on): the speed without evaluation and hooks
            step_seconds = [seconds for seconds, _ in self.trainer.storage.history("time").values()]
            how = "timed from the 3rd iteration"
        except KeyError:  # too short a run for IterationTimer: the loop's own time
            step_seconds, how = [(self._last_step_end - self._start) / max(iterations, 1)] * iterations, "with hooks"
        speed = ""
        if step_seconds and sum(step_seconds) > 0:
            per_iteration = sum(step_seconds) / len(step_seconds)
            speed = f"; {1 / per_iteration:.2f} it/s ({per_iteration:.3f} s per iteration, {how})"
        logger.info(f"Training: {iterations} iterations in {wall} wall time, including evaluation and "
                    f"checkpoints{speed}")


def _ensure_logging(cfg):
    """seg_d2's log lines go where Detectron2's go (console + OUTPUT_DIR/log.txt) if no tool set them up."""
    if not logging.getLogger("seg_d2").handlers:
        setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="seg_d2")


def training_hooks(cfg, hooks):
    """The trainer's ``hooks`` with seg_d2's progress reporting in place: Detectron2's PeriodicWriter
    becomes a :class:`ProgressWriter` with the same writers (SEG_D2.PROGRESS)."""
    _ensure_logging(cfg)
    node = cfg.SEG_D2.PROGRESS
    curves = os.path.join(cfg.OUTPUT_DIR, "curves.png") if node.CURVES else None
    return [
        ProgressWriter(hook._writers, period=node.LOG_PERIOD, early_iters=node.EARLY_LOG_ITERS,
                       eval_period=cfg.TEST.EVAL_PERIOD, curves_png=curves)
        if type(hook) is PeriodicWriter else hook
        for hook in hooks
    ]
