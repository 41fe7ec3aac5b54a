"""tools/evaluate.py: tables, JSON output, and exit code 2 with a clear message on bad input."""
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import seg_d2  # noqa: F401
from pycocotools import mask as mask_util
from seg_d2.evaluation import evaluate_coco, pq_compute
from seg_d2.evaluation.coco_mask_ap import ENGINES

_spec = importlib.util.spec_from_file_location(
    "evaluate_cli", os.path.join(os.path.dirname(__file__), "..", "..", "tools", "evaluate.py"))
cli = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cli)


def _coco(tmp_path):
    gt = {"images": [{"id": 1, "width": 4, "height": 4}], "categories": [{"id": 3, "name": "cat"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [0, 0, 2, 2], "area": 4,
                           "iscrowd": 0, "segmentation": [[0, 0, 2, 0, 2, 2, 0, 2]]}]}
    dets = [{"image_id": 1, "category_id": 3, "score": 0.9, "segmentation": [[0, 0, 2, 0, 2, 2, 0, 2]]}]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    return str(tmp_path / "gt.json"), str(tmp_path / "dets.json")


def test_instances_table_and_json(tmp_path, capsys):
    gt, dets = _coco(tmp_path)
    out = str(tmp_path / "m.json")
    assert cli.main(["--output", out, "instances", "--gt", gt, "--results", dets]) == 0
    written = json.load(open(out))["segm"]
    assert written["AP"] == evaluate_coco(gt, dets, "segm")["AP"] and "AP-cat" in written
    assert "AP-cat" in capsys.readouterr().out


@pytest.mark.parametrize("content, message", [
    ("[{", "dets.json: malformed JSON"),
    ('[{"image_id": 8, "category_id": 3, "score": 1, "segmentation": []}]', "dets.json: detection #0: image id 8 is not in the ground truth's images"),
])
def test_bad_results_exit_2(tmp_path, capsys, content, message):
    gt, dets = _coco(tmp_path)
    (tmp_path / "dets.json").write_text(content)
    assert cli.main(["instances", "--gt", gt, "--results", dets]) == 2
    assert message in capsys.readouterr().err


def test_panoptic(tmp_path, panoptic_case):
    _, _, (gt, pred) = panoptic_case(str(tmp_path), 4, 3, "normal")
    out = str(tmp_path / "pq.json")
    assert cli.main(["--output", out, "panoptic", "--gt", gt, "--pred", pred, "--workers", "0"]) == 0
    assert json.load(open(out))["panoptic_seg"]["PQ"] == pytest.approx(100 * pq_compute(gt, pred, num_workers=0)["All"]["pq"])


def test_semantic_size_mismatch_exit_2(tmp_path, capsys):
    for d, shape in (("gt", (4, 4)), ("pred", (4, 5))):
        os.makedirs(tmp_path / d)
        Image.fromarray(np.zeros(shape, np.uint8)).save(tmp_path / d / "a.png")
    args = ["semantic", "--gt-dir", str(tmp_path / "gt"), "--pred-dir", str(tmp_path / "pred"), "--num-classes", "2"]
    assert cli.main(args) == 2
    assert "a.png: PNG is 5x4, expected 4x4" in capsys.readouterr().err


LABELME = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "voc-labelme", "annotations.json")


@pytest.mark.skipif(not os.path.exists(LABELME), reason=f"{LABELME} absent (the shared real-image data)")
def test_instances_on_voc_labelme_same_ap_for_every_engine_and_a_warning(tmp_path):
    """voc-labelme's annotation ids start at 0: every engine gives one AP, and the tool says that
    pycocotools itself would score the file lower (in its own process, as a user sees it)."""
    gt = json.load(open(LABELME))
    rng = np.random.default_rng(1)
    dets = []
    for a in gt["annotations"]:
        x, y, w, h = a["bbox"]
        image = next(im for im in gt["images"] if im["id"] == a["image_id"])
        dx = float(rng.integers(-6, 7))
        poly = [[x + dx, y, x + w + dx, y, x + w + dx, y + h, x + dx, y + h]]  # the box as a polygon, shifted
        dets.append({"image_id": a["image_id"], "category_id": a["category_id"], "score": float(rng.random()),
                     "segmentation": _rle_of(poly, image["height"], image["width"])})
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    aps = set()
    for engine in ENGINES:
        out = str(tmp_path / f"{engine}.json")
        assert cli.main(["--output", out, "instances", "--gt", LABELME, "--results", str(tmp_path / "dets.json"),
                         "--engine", engine, "--iou-type", "segm"]) == 0
        aps.add(json.load(open(out))["segm"]["AP"])
    assert len(aps) == 1 and 0 < aps.pop() < 100
    tool = os.path.join(os.path.dirname(__file__), "..", "..", "tools", "evaluate.py")
    run = subprocess.run([sys.executable, tool, "instances", "--gt", LABELME, "--results", str(tmp_path / "dets.json")],
                         capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0 and "AP-person" in run.stdout
    assert "AnnotationIdZeroWarning" in run.stderr and "annotations.json: ground-truth annotation id 0" in run.stderr


def _rle_of(polygons, h, w):
    rle = mask_util.merge(mask_util.frPyObjects(polygons, h, w))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


@pytest.mark.parametrize("engine", ENGINES)
def test_instances_box_and_mask_ap_in_one_run_equal_separate_runs(tmp_path, engine):
    """The tool reads the ground truth once for both IoU types; an engine that edits it while evaluating
    (pycocotools turns polygons into RLEs in place) must not change the second type's numbers."""
    gt, dets = _coco(tmp_path)
    square = lambda x, y: [[x, y, x + 2, y, x + 2, y + 2, x, y + 2]]  # noqa: E731
    detections = [{"image_id": 1, "category_id": 3, "score": s, "bbox": [x, x, 2, 2], "segmentation": square(x, x)}
                  for s, x in ((0.9, 0), (0.5, 1))]
    (tmp_path / "dets.json").write_text(json.dumps(detections))
    out = str(tmp_path / "m.json")
    assert cli.main(["--output", out, "instances", "--gt", gt, "--results", dets, "--iou-type", "segm", "bbox",
                     "--engine", engine]) == 0
    written = json.load(open(out))
    for iou_type in ("segm", "bbox"):
        expected = evaluate_coco(gt, dets, iou_type, engine, class_names=["cat"])
        assert written[iou_type] == pytest.approx(expected, nan_ok=True, abs=1e-12)
