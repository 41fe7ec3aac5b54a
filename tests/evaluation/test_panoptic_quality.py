"""seg_d2's PQ engine against panopticapi's pq_compute (the oracle) on randomised panoptic cases."""
import contextlib
import io
import json
import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import seg_d2  # noqa: F401
from panopticapi import evaluation as papi
from seg_d2.evaluation.panoptic_quality import pq_compute, pq_compute_pairs, pq_image_stats
from seg_d2.evaluation.validation import EvaluationInputError


def _reference(gt_json, pred_json, root):
    """panopticapi's single-core path (no pool per example); None where it divides by zero."""
    categories = {c["id"]: c for c in gt_json["categories"]}
    pairs = list(zip(gt_json["annotations"], pred_json["annotations"]))
    with contextlib.redirect_stdout(io.StringIO()):
        stat = papi.pq_compute_single_core(0, pairs, os.path.join(root, "gt"), os.path.join(root, "pred"), categories)
    out = {}
    for name, isthing in (("All", None), ("Things", True), ("Stuff", False)):
        try:
            out[name], per_class = stat.pq_average(categories, isthing)
        except ZeroDivisionError:
            out[name], per_class = None, None
        if name == "All":
            out["per_class"] = per_class
    return out


def _assert_same(ours, ref):
    for name in ("All", "Things", "Stuff"):
        if ref[name] is None:  # panopticapi divides by zero: we report NaN over no category
            assert ours[name]["n"] == 0 and all(math.isnan(ours[name][k]) for k in ("pq", "sq", "rq"))
            continue
        assert ours[name]["n"] == ref[name]["n"]
        for k in ("pq", "sq", "rq"):
            assert ours[name][k] == pytest.approx(ref[name][k], abs=1e-9, rel=0)
    if ref["per_class"] is not None:
        assert set(ours["per_class"]) == set(ref["per_class"])
        for c, r in ref["per_class"].items():
            for k in ("pq", "sq", "rq"):
                assert ours["per_class"][c][k] == pytest.approx(r[k], abs=1e-9, rel=0)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 2**32 - 1),
    num_images=st.integers(1, 4),
    kind=st.sampled_from(["normal", "normal", "empty_pred", "empty_gt"]),
    engine=st.sampled_from(["seg_d2", "hotcoco"]),
)
def test_matches_panopticapi(tmp_path_factory, panoptic_case, seed, num_images, kind, engine):
    root = str(tmp_path_factory.mktemp("pq"))
    gt_json, pred_json, (gt_path, pred_path) = panoptic_case(root, seed, num_images, kind)
    ours = pq_compute(gt_path, pred_path, num_workers=0, engine=engine)
    _assert_same(ours, _reference(gt_json, pred_json, root))


def test_parallel_equals_reference_pq_compute(tmp_path, panoptic_case):
    gt_json, pred_json, (gt_path, pred_path) = panoptic_case(str(tmp_path), 7, 12, "normal")
    with contextlib.redirect_stdout(io.StringIO()):
        ref = papi.pq_compute(gt_path, pred_path)
    _assert_same(pq_compute(gt_path, pred_path, num_workers=2), ref)


def _one_image(gt, gt_segs, pred, pred_segs, cats=(1, 2)):
    return pq_image_stats(np.array(gt), gt_segs, np.array(pred), pred_segs, list(cats), image_id=5)


def test_crowd_region_ignores_false_positive_of_its_category_only():
    gt = [[1, 1, 2, 2], [1, 1, 2, 2]]
    pred = [[0, 0, 9, 9], [0, 0, 9, 8]]
    gt_segs = [{"id": 1, "category_id": 1, "iscrowd": 0}, {"id": 2, "category_id": 2, "iscrowd": 1}]
    # 9 lies wholly on the crowd region of its category: ignored; 8 is of another category: a FP
    pred_segs = [{"id": 9, "category_id": 2}, {"id": 8, "category_id": 1}]
    s = _one_image(gt, gt_segs, pred, pred_segs)
    assert s.tp.tolist() == [0, 0] and s.fn.tolist() == [1, 0] and s.fp.tolist() == [1, 0]


def test_match_iou_uses_void_free_union():
    # gt 1 covers 2 px; pred 5 covers them + 2 VOID px: IoU = 2 / (4 + 2 - 2 - 2) = 1
    gt = [[1, 1, 0, 0]]
    pred = [[5, 5, 5, 5]]
    s = _one_image(gt, [{"id": 1, "category_id": 1, "iscrowd": 0}], pred, [{"id": 5, "category_id": 1}])
    assert s.tp.tolist() == [1, 0] and s.iou[0] == 1.0 and s.fp.sum() == 0 and s.fn.sum() == 0


@pytest.mark.parametrize(
    "pred, pred_segs, message",
    [
        ([[3, 3]], [{"id": 4, "category_id": 1}], "segment ids [3] are in the PNG"),
        ([[4, 4]], [{"id": 4, "category_id": 1}, {"id": 6, "category_id": 1}], "[6] are in segments_info"),
        ([[4, 4]], [{"id": 4, "category_id": 1}, {"id": 4, "category_id": 2}], "id 4 is listed twice"),
        ([[4, 4]], [{"id": 4, "category_id": 77}], "category id 77"),
        ([[4, 4, 4]], [{"id": 4, "category_id": 1}], "prediction is 3x1"),
    ],
)
def test_bad_prediction_is_named(pred, pred_segs, message):
    with pytest.raises(EvaluationInputError, match="image 5") as e:
        _one_image([[1, 1]], [{"id": 1, "category_id": 1, "iscrowd": 0}], pred, pred_segs)
    assert message in str(e.value)


def test_errors_name_the_file(tmp_path, panoptic_case):
    gt_json, pred_json, (gt_path, pred_path) = panoptic_case(str(tmp_path), 3, 2, "normal")
    pred_json["annotations"][0]["image_id"] = 99
    with open(pred_path, "w") as f:
        json.dump(pred_json, f)
    with pytest.raises(EvaluationInputError, match=r"pred\.json: image id 99 is not in the ground truth"):
        pq_compute(gt_path, pred_path, num_workers=0)
    with open(pred_path, "w") as f:
        f.write("{not json")
    with pytest.raises(EvaluationInputError, match=r"pred\.json: malformed JSON"):
        pq_compute(gt_path, pred_path, num_workers=0)
    # a PNG whose size differs from its image entry
    gt_json["images"][1]["width"] += 1
    with open(gt_path, "w") as f:
        json.dump(gt_json, f)
    with pytest.raises(EvaluationInputError, match=r"1\.png: PNG is"):
        pq_compute_pairs(
            list(zip(gt_json["annotations"], gt_json["annotations"])),
            str(tmp_path / "gt"), str(tmp_path / "gt"), gt_json["categories"],
            {im["id"]: im for im in gt_json["images"]}, num_workers=0,
        )
