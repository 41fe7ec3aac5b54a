"""tools/export_model.py as a user runs it: export, check against PyTorch, exit status."""
import json
import os
import runpy

import cv2
import numpy as np
import pytest

import seg_d2  # noqa: F401
from detectron2.data import DatasetCatalog
from detectron2.data.detection_utils import read_image as detectron2_read_image

from seg_d2.engine import setup_cfg
from seg_d2.export.api import sample_image

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


def test_undecodable_image_exits_2(tool, tmp_path, capsys):
    (tmp_path / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n")  # a PNG signature and nothing else
    status = tool(["--config-file", CONFIG, "--output", str(tmp_path), "--sample-image", str(tmp_path / "cut.png")])
    assert status == 2
    assert f"{tmp_path / 'cut.png'}: " in capsys.readouterr().err


def test_unreadable_weights_exit_2(tool, tmp_path, capsys):
    (tmp_path / "broken.pth").write_bytes(b"not a checkpoint")
    status = tool(["--config-file", CONFIG, "--output", str(tmp_path), "MODEL.WEIGHTS", str(tmp_path / "broken.pth")])
    assert status == 2
    assert "broken.pth" in capsys.readouterr().err


# INPUT.NORMALIZE "range" 0..4000: a value v is read as v * 255 / 4000 in every band.
RANGE_4000 = ["INPUT.NORMALIZE.MODE", "range", "INPUT.NORMALIZE.RANGE", "(0, 4000)"]


@pytest.fixture
def png16(tmp_path):
    """(path, raw values) of a 16-bit gray PNG: a ramp from 500 to 3660 with a disc at 3000."""
    yy, xx = np.mgrid[:64, :80]
    raw = (500 + 40 * xx).astype(np.uint16)
    raw[(yy - 32) ** 2 + (xx - 40) ** 2 < 200] = 3000
    cv2.imwrite(str(tmp_path / "sensor16.png"), raw)
    assert (detectron2_read_image(str(tmp_path / "sensor16.png"), format="BGR") == 255).all()  # saturated there
    return str(tmp_path / "sensor16.png"), raw


def _as_read_with_range_4000(raw):
    return np.repeat((raw.astype(np.float32) * (np.float32(255) / np.float32(4000)))[:, :, None], 3, axis=2)


def test_16bit_images_are_exported_and_checked_as_normalised(tool, tmp_path, png16, monkeypatch, capsys):
    path, raw = png16
    traced, checked = [], []
    export, check = tool.__globals__["export_model"], tool.__globals__["check_export"]

    def export_spy(*args, image, **kwargs):
        traced.append(image)
        return export(*args, image=image, **kwargs)

    def check_spy(path, model, images, **kwargs):
        checked.extend(images)
        return check(path, model, images, **kwargs)

    monkeypatch.setitem(tool.__globals__, "export_model", export_spy)
    monkeypatch.setitem(tool.__globals__, "check_export", check_spy)
    status = tool(["--config-file", CONFIG, "--output", str(tmp_path / "out"), "--format", "onnx",
                   "--sample-image", path, "--check-image", path, *RANGE_4000])
    assert status == 0, capsys.readouterr().err
    expected = _as_read_with_range_4000(raw)
    assert len(traced) == 1 and len(checked) == 2  # traced on the sample image; checked on it and --check-image
    for image in traced + checked:
        np.testing.assert_allclose(image, expected, rtol=1e-6)


def test_16bit_sample_image_of_the_test_dataset_is_normalised(png16):
    path, raw = png16
    DatasetCatalog.register("export_test_16bit", lambda: [{"file_name": path, "image_id": 0, "height": 64, "width": 80}])
    try:
        cfg = setup_cfg(CONFIG, [*RANGE_4000, "DATASETS.TEST", "('export_test_16bit',)"])
        np.testing.assert_allclose(sample_image(cfg), _as_read_with_range_4000(raw), rtol=1e-6)
    finally:
        DatasetCatalog.remove("export_test_16bit")
