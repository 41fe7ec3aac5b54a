"""tools/train_net.py end to end: train + evaluate (mask AP and PQ), --resume, --eval-only, bad input."""
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "configs" / "builtin" / "panoptic_fpn_R18_demo.yaml"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, train_net):
    out = tmp_path_factory.mktemp("train_net")
    run = train_net("--config-file", DEMO, "OUTPUT_DIR", out, "SOLVER.MAX_ITER", 2, "TEST.EVAL_PERIOD", 0)
    assert run.returncode == 0, run.stderr[-4000:]
    return out, run.stdout + run.stderr


def test_train_then_evaluate_prints_mask_ap_and_pq(trained):
    out, log = trained
    assert (out / "model_final.pth").is_file()
    assert "Starting training from iteration 0" in log
    for metric in ("PQ", "segm", "AP50", "mIoU"):
        assert metric in log, metric


def test_resume_continues_from_last_checkpoint(trained, train_net):
    out, _ = trained
    run = train_net("--config-file", DEMO, "--resume", "OUTPUT_DIR", out, "SOLVER.MAX_ITER", 3)
    assert run.returncode == 0, run.stderr[-4000:]
    assert "Starting training from iteration 2" in run.stdout + run.stderr


def test_eval_only_loads_weights(trained, train_net):
    out, _ = trained
    run = train_net("--config-file", DEMO, "--eval-only", "OUTPUT_DIR", out / "eval",
                    "MODEL.WEIGHTS", out / "model_final.pth")
    assert run.returncode == 0, run.stderr[-4000:]
    assert "PQ" in run.stdout + run.stderr and not (out / "eval" / "model_final.pth").exists()


def test_unknown_config_key_is_named(train_net):
    run = train_net("--config-file", DEMO, "MODEL.NO_SUCH_KEY", 1)
    assert run.returncode != 0 and "MODEL.NO_SUCH_KEY" in run.stderr


def test_missing_config_file_is_named(tmp_path, train_net):
    run = train_net("--config-file", tmp_path / "nope.yaml")
    assert run.returncode != 0 and "nope.yaml: no such file" in run.stderr


def test_unreadable_weights_are_named(tmp_path, train_net):
    (tmp_path / "cut.pth").write_bytes(b"PK\x03\x04")  # the first bytes of a zip, as a killed copy leaves
    run = train_net("--config-file", DEMO, "--eval-only", "OUTPUT_DIR", tmp_path, "MODEL.WEIGHTS", tmp_path / "cut.pth")
    assert run.returncode != 0 and f"{tmp_path / 'cut.pth'}: not a readable checkpoint" in run.stderr
