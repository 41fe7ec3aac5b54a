"""What Trainer puts in a checkpoint, and the warnings when a resume cannot be exact."""
import logging
from pathlib import Path

import pytest

import seg_d2  # noqa: F401
from detectron2.data import build_detection_train_loader

from seg_d2.engine import Trainer, setup_cfg

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "builtin" / "semantic_unet.yaml"


def tiny_cfg(tmp_path, *opts):
    return setup_cfg(str(CONFIG), ["MODEL.UNET.DEPTH", "2", "MODEL.UNET.BASE_CHANNELS", "8", "DATASETS.TEST", "()",
                                   "SEG_D2.NUM_THREADS", "1", "OUTPUT_DIR", str(tmp_path), *opts])


def trainer(tmp_path, *opts):
    return Trainer(tiny_cfg(tmp_path, *opts))


@pytest.fixture
def logs(caplog):
    logging.getLogger("seg_d2").addHandler(caplog.handler)  # Detectron2's setup_logger stops propagation
    yield caplog
    logging.getLogger("seg_d2").removeHandler(caplog.handler)


def test_state_holds_optimizer_seed_data_stream_and_thread_setting(tmp_path):
    state = trainer(tmp_path).state_dict()
    assert {"optimizer"} <= state["_trainer"].keys() and {"LRScheduler", "ReseedEachIteration"} <= state["hooks"].keys()
    assert state["hooks"]["ReseedEachIteration"] == {"seed": 0}  # configs/builtin: SEED 0
    assert state["data"][0]["train"]["next_position"] == 0 and state["torch_threads"] == 1


def test_a_random_seed_is_kept_in_the_checkpoint(tmp_path):
    first = trainer(tmp_path, "SEED", "-1")
    state = first.state_dict()
    second = trainer(tmp_path, "SEED", "-1")
    assert second.state_dict()["hooks"]["ReseedEachIteration"] != state["hooks"]["ReseedEachIteration"]
    second.load_state_dict(state)
    resumed = second.state_dict()
    assert resumed["hooks"]["ReseedEachIteration"] == state["hooks"]["ReseedEachIteration"]
    assert resumed["data"][0]["train"]["seed"] == state["data"][0]["train"]["seed"]


def test_resume_that_cannot_be_exact_says_why(tmp_path, logs, monkeypatch):
    state = trainer(tmp_path).state_dict()
    state["torch_threads"] = 2
    del state["_trainer"]
    trainer(tmp_path, "SOLVER.IMS_PER_BATCH", "2").load_state_dict(state)
    assert "The number of torch CPU threads was 2 in the run that wrote the checkpoint and is 1 now" in logs.text
    assert "holds no optimizer state" in logs.text
    assert "batch_size_per_process: 4 -> 2" in logs.text
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(variable, raising=False)
    chosen = trainer(tmp_path, "SEG_D2.NUM_THREADS", "0")
    logs.clear()
    chosen.load_state_dict(state)
    assert chosen._thread_policy.threads == 2 and "CPU threads" not in logs.text  # the checkpoint's count, kept
    trainer(tmp_path, "SEG_D2.NUM_THREADS", "-1").load_state_dict(state)
    assert "torch CPU threads follows the machine's load (SEG_D2.NUM_THREADS -1)" in logs.text


def test_a_loader_that_cannot_resume_is_reported(tmp_path, logs):
    class StockLoaderTrainer(Trainer):
        @classmethod
        def build_train_loader(cls, cfg):
            return build_detection_train_loader(cfg)

    assert StockLoaderTrainer(tiny_cfg(tmp_path)).state_dict()["data"] == [{}]
    assert "The 'train' data loader is not a ResumableTrainLoader: --resume restarts its stream" in logs.text
