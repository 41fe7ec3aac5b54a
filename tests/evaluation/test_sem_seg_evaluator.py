"""SemSegMetricsEvaluator: hand-computed values on small maps, and Detectron2's SemSegEvaluator as oracle."""
import math
import uuid

import numpy as np
import pytest
import torch
from PIL import Image

import seg_d2  # noqa: F401
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import SemSegEvaluator
from seg_d2.evaluation.sem_seg_evaluator import SemSegMetricsEvaluator
from seg_d2.evaluation.semantic_metrics import evaluate_sem_seg_files, sem_seg_image_stats, sem_seg_metrics
from seg_d2.evaluation.validation import EvaluationInputError


def _metrics(gt, pred, num_classes, **kw):
    return sem_seg_metrics(sem_seg_image_stats(np.array(gt), np.array(pred), num_classes, **kw),
                           [str(i) for i in range(num_classes)])


def test_hand_computed_ignore_and_absent_class():
    gt = [[0, 0, 1, 1], [0, 0, 1, 255]]
    pred = [[0, 1, 1, 1], [0, 0, 1, 1]]  # the pixel under 255 is not counted
    m = _metrics(gt, pred, 3)
    assert m["IoU-0"] == pytest.approx(75) and m["IoU-1"] == pytest.approx(75)
    assert m["Dice-0"] == pytest.approx(600 / 7) and m["Dice-1"] == pytest.approx(600 / 7)
    assert m["ACC-0"] == pytest.approx(75) and m["ACC-1"] == pytest.approx(100)
    assert math.isnan(m["IoU-2"]) and math.isnan(m["Dice-2"]) and math.isnan(m["BIoU-2"])  # absent from both
    assert m["mIoU"] == pytest.approx(75) and m["mDice"] == pytest.approx(600 / 7)
    assert m["pACC"] == pytest.approx(600 / 7) and m["fwIoU"] == pytest.approx(75)
    assert m["mACC"] == pytest.approx(87.5)


def test_class_only_predicted_counts_as_zero():
    m = _metrics([[0, 0]], [[0, 1]], 2)
    assert m["IoU-1"] == 0 and m["mIoU"] == pytest.approx(25) and math.isnan(m["ACC-1"])
    assert m["Dice-1"] == 0 and m["BIoU-1"] == 0 and m["predicted_only_IoU"] == 0


def test_class_only_predicted_left_out_with_nan():
    stats = sem_seg_image_stats(np.array([[0, 0]]), np.array([[0, 1]]), 3)
    m = sem_seg_metrics(stats, ["a", "b", "c"], predicted_only="nan")
    assert all(math.isnan(m[f"{k}-b"]) for k in ("IoU", "Dice", "BIoU", "ACC")) and math.isnan(m["predicted_only_IoU"])
    assert m["IoU-a"] == pytest.approx(50) and m["mIoU"] == pytest.approx(50) and m["mDice"] == pytest.approx(200 / 3)
    assert math.isnan(m["IoU-c"])  # absent from both: NaN under either convention
    with pytest.raises(ValueError, match="predicted_only must be one of"):
        sem_seg_metrics(stats, ["a", "b", "c"], predicted_only="ignore")


def test_predicted_only_conventions_against_detectron2(tmp_path):
    """Detectron2's SemSegEvaluator: per-class IoU NaN for a class only predicted, yet 0 in its mIoU. seg_d2's
    "zero" reproduces that mIoU, its "nan" that per-class IoU (and leaves the class out of its mIoU)."""
    rng = np.random.default_rng(5)
    name, dicts, preds = _dataset(tmp_path, rng, 4)
    preds = [np.where(p == 3, 2, p) for p in preds]
    preds[0][0, :3] = 3  # class 3: predicted in one image, in no ground truth
    for d in dicts:
        gt = np.array(Image.open(d["sem_seg_file_name"]))
        Image.fromarray(np.where(gt == 3, 2, gt).astype(np.uint8)).save(d["sem_seg_file_name"])
    inputs = [{"file_name": d["file_name"]} for d in dicts]
    outputs = [{"sem_seg": torch.nn.functional.one_hot(torch.from_numpy(p), 4).permute(2, 0, 1).float()} for p in preds]
    results = {}
    for key, ev in (("d2", SemSegEvaluator(name, distributed=False)),
                    ("zero", SemSegMetricsEvaluator(name, distributed=False)),
                    ("nan", SemSegMetricsEvaluator(name, distributed=False, predicted_only="nan"))):
        ev.reset()
        ev.process(inputs, outputs)
        results[key] = ev.evaluate()["sem_seg"]
    d2, zero, nan = results["d2"], results["zero"], results["nan"]
    assert math.isnan(d2["IoU-k3"]) and zero["IoU-k3"] == 0 and math.isnan(nan["IoU-k3"])
    assert zero["mIoU"] == pytest.approx(d2["mIoU"], abs=1e-9)
    assert nan["mIoU"] == pytest.approx(np.mean([d2[f"IoU-k{c}"] for c in range(3)]), abs=1e-9) != d2["mIoU"]
    assert zero["predicted_only_IoU"] == 0 and math.isnan(nan["predicted_only_IoU"])


def test_boundary_iou_by_hand():
    # 10x10, d = max(1, round(0.02 * 14.1)) = 1; gt square rows/cols 2..7, pred shifted one column right
    gt = np.zeros((10, 10), int)
    gt[2:8, 2:8] = 1
    pred = np.zeros((10, 10), int)
    pred[2:8, 3:9] = 1
    m = _metrics(gt, pred, 2)
    assert m["BIoU-1"] == pytest.approx(100 / 3)  # rings of 20 px sharing 10
    assert m["BIoU-0"] == pytest.approx(500 / 7)  # bands of 64 and 56 px sharing 50
    assert m["IoU-1"] == pytest.approx(500 / 7) and m["IoU-0"] == pytest.approx(100 * 58 / 70)
    assert _metrics(gt, gt, 2)["mBIoU"] == 100


def test_dilation_grows_with_the_image_diagonal():
    gt = np.zeros((100, 100), int)
    gt[20:80, 20:80] = 1
    pred = np.zeros((100, 100), int)
    pred[20:80, 21:81] = 1
    narrow = _metrics(gt, pred, 2, dilation_ratio=0.01)["BIoU-1"]  # d = 1
    wide = _metrics(gt, pred, 2, dilation_ratio=0.05)["BIoU-1"]  # d = 7: the shift weighs less
    assert narrow < wide < 100


@pytest.mark.parametrize("gt, pred, message", [
    ([[0, 5]], [[0, 1]], "ground truth has label 5"),
    ([[0, 1]], [[0, 3]], "prediction has label 3"),
    ([[0, 1]], [[0, 1, 1]], "prediction is"),
])
def test_bad_labels_are_named(gt, pred, message):
    with pytest.raises(EvaluationInputError, match=message):
        sem_seg_image_stats(np.array(gt), np.array(pred), 2, source="x.png")


def _dataset(tmp_path, rng, num_classes, n=4):
    name = f"semseg_{uuid.uuid4().hex[:8]}"
    dicts, preds = [], []
    for i in range(n):
        h, w = int(rng.integers(5, 40)), int(rng.integers(5, 40))
        gt = rng.integers(0, num_classes, (h, w))
        gt[rng.random((h, w)) < 0.1] = 255
        path = str(tmp_path / f"{name}_{i}.png")
        Image.fromarray(gt.astype(np.uint8)).save(path)
        dicts.append({"file_name": f"img{i}.jpg", "sem_seg_file_name": path, "height": h, "width": w})
        pred = np.where(rng.random((h, w)) < 0.6, np.where(gt == 255, 0, gt), rng.integers(0, num_classes, (h, w)))
        preds.append(pred)
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(stuff_classes=[f"k{c}" for c in range(num_classes)], ignore_label=255)
    return name, dicts, preds


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_same_region_metrics_as_detectron2(tmp_path, seed):
    rng = np.random.default_rng(seed)
    num_classes = 5
    name, dicts, preds = _dataset(tmp_path, rng, num_classes)
    outputs = [{"sem_seg": torch.nn.functional.one_hot(torch.from_numpy(p), num_classes).permute(2, 0, 1).float()}
               for p in preds]
    inputs = [{"file_name": d["file_name"]} for d in dicts]
    results = []
    for ev in (SemSegMetricsEvaluator(name, distributed=False), SemSegEvaluator(name, distributed=False)):
        ev.reset()
        ev.process(inputs, outputs)
        results.append(ev.evaluate()["sem_seg"])
    ours, ref = results
    for key in ("mIoU", "fwIoU", "mACC", "pACC"):
        assert ours[key] == pytest.approx(ref[key], abs=1e-9)
    files = evaluate_sem_seg_files(
        [(d["sem_seg_file_name"], _save(tmp_path, f"p{i}.png", p)) for i, (d, p) in enumerate(zip(dicts, preds))],
        num_classes, [f"k{c}" for c in range(num_classes)],
    )
    assert files == pytest.approx(ours, nan_ok=True)


def _save(tmp_path, name, labels):
    path = str(tmp_path / name)
    Image.fromarray(labels.astype(np.uint8)).save(path)
    return path


def test_tiles_of_one_image_are_scored_against_their_own_labels(tmp_path):
    """A ``tiles`` dataset's records share their source's file_name: each tile must still meet its own label
    crop (keyed by file and window), so predictions equal to every tile's labels score 100."""
    from detectron2.config import get_cfg

    from seg_d2.data.config_datasets import register_datasets_from_config

    (tmp_path / "img").mkdir()
    (tmp_path / "sem").mkdir()
    labels = np.zeros((8, 16), np.uint8)
    labels[:, 8:] = 1  # the left tile is all class 0, the right one all class 1
    Image.fromarray(np.zeros((8, 16, 3), np.uint8)).save(tmp_path / "img" / "a.png")
    Image.fromarray(labels).save(tmp_path / "sem" / "a.png")
    name = f"tiles_{uuid.uuid4().hex[:8]}"
    cfg = get_cfg()
    cfg.DATASETS.REGISTER = ((f"{name}_src", "sem_seg", str(tmp_path / "img"), str(tmp_path / "sem")),
                             (name, "tiles", f"{name}_src", "size=8"))
    register_datasets_from_config(cfg)
    records = DatasetCatalog.get(name)
    assert [r["window"] for r in records] == [[0, 0, 8, 8], [8, 0, 16, 8]]
    evaluator = SemSegMetricsEvaluator(name, distributed=False, num_classes=2)
    evaluator.reset()
    for record in records:
        tile = torch.from_numpy(np.array(Image.open(record["sem_seg_file_name"]))).long()
        evaluator.process([record], [{"sem_seg": torch.nn.functional.one_hot(tile, 2).permute(2, 0, 1).float()}])
    assert evaluator.evaluate()["sem_seg"]["mIoU"] == pytest.approx(100)
