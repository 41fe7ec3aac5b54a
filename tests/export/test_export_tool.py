"""tools/export_model.py as a user runs it: export, check against PyTorch, exit status."""
import json
import os
import runpy

import pytest

import seg_d2  # noqa: F401

REPO = os.path.join(os.path.dirname(__file__), "..", "..")
TOOL = os.path.join(REPO, "tools", "export_model.py")
CONFIG = os.path.join(REPO, "configs", "builtin", "semantic_fpn_R18.yaml")
PHOTO = os.path.join(REPO, "..", "shared", "data", "voc-labelme", "JPEGImages", "2011_000003.jpg")


@pytest.fixture(scope="module")
def tool():
    return runpy.run_path(TOOL)["main"]


def test_exports_and_checks(tool, tmp_path, capsys):
    checks = ["--check-image", PHOTO] if os.path.isfile(PHOTO) else []
    status = tool(["--config-file", CONFIG, "--output", str(tmp_path), "--format", "onnx", *checks,
                   "MODEL.SEM_SEG_HEAD.CONVS_DIM", "32"])  # an override after the options
    captured = capsys.readouterr()
    printed = captured.out
    assert status == 0, captured.err
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["family"] == "semantic" and meta["output_names"] == ["sem_seg", "sem_seg_labels"]
    assert (tmp_path / "model.onnx").is_file() and not (tmp_path / "model.ts").exists()
    assert "model.onnx on the sample image: sem_seg" in printed
    assert printed.count("model.onnx on ") == 1 + len(checks) // 2


def test_missing_image_exits_2(tool, tmp_path, capsys):
    status = tool(["--config-file", CONFIG, "--output", str(tmp_path), "--sample-image", str(tmp_path / "no.png")])
    assert status == 2
    assert "no.png: no such image" in capsys.readouterr().err


def test_unreadable_weights_exit_2(tool, tmp_path, capsys):
    (tmp_path / "broken.pth").write_bytes(b"not a checkpoint")
    status = tool(["--config-file", CONFIG, "--output", str(tmp_path), "MODEL.WEIGHTS", str(tmp_path / "broken.pth")])
    assert status == 2
    assert "broken.pth" in capsys.readouterr().err
