"""evaluate_coco (every engine) against pycocotools' COCOeval, the oracle, on randomised COCO cases."""
import contextlib
import io
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import seg_d2  # noqa: F401
from pycocotools.coco import COCO
from seg_d2.evaluation.coco_mask_ap import ENGINES, evaluate_coco, run_cocoeval
from seg_d2.evaluation.validation import EvaluationInputError


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), kind=st.sampled_from(["normal", "normal", "empty_gt"]),
       iou_type=st.sampled_from(["segm", "bbox"]))
def test_every_engine_matches_pycocotools(coco, seed, kind, iou_type):
    gt, dets = coco.case(seed, kind)
    if not dets or (iou_type == "bbox" and "bbox" not in dets[0]):
        return
    ref = coco.oracle(gt, dets, iou_type)
    for engine in ENGINES:
        ours = run_cocoeval(gt, dets, iou_type, engine)
        np.testing.assert_allclose(ours.stats, ref.stats, atol=1e-9, rtol=0, err_msg=engine)
        np.testing.assert_allclose(ours.eval["precision"], ref.eval["precision"], atol=1e-9, rtol=0)
        metrics = evaluate_coco(gt, dets, iou_type, engine)
        for k, cat in enumerate(gt["categories"]):
            p = ref.eval["precision"][:, :, k, 0, -1]
            expected = np.mean(p[p > -1]) * 100 if (p > -1).any() else math.nan
            assert metrics[f"AP-{cat['id']}"] == pytest.approx(expected, abs=1e-9, nan_ok=True)


def test_box_area_quirk_is_kept_offline_and_dropped_for_detectron2(coco):
    gt, dets = coco.case(13, "normal")
    dets = [d for d in dets if isinstance(d["segmentation"], dict)]  # box-free pycocotools needs RLE
    assert dets
    for d in dets:
        d["bbox"] = [0.0, 0.0, 200.0, 200.0]  # every detection "large" by its box
    ref = coco.oracle(gt, dets, "segm")
    no_box = coco.oracle(gt, [{k: v for k, v in d.items() if k != "bbox"} for d in dets], "segm")
    assert not np.allclose(ref.stats, no_box.stats)  # the case exercises the quirk
    np.testing.assert_allclose(run_cocoeval(gt, dets, "segm").stats, ref.stats, atol=1e-9, rtol=0)
    dropped = run_cocoeval(gt, dets, "segm", drop_bbox_for_segm=True).stats
    np.testing.assert_allclose(dropped, no_box.stats, atol=1e-9, rtol=0)


def test_empty_predictions_score_zero_where_ground_truth_exists(coco):
    gt, _ = coco.case(5, "normal")
    image = gt["images"][0]
    mask = np.zeros((image["height"], image["width"]), bool)
    mask[:4, :4] = True
    gt["annotations"].append({"id": 999, "image_id": image["id"], "category_id": 1, "segmentation": coco.rle(mask),
                              "area": 16.0, "bbox": [0, 0, 4, 4], "iscrowd": 0})
    for engine in ENGINES:
        assert evaluate_coco(gt, [], "segm", engine)["AP"] == 0.0


def test_custom_max_dets_like_detectron2(coco):
    from detectron2.evaluation.coco_evaluation import COCOevalMaxDets

    gt, dets = coco.case(21, "normal")
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        ref = COCOevalMaxDets(coco, coco.loadRes([dict(d) for d in dets]), "segm")
        ref.params.maxDets = [1, 10, 300]  # plain COCOeval.summarize gives -1 here
        ref.evaluate()
        ref.accumulate()
        ref.summarize()
    for engine in ENGINES:
        ours = run_cocoeval(gt, dets, "segm", engine, max_dets=(1, 10, 300)).stats
        np.testing.assert_allclose(ours, ref.stats, atol=1e-9, rtol=0)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda gt, d: d.__setitem__(0, {**d[0], "image_id": 4242}), "detection #0: image id 4242 is not in the ground truth's images"),
        (lambda gt, d: d.__setitem__(0, {**d[0], "category_id": 55}), "detection #0: category id 55 is not in the ground truth's categories"),
        (lambda gt, d: gt["images"].append(dict(gt["images"][0])), "duplicate image id"),
        (lambda gt, d: d[0].pop("segmentation"), "detection #0: no 'segmentation' for segm AP"),
    ],
)
def test_bad_input_names_file_and_id(coco, tmp_path, mutate, message):
    gt, dets = coco.case(3, "normal")
    mutate(gt, dets)
    path = tmp_path / "dets.json"
    path.write_text(json.dumps(dets))
    with pytest.raises(EvaluationInputError, match=message) as e:
        evaluate_coco(gt, str(path), "segm")
    assert "dets.json" in str(e.value) or "ground truth" in str(e.value)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda gt, d: d[5].pop("score"), r"detection #5: missing key\(s\) \['score'\]"),
        (lambda gt, d: d.__setitem__(3, {**d[3], "image_id": [1]}), None),  # unhashable id: an error, not a pass
        (lambda gt, d: (d[0].pop("segmentation"), d.__setitem__(4, {**d[4], "category_id": 77})),
         "detection #4: category id 77"),  # id errors come before missing masks, as before
    ],
)
def test_vectorised_result_checks_report_the_first_offender(coco, mutate, message):
    gt, dets = coco.case(3, "normal")
    mutate(gt, dets)
    with pytest.raises((EvaluationInputError, TypeError), match=message):
        run_cocoeval(gt, dets, "segm")


@pytest.mark.parametrize("engine", ENGINES)
def test_results_and_ground_truth_are_left_unmodified(coco, engine):
    """hotcoco gets the caller's detections without copies: neither it nor seg_d2 may write into them."""
    gt, dets = coco.case(4, "normal")
    dets = [dict(d, bbox=[1.0, 2.0, 3.0, 4.0]) for d in dets]
    dets[0] = {**dets[0], "segmentation": [[1.0, 1.0, 9.0, 1.0, 9.0, 9.0]]}
    gt_before, dets_before = json.dumps(gt, sort_keys=True), json.dumps(dets, sort_keys=True)
    for drop in (False, True):
        run_cocoeval(gt, dets, "segm", engine, drop_bbox_for_segm=drop)
        assert json.dumps(dets, sort_keys=True) == dets_before
        if engine in ("auto", "hotcoco"):  # pycocotools' evaluate() turns GT polygons into RLE in place
            assert json.dumps(gt, sort_keys=True) == gt_before
