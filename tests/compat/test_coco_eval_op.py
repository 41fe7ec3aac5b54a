"""The numpy fast-COCOeval ops must give the compiled ops' values: pycocotools' COCOeval's, exactly, but for
precision, which the C++ computes as tp / (tp + fp) where pycocotools adds eps (up to 2 ulp apart)."""
import contextlib
import copy
import io
import json
import uuid

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import seg_d2  # noqa: F401  (installs detectron2._C before detectron2 is imported)
import torch
from detectron2 import _C
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.evaluation import COCOEvaluator
from detectron2.evaluation.fast_eval_api import COCOeval_opt
from detectron2.structures import Boxes, Instances
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from seg_d2.compat.c_ops import coco_eval

H, W = 96, 128
CAT_IDS = [1, 4, 9]  # non-contiguous; category 9 never gets ground truth


def _box(rng, small_ok=True):
    # log-uniform sides so boxes land in the small, medium and large COCO area ranges
    w, h = np.exp(rng.uniform(np.log(2 if small_ok else 8), np.log(W), size=2))
    w, h = min(w, W - 1), min(h, H - 1)
    x, y = rng.uniform(0, W - w), rng.uniform(0, H - h)
    return [float(x), float(y), float(w), float(h)]


def _jitter(rng, box):
    if rng.random() < 0.2:
        return list(box)  # exact copy: IoU 1.0 hits the 1 - 1e-10 threshold clamp
    x, y, w, h = box
    d = rng.normal(0, 0.1, size=4) * [w, h, w, h]
    w, h = max(1.0, w + d[2]), max(1.0, h + d[3])
    return [float(np.clip(x + d[0], 0, W - w)), float(np.clip(y + d[1], 0, H - h)), w, h]


def _rle(rng, box):
    x, y, w, h = (int(round(v)) for v in box)
    mask = np.zeros((H, W), dtype=np.uint8)
    mask[y : y + max(h, 1), x : x + max(w, 1)] = 1
    mask &= (rng.random((H, W)) > 0.15).astype(np.uint8)  # ragged masks, not plain boxes
    rle = mask_util.encode(np.asfortranarray(mask))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _random_coco(seed):
    """A small random COCO gt dict and detection list exercising COCOeval's corner cases."""
    rng = np.random.default_rng(seed)
    img_ids = sorted(rng.choice(1000, size=int(rng.integers(3, 9)), replace=False).tolist())
    images = [{"id": i, "height": H, "width": W, "file_name": f"{i}.jpg"} for i in img_ids]
    categories = [{"id": c, "name": f"cat{c}"} for c in CAT_IDS]
    anns, dets = [], []
    next_gt_id = int(rng.integers(0, 2))  # an id of 0 exercises pycocotools' "0 = unmatched"
    for img in img_ids:
        for _ in range(int(rng.integers(0, 6))):  # some images have no ground truth
            box = _box(rng)
            ann = {"id": next_gt_id, "image_id": img, "category_id": int(rng.choice(CAT_IDS[:2]))}
            ann.update(bbox=box, iscrowd=int(rng.random() < 0.15), segmentation=_rle(rng, box))
            ann["area"] = float(mask_util.area(ann["segmentation"]))
            anns.append(ann)
            next_gt_id += 1
            if rng.random() < 0.15:  # duplicated gt: equal IoUs exercise COCOeval's tie-break
                anns.append(dict(ann, id=next_gt_id, iscrowd=0))
                next_gt_id += 1
            for _ in range(int(rng.choice([0, 1, 1, 2]))):  # misses, hits and duplicates
                cat = ann["category_id"] if rng.random() < 0.9 else int(rng.choice(CAT_IDS))
                dets.append({"image_id": img, "category_id": cat, "bbox": _jitter(rng, box)})
        for _ in range(int(rng.integers(0, 4))):  # false positives, also on gt-free images
            cat = int(rng.choice(CAT_IDS))
            dets.append({"image_id": img, "category_id": cat, "bbox": _box(rng)})
    for d in dets:
        d["score"] = float(rng.integers(1, 8)) / 8  # coarse scores give many ties
        d["segmentation"] = _rle(rng, d["bbox"])
    gt = {"images": images, "categories": categories, "annotations": anns}
    return gt, dets


def _evaluate(cls, gt_dict, dets, iou_type, use_cats=1, max_dets=None):
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt_dict)
        coco_gt.createIndex()
        if dets:
            coco_dt = coco_gt.loadRes(copy.deepcopy(dets))
        else:  # loadRes cannot take an empty list
            coco_dt = COCO()
            coco_dt.dataset = {"images": gt_dict["images"], "categories": gt_dict["categories"]}
            coco_dt.dataset["annotations"] = []
            coco_dt.createIndex()
        ev = cls(coco_gt, coco_dt, iou_type)
        ev.params.useCats = use_cats
        if max_dets is not None:
            ev.params.maxDets = max_dets
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def _assert_same_eval(gt_dict, dets, iou_type, **kwargs):
    ref = _evaluate(COCOeval, gt_dict, dets, iou_type, **kwargs)
    fast = _evaluate(COCOeval_opt, gt_dict, dets, iou_type, **kwargs)
    assert fast.eval["counts"] == ref.eval["counts"]
    for key in ("precision", "recall", "scores"):
        assert fast.eval[key].dtype == ref.eval[key].dtype
    for key in ("recall", "scores"):
        np.testing.assert_array_equal(fast.eval[key], ref.eval[key], err_msg=key)
    np.testing.assert_array_max_ulp(fast.eval["precision"], ref.eval["precision"], maxulp=2)
    np.testing.assert_allclose(fast.stats, ref.stats, rtol=0, atol=1e-12)
    return ref


def test_detectron2_uses_these_ops():
    assert _C.COCOevalAccumulate is coco_eval.COCOevalAccumulate
    assert _C.COCOevalEvaluateImages is coco_eval.COCOevalEvaluateImages


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_pycocotools_fixed_seeds(seed, iou_type):
    gt, dets = _random_coco(seed)
    ref = _assert_same_eval(gt, dets, iou_type)
    assert (ref.eval["precision"] > 0).any()  # the case is non-trivial: some matches happen


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    iou_type=st.sampled_from(["bbox", "segm"]),
    use_cats=st.sampled_from([0, 1]),
    max_dets=st.sampled_from([None, [1, 2, 4], [2, 3, 3]]),  # summarize() needs 3
)
def test_matches_pycocotools_random(seed, iou_type, use_cats, max_dets):
    gt, dets = _random_coco(seed)
    _assert_same_eval(gt, dets, iou_type, use_cats=use_cats, max_dets=max_dets)


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_no_detections_and_no_ground_truth(iou_type):
    gt, dets = _random_coco(3)
    ref = _assert_same_eval(gt, [], iou_type)
    # categories with gt get precision 0 (area ranges without gt stay -1)
    assert set(np.unique(ref.eval["precision"][:, :, :2]).tolist()) == {0.0, -1.0}
    no_gt = dict(gt, annotations=[])
    ref = _assert_same_eval(no_gt, dets, iou_type)
    assert (ref.eval["precision"] == -1).all()


def _instances(spec):
    return [coco_eval.InstanceAnnotation(*s) for s in spec]


def test_evaluate_images_matching_rules():
    # one image, one category; gts: 10 regular, 20 regular with the same IoU, 30 crowd
    gts = _instances([(10, 0.0, 100.0, False, False), (20, 0.0, 100.0, False, False),
                      (30, 0.0, 100.0, True, True)])
    # dets given unsorted; sorted by score (stable) they are 2, 1, 3
    dts = _instances([(1, 0.5, 100.0, False, False), (2, 0.9, 100.0, False, False),
                      (3, 0.5, 5.0, False, False)])
    ious = np.array([[0.7, 0.7, 0.0],   # det 2: equal IoUs -> the later gt (20) wins
                     [0.6, 0.0, 0.9],   # det 1: regular gt 10 beats a better crowd at 0.5
                     [0.6, 0.6, 0.8]])  # det 3: 10 and 20 taken -> crowd 30, ignored
    (ev,) = coco_eval.COCOevalEvaluateImages(
        [[0, 1e10]], 3, [0.5, 0.65], [[ious]], [[gts]], [[dts]]
    )
    # at 0.65 det 1 misses gt 10 and falls back to the crowd, which det 3 then matches again
    np.testing.assert_array_equal(ev.dt_matches, [[20, 10, 30], [20, 30, 30]])
    np.testing.assert_array_equal(ev.dt_ignores, [[False, False, True], [False, True, True]])
    np.testing.assert_array_equal(ev.dt_scores, [0.9, 0.5, 0.5])
    # det 3 (area 5) unmatched and outside [10, 1e10] -> ignored; matched ones are kept
    (ev,) = coco_eval.COCOevalEvaluateImages(
        [[10, 1e10]], 3, [0.95], [[ious]], [[gts]], [[dts]]
    )
    np.testing.assert_array_equal(ev.dt_ignores, [[False, False, True]])


def test_precision_is_tp_over_detections_as_in_cocoeval_cpp():
    # one image: the best detection hits, the next misses; 1 gt -> precision 1 at every recall level
    gts = _instances([(1, 0.0, 10.0, False, False)])
    dts = _instances([(1, 0.9, 10.0, False, False), (2, 0.8, 10.0, False, False)])
    evals = coco_eval.COCOevalEvaluateImages([[0, 1e10]], 2, [0.5], [[np.array([[0.9], [0.0]])]], [[gts]], [[dts]])
    params = type("Params", (), dict(recThrs=[0.0, 0.5, 1.0], maxDets=[2], iouThrs=[0.5], catIds=[1], useCats=1,
                                     areaRng=[[0, 1e10]], imgIds=[0]))()
    precision = coco_eval.COCOevalAccumulate(params, evals)["precision"]
    assert precision.ravel().tolist() == [1.0, 1.0, 1.0]  # pycocotools: 1 / (1 + eps) = 1 - 2.2e-16


def test_evaluate_images_rejects_bad_iou_shape():
    gts = _instances([(1, 0.0, 10.0, False, False)])
    dts = _instances([(1, 0.5, 10.0, False, False), (2, 0.4, 10.0, False, False)])
    with pytest.raises(ValueError, match="IoU matrix"):
        coco_eval.COCOevalEvaluateImages(
            [[0, 1e10]], 100, [0.5], [[np.ones((1, 1))]], [[gts]], [[dts]]
        )


def _prediction(rng, gt_anns, img_id, num_cats):
    boxes, classes, masks = [], [], []
    for ann in gt_anns:
        if ann["image_id"] == img_id and rng.random() < 0.8:
            boxes.append(_jitter(rng, ann["bbox"]))
            classes.append(CAT_IDS.index(ann["category_id"]))
    for _ in range(2):
        boxes.append(_box(rng))
        classes.append(int(rng.integers(0, num_cats)))
    for x, y, w, h in boxes:
        m = torch.zeros(H, W, dtype=torch.bool)
        m[int(y) : int(y + h) + 1, int(x) : int(x + w) + 1] = True
        masks.append(m)
    xyxy = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in boxes], dtype=torch.float32)
    inst = Instances((H, W))
    inst.pred_boxes = Boxes(xyxy)
    inst.scores = torch.tensor(rng.integers(1, 6, size=len(boxes)) / 5, dtype=torch.float32)
    inst.pred_classes = torch.tensor(classes, dtype=torch.int64)
    inst.pred_masks = torch.stack(masks)
    return {"instances": inst}


def test_coco_evaluator_fast_equals_official(tmp_path):
    gt, _ = _random_coco(5)
    for ann in gt["annotations"]:
        ann["id"] += 1  # COCO json ids start at 1
    json_file = tmp_path / "gt.json"
    json_file.write_text(json.dumps(gt))
    name = "seg_d2_test_coco_eval_" + uuid.uuid4().hex
    register_coco_instances(name, {}, str(json_file), str(tmp_path))
    try:
        DatasetCatalog.get(name)  # fills thing_dataset_id_to_contiguous_id
        rng = np.random.default_rng(0)
        inputs = [{"image_id": img["id"]} for img in gt["images"]]
        outputs = [_prediction(rng, gt["annotations"], i["image_id"], len(CAT_IDS)) for i in inputs]
        results = []
        for fast in (True, False):
            evaluator = COCOEvaluator(name, distributed=False, use_fast_impl=fast)
            evaluator.reset()
            evaluator.process(inputs, outputs)
            with contextlib.redirect_stdout(io.StringIO()):
                results.append(evaluator.evaluate())
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    assert set(results[0]) == {"bbox", "segm"}
    assert results[0]["bbox"]["AP50"] > 0
    for task in ("bbox", "segm"):  # precision differs from pycocotools' in the last bits (see the module doc)
        assert results[0][task].keys() == results[1][task].keys()
        for key, value in results[0][task].items():
            np.testing.assert_allclose(value, results[1][task][key], rtol=1e-12, atol=0, err_msg=key)


def test_segmentation_results_can_be_loaded_twice():
    """loadRes stores maskUtils.toBbox's ndarray as the "bbox" of segmentation-only results; loading those
    dicts again raised ValueError on numpy >= 1.25 (Detectron2's test_fast_eval does, once per evaluator)."""
    gt, dets = _random_coco(0)
    segm_only = [{k: v for k, v in d.items() if k != "bbox"} for d in dets]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_gt.loadRes(segm_only)
        boxes = [mask_util.toBbox(d["segmentation"]) for d in segm_only]
        assert isinstance(segm_only[0]["bbox"], np.ndarray)
        reloaded = coco_gt.loadRes(segm_only).dataset["annotations"]
    # the second load reads the stored boxes, as pycocotools did when `ndarray == []` was False
    assert [a["bbox"] for a in reloaded] == [b.tolist() for b in boxes]
    assert [a["area"] for a in reloaded] == [b[2] * b[3] for b in boxes]
