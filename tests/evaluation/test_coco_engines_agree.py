"""Every COCO engine gives the same numbers on the same files, ids 0 included, and they are the right ones.

The right ones: pycocotools' COCOeval on the ground truth with its annotation ids renumbered 1..N (what
"as if ids were unique and non-zero" means); pycocotools on the file as it is scores a match to id 0 as a
false positive (cocodataset/cocoapi#664), which seg_d2 warns about, naming the file.
"""
import json
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import seg_d2  # noqa: F401
from pycocotools import mask as mask_util
from seg_d2.evaluation import AnnotationIdZeroWarning
from seg_d2.evaluation.coco_mask_ap import ENGINES, run_cocoeval


def _write(folder, gt, dets, tag=""):
    paths = folder / f"gt{tag}.json", folder / f"dets{tag}.json"
    for path, obj in zip(paths, (gt, dets)):
        path.write_text(json.dumps(obj))
    return str(paths[0]), str(paths[1])


def _every_engine(gt, dets, iou_type):
    """{engine: CocoEvalResult} and the AnnotationIdZeroWarnings seen (ground truth and results as given)."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        results = {engine: run_cocoeval(gt, dets, iou_type, engine) for engine in ENGINES}
    return results, [w for w in seen if issubclass(w.category, AnnotationIdZeroWarning)]


def _assert_same(results, ref, tol=1e-12):
    for engine, ours in results.items():
        np.testing.assert_allclose(ours.stats, ref.stats, atol=tol, rtol=0, err_msg=engine)
        np.testing.assert_allclose(ours.eval["precision"], ref.eval["precision"], atol=tol, rtol=0, err_msg=engine)
        np.testing.assert_allclose(ours.eval["recall"], ref.eval["recall"], atol=tol, rtol=0, err_msg=engine)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), iou_type=st.sampled_from(["segm", "bbox"]))
def test_files_with_random_ids_including_zero(coco, tmp_path, seed, iou_type):
    gt, dets = coco.case(seed, zero_ids=True)
    if not dets or (iou_type == "bbox" and "bbox" not in dets[0]):
        return
    gt_path, dets_path = _write(tmp_path, gt, dets, tag=seed)
    from_files, seen = _every_engine(gt_path, dets_path, iou_type)
    has_zero = 0 in [a["id"] for a in gt["annotations"]]
    _assert_same(from_files, coco.oracle(coco.renumbered(gt) if has_zero else gt, dets, iou_type))
    assert len(seen) == (len(ENGINES) if has_zero else 0)
    assert all(gt_path in str(w.message) for w in seen)
    in_memory, _ = _every_engine(gt, dets, iou_type)  # the typed file path and the dict path agree
    _assert_same(in_memory, from_files["pycocotools"])


def test_pycocotools_itself_scores_id_zero_lower(coco):
    """The defect the renumbering removes, shown on pycocotools itself: a perfect detection of annotation id 0."""
    mask = np.zeros((20, 20), bool)
    mask[4:12, 4:12] = True
    gt = {"images": [{"id": 0, "height": 20, "width": 20}], "categories": [{"id": 0, "name": "thing"}],
          "annotations": [{"id": 0, "image_id": 0, "category_id": 0, "segmentation": coco.rle(mask),
                           "area": 64.0, "bbox": [4, 4, 8, 8], "iscrowd": 0}]}
    dets = [{"image_id": 0, "category_id": 0, "score": 0.9, "segmentation": coco.rle(mask)}]
    assert coco.oracle(gt, dets, "segm").stats[0] == 0.0  # pycocotools: a false positive
    results, seen = _every_engine(gt, dets, "segm")
    scores = {float(r.stats[0]) for r in results.values()}
    assert len(scores) == 1 and scores.pop() == pytest.approx(1.0) and len(seen) == len(ENGINES)


def test_shuffled_positive_ids_are_not_renumbered(coco):
    """Only id 0 calls for renumbering: other ids reach the engines as they are, and no warning is given."""
    gt, dets = coco.case(7)
    gt["annotations"] = [{**a, "id": 1000 - 7 * k} for k, a in enumerate(gt["annotations"])]
    results, seen = _every_engine(gt, dets, "segm")
    _assert_same(results, coco.oracle(gt, dets, "segm"))
    assert not seen


@pytest.mark.parametrize("with_box", [False, True])
def test_detectron2_style_files_with_boxes_and_rle(coco, tmp_path, with_box):
    """Results files of RLE detections, each with a box (as Detectron2 writes them) or none: the typed path."""
    for seed in range(6):
        gt, dets = coco.case(seed)
        dets = [d for d in dets if isinstance(d["segmentation"], dict)]
        for d in dets:
            d.pop("bbox", None)
            if with_box:
                d["bbox"] = mask_util.toBbox(d["segmentation"]).tolist()
        if not dets:
            continue
        paths = _write(tmp_path, gt, dets, tag=seed)
        for iou_type in ("segm", "bbox") if with_box else ("segm",):
            results, _ = _every_engine(*paths, iou_type)
            _assert_same(results, coco.oracle(gt, dets, iou_type))
