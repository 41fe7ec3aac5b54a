"""What a training run shows: the first log line with an ETA after the 3rd iteration (not the 20th),
metrics.json on that schedule and after each evaluation, curves.png after evaluations and at the end,
and the wall time with iterations per second at the end."""
import json
import logging
import os

import pytest
import torch
from PIL import Image

import seg_d2  # noqa: F401  (before detectron2)
from seg_d2.engine.trainer import Trainer, setup_cfg
from seg_d2.utils.curves import plot_training_curves, read_metrics

torch.set_num_threads(1)
CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "builtin", "semantic_unet.yaml")


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture
def log_lines():
    handler = _Lines()
    loggers = [logging.getLogger(name) for name in ("detectron2", "seg_d2")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    yield handler.lines
    for logger, level in zip(loggers, levels):
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_training_progress_metrics_and_curves(tmp_path, log_lines):
    cfg = setup_cfg(CONFIG, ["OUTPUT_DIR", str(tmp_path), "SOLVER.MAX_ITER", "14", "TEST.EVAL_PERIOD", "7",
                             "SOLVER.IMS_PER_BATCH", "2", "MODEL.UNET.BASE_CHANNELS", "4", "SOLVER.CHECKPOINT_PERIOD",
                             "1000", "DATASETS.TEST", "('seg_d2_shapes_val_sem_seg',)"])
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    iteration_lines = [line for line in log_lines if "iter: " in line]
    assert iteration_lines[0].split("iter: ")[1].split()[0] == "2"  # 0-based: after the 3rd iteration
    assert "eta: " in iteration_lines[0]
    rows = read_metrics(tmp_path / "metrics.json")
    # early (3rd, 10th), after the evaluation at 7, the last, then the final evaluation at max_iter
    assert [r["iteration"] for r in rows] == [2, 6, 9, 13, 14]
    assert "sem_seg/mIoU" in rows[1] and "sem_seg/mIoU" in rows[-1]
    summary = [line for line in log_lines if line.startswith("Training: 14 iterations in")]
    assert summary and "wall time, including evaluation and checkpoints; " in summary[0] and " it/s (" in summary[0]
    assert Image.open(tmp_path / "curves.png").size == (3 * 640, 420)  # losses, learning rate, sem_seg metrics
    assert any("Training curves:" in line for line in log_lines)


def test_read_metrics_after_a_resume_and_a_cut_line(tmp_path):
    rows = [{"iteration": i, "total_loss": 1.0 / (i + 1), "lr": 0.01} for i in (19, 39, 59)]
    resumed = [{"iteration": i, "total_loss": 2.0, "lr": 0.02} for i in (42, 59)]
    text = "".join(json.dumps(r) + "\n" for r in rows + resumed) + '{"iteration": 79, "total_lo'
    (tmp_path / "metrics.json").write_text(text)
    got = read_metrics(tmp_path / "metrics.json")
    # the resumed run (from 40) replaces the killed run's rows from 42 on; the cut line is skipped
    assert [(r["iteration"], r["lr"]) for r in got] == [(19, 0.01), (39, 0.01), (42, 0.02), (59, 0.02)]
    assert plot_training_curves(str(tmp_path / "metrics.json"), str(tmp_path / "c.png")) == str(tmp_path / "c.png")
    assert plot_training_curves(str(tmp_path / "none.json"), str(tmp_path / "d.png")) is None


def test_progress_stands_in_for_a_data_loader():
    """Detectron2's inference_on_dataset takes the wrapped loader (it needs len()): evaluation can show a bar."""
    from detectron2.evaluation import DatasetEvaluator, inference_on_dataset

    from seg_d2.utils.progress import progress

    class Count(DatasetEvaluator):
        def reset(self):
            self.seen = []

        def process(self, inputs, outputs):
            self.seen += outputs

        def evaluate(self):
            return {"count": {"n": len(self.seen)}}

    batches = [[{"i": i}] for i in range(7)]
    wrapped = progress(batches, desc="evaluating", unit="image")
    assert len(wrapped) == 7
    result = inference_on_dataset(lambda inputs: [x["i"] for x in inputs], wrapped, Count())
    assert result == {"count": {"n": 7}}
