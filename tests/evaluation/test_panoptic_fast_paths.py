"""The fast paths of seg_d2's PQ: PNG id decoding, pixel labelling, the evaluator's ground-truth cache
and its worker threads."""
import contextlib
import io
import json
import os
import uuid

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import seg_d2  # noqa: F401
from detectron2.data import MetadataCatalog
from seg_d2.evaluation.panoptic_evaluator import GT_CACHE, GroundTruthCache, PanopticQualityEvaluator
from seg_d2.evaluation.panoptic_quality import (
    _joint_counts,
    compact_labels,
    dense_labels,
    pq_compute,
    read_panoptic_png,
    rgb2id,
)
from seg_d2.evaluation.validation import EvaluationInputError


def _id2rgb(ids):
    return np.stack([ids & 255, (ids >> 8) & 255, (ids >> 16) & 255], -1).astype(np.uint8)


def test_read_panoptic_png_equals_rgb2id(tmp_path):
    ids = np.random.default_rng(0).integers(0, 1 << 24, (7, 5))
    Image.fromarray(_id2rgb(ids)).save(tmp_path / "x.png")
    out = read_panoptic_png(tmp_path / "x.png")
    assert out.dtype == np.uint32 and out.shape == (7, 5)
    np.testing.assert_array_equal(out, rgb2id(np.asarray(Image.open(tmp_path / "x.png"))))
    np.testing.assert_array_equal(out, ids)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), wide=st.booleans())
def test_dense_labels_lookup_equals_search(seed, wide):
    rng = np.random.default_rng(seed)
    top = 1 << (30 if wide else 24)  # wide ids take the binary-search path
    segment_ids = rng.choice(np.arange(1, 200), int(rng.integers(0, 6)), replace=False) * (top // 256)
    pool = np.concatenate([[0, 3, top - 1], segment_ids])
    id_map = rng.choice(pool, (6, 9)).astype(np.int64)
    out = dense_labels(id_map, segment_ids)
    expected = np.zeros(id_map.shape, np.int64)  # listed nowhere
    expected[id_map == 0] = 1
    for i, s in enumerate(segment_ids):
        expected[id_map == s] = 2 + i
    np.testing.assert_array_equal(out, expected)


def test_dense_labels_leaves_the_lookup_table_clean():
    a = dense_labels(np.array([[5, 6]]), [5])
    b = dense_labels(np.array([[5, 6]]), [6])
    np.testing.assert_array_equal(a, [[2, 0]])
    np.testing.assert_array_equal(b, [[0, 2]])


@pytest.mark.parametrize("n, dtype", [(0, np.uint8), (254, np.uint8), (255, np.uint16), (70000, np.int32)])
def test_compact_labels_dtype(n, dtype):
    labels = np.array([[0, 1, n + 1]], np.int32)
    out = compact_labels(labels, n)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, labels)


def _dataset(root, gt_ids):
    """One-image panoptic dataset: gt segments 1 ("a", thing) and 2 ("b", stuff)."""
    os.makedirs(root / "gt", exist_ok=True)
    Image.fromarray(_id2rgb(gt_ids)).save(root / "gt" / "0.png")
    gt_json = {
        "images": [{"id": 0, "width": gt_ids.shape[1], "height": gt_ids.shape[0], "file_name": "0.jpg"}],
        "categories": [{"id": 5, "name": "a", "isthing": 1}, {"id": 6, "name": "b", "isthing": 0}],
        "annotations": [{"image_id": 0, "file_name": "0.png", "segments_info": [
            {"id": 1, "category_id": 5, "iscrowd": 0}, {"id": 2, "category_id": 6, "iscrowd": 0}]}],
    }
    (root / "gt.json").write_text(json.dumps(gt_json))
    name = f"pq_fast_{uuid.uuid4().hex[:8]}"
    MetadataCatalog.get(name).set(
        panoptic_json=str(root / "gt.json"), panoptic_root=str(root / "gt"),
        thing_dataset_id_to_contiguous_id={5: 0}, stuff_dataset_id_to_contiguous_id={6: 1}, label_divisor=1000,
    )
    return name


def _evaluate(name, pred, num_workers=2):
    ev = PanopticQualityEvaluator(name, num_workers=num_workers)
    ev.reset()
    segs = [{"id": 7, "category_id": 0, "isthing": True}, {"id": 8, "category_id": 1, "isthing": False}]
    ev.process([{"image_id": 0}], [{"panoptic_seg": (torch.from_numpy(pred), segs)}])
    with contextlib.redirect_stdout(io.StringIO()):
        return ev.evaluate()["panoptic_seg"]


LEFT_RIGHT = np.array([[1, 2], [1, 2]])
PRED = np.array([[7, 8], [7, 8]], np.int32)


@pytest.mark.parametrize("num_workers", [0, 1, 2])
def test_cached_ground_truth_is_reused_and_refreshed_when_the_png_changes(tmp_path, num_workers):
    name = _dataset(tmp_path, LEFT_RIGHT)
    assert _evaluate(name, PRED, num_workers)["PQ"] == 100
    assert _evaluate(name, PRED, num_workers)["PQ"] == 100  # from the cache
    png = tmp_path / "gt" / "0.png"
    Image.fromarray(_id2rgb(LEFT_RIGHT[:, ::-1])).save(png)  # same size, segments swapped
    os.utime(png, ns=(os.stat(png).st_atime_ns, os.stat(png).st_mtime_ns + 10**9))
    assert _evaluate(name, PRED, num_workers)["PQ"] == 0


def test_cache_keys_on_segment_ids_and_respects_its_budget(tmp_path):
    _dataset(tmp_path, LEFT_RIGHT)
    png = str(tmp_path / "gt" / "0.png")
    image = {"id": 0, "width": 2, "height": 2}
    cache = GroundTruthCache()
    np.testing.assert_array_equal(cache.labels(png, [1, 2], image), [[2, 3], [2, 3]])
    np.testing.assert_array_equal(cache.labels(png, [2, 1], image), [[3, 2], [3, 2]])
    assert cache.labels(png, [2, 1], image) is cache.labels(png, [2, 1], image)
    small = GroundTruthCache(max_bytes=0)
    assert small.labels(png, [1, 2], image) is not small.labels(png, [1, 2], image)


def test_worker_errors_reach_evaluate(tmp_path):
    name = _dataset(tmp_path, LEFT_RIGHT)
    GT_CACHE.clear()
    with pytest.raises(EvaluationInputError, match=r"\[9\] are in the PNG but not in segments_info"):
        _evaluate(name, np.array([[7, 8], [9, 8]], np.int32))


@pytest.mark.parametrize("rows, cols", [(3, 4), (300, 300)])  # OpenCV histogram; bincount past 65536 pairs
def test_joint_counts_equals_bincount(rows, cols):
    rng = np.random.default_rng(rows)
    gt = rng.integers(0, rows, (40, 50)).astype(np.uint8 if rows < 256 else np.int32)
    pred = rng.integers(0, cols, (40, 50)).astype(np.int32)
    expected = np.zeros((rows, cols), np.int64)
    np.add.at(expected, (gt.astype(np.int64), pred), 1)
    out = _joint_counts(gt, pred, rows, cols)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, expected)


def _write_case(root, gt, gt_segs, pred, pred_segs, width=None):
    """One-image PNG folders + JSON files under ``root``; returns the two JSON paths."""
    for d, ids in (("gt", gt), ("pred", pred)):
        os.makedirs(root / d, exist_ok=True)
        Image.fromarray(_id2rgb(np.array(ids))).save(root / d / "0.png")
    cats = [{"id": 1, "name": "a", "isthing": 1}, {"id": 2, "name": "b", "isthing": 0}]
    image = {"id": 5, "width": width or len(gt[0]), "height": len(gt), "file_name": "0.jpg"}
    gt_json = {"images": [image], "categories": cats,
               "annotations": [{"image_id": 5, "file_name": "0.png", "segments_info": gt_segs}]}
    pred_json = {"annotations": [{"image_id": 5, "file_name": "0.png", "segments_info": pred_segs}]}
    (root / "gt.json").write_text(json.dumps(gt_json))
    (root / "pred.json").write_text(json.dumps(pred_json))
    return str(root / "gt.json"), str(root / "pred.json")


GT_SEGS = [{"id": 1, "category_id": 1, "iscrowd": 0}]


@pytest.mark.parametrize("pred, pred_segs, width, message", [
    ([[3, 3]], [{"id": 4, "category_id": 1}], None, "segment ids [3] are in the PNG"),  # hotcoco refuses
    ([[4, 4]], [{"id": 4, "category_id": 1}, {"id": 4, "category_id": 2}], None, "id 4 is listed twice"),
    ([[4, 4]], [{"id": 4, "category_id": 1}], 3, "0.png: PNG is 2x1 but image 5 is 3x1"),  # hotcoco accepts
])
@pytest.mark.parametrize("engine", ["auto", "seg_d2"])
def test_every_engine_names_bad_input(tmp_path, pred, pred_segs, width, message, engine):
    gt_path, pred_path = _write_case(tmp_path, [[1, 1]], GT_SEGS, pred, pred_segs, width)
    with pytest.raises(EvaluationInputError) as e:
        pq_compute(gt_path, pred_path, num_workers=0, engine=engine)
    assert message in str(e.value)


def test_engines_agree_per_class(tmp_path):
    gt_path, pred_path = _write_case(tmp_path, [[1, 1, 2, 0]], GT_SEGS + [{"id": 2, "category_id": 2, "iscrowd": 0}],
                                     [[4, 4, 4, 5]], [{"id": 4, "category_id": 1}, {"id": 5, "category_id": 2}])
    ours, hot = (pq_compute(gt_path, pred_path, num_workers=0, engine=e) for e in ("seg_d2", "hotcoco"))
    assert ours["per_class"].keys() == hot["per_class"].keys()
    for c, r in ours["per_class"].items():
        assert r == pytest.approx(hot["per_class"][c], abs=1e-12)
    assert ours["All"] == pytest.approx(hot["All"], abs=1e-12)


def test_auto_engine_names_a_prediction_of_another_size(tmp_path):
    gt_path, pred_path = _write_case(tmp_path, [[1, 1]], GT_SEGS, [[4, 4, 4]], [{"id": 4, "category_id": 1}])
    with pytest.raises(EvaluationInputError, match="0.png: PNG is 3x1 but image 5 is 2x1"):
        pq_compute(gt_path, pred_path, num_workers=0)


@pytest.mark.parametrize("n, dtype", [(3, np.uint16), (65533, np.uint16), (65534, np.int32)])
def test_dense_labels_dtype_and_ids_fit_shortcut(n, dtype):
    """uint16 labels while they fit; ``ids_fit=True`` (no min/max scan) and every id dtype label alike."""
    rng = np.random.default_rng(n)
    segment_ids = rng.choice(np.arange(1, 1 << 24), n, replace=False)
    pool = np.concatenate([[0, (1 << 24) - 1], segment_ids[:50], segment_ids[-5:]])
    id_map = rng.choice(pool, (9, 11))
    expected = np.zeros(id_map.shape, np.int64)
    expected[id_map == 0] = 1
    index = {int(s): i for i, s in enumerate(segment_ids)}
    for (y, x), v in np.ndenumerate(id_map):
        if int(v) in index:
            expected[y, x] = 2 + index[int(v)]
    outs = [dense_labels(id_map.astype(t), segment_ids, ids_fit=f)
            for t in (np.uint32, np.int64) for f in (False, True)]
    outs.append(dense_labels(id_map.astype(np.int64) * 64, segment_ids * 64))  # beyond 24 bits: binary search
    for out in outs:
        assert out.dtype == dtype
        np.testing.assert_array_equal(out, expected)
