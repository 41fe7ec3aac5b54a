"""Malformed COCO inputs: the same EvaluationInputError from every engine, naming the file and the id, through
run_cocoeval / evaluate_coco, FastCOCOEvaluator, and tools/evaluate.py (exit status 2, message on stderr).

Each case is one mutation of a small valid ground truth / results pair, written to JSON files (NaN and
inf as Python's json writes them, the tokens NaN and Infinity).
"""
import copy
import importlib.util
import json
import math
import os
import tempfile

import msgspec
import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

import seg_d2  # noqa: F401
from pycocotools import mask as mask_util
from seg_d2.data.coco_checks import COCOFormatError, check_bbox, check_id, check_score, check_segmentation
from seg_d2.evaluation import EvaluationInputError, evaluate_coco
from seg_d2.evaluation.coco_inputs import _Index, _typed_file_clear, check_results
from seg_d2.evaluation.coco_mask_ap import ENGINES, run_cocoeval

_spec = importlib.util.spec_from_file_location(
    "evaluate_cli", os.path.join(os.path.dirname(__file__), "..", "..", "tools", "evaluate.py"))
cli = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cli)


def _rle(h, w, y0, x0, size=6):
    m = np.zeros((h, w), np.uint8)
    m[y0:y0 + size, x0:x0 + size] = 1
    rle = mask_util.encode(np.asfortranarray(m))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def _valid():
    """Two images, two categories, an RLE and a polygon annotation, three detections with boxes."""
    gt = {"images": [{"id": 1, "height": 20, "width": 30}, {"id": 2, "height": 16, "width": 16}],
          "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
          "annotations": [
              {"id": 1, "image_id": 1, "category_id": 1, "segmentation": _rle(20, 30, 2, 2), "area": 36.0,
               "bbox": [2, 2, 6, 6], "iscrowd": 0},
              {"id": 2, "image_id": 2, "category_id": 2, "segmentation": [[1, 1, 9, 1, 9, 9, 1, 9]], "area": 64.0,
               "bbox": [1, 1, 8, 8], "iscrowd": 0}]}
    dets = [{"image_id": 1, "category_id": 1, "score": 0.9, "segmentation": _rle(20, 30, 3, 2), "bbox": [2, 3, 6, 6]},
            {"image_id": 2, "category_id": 2, "score": 0.8, "segmentation": _rle(16, 16, 1, 1, 8), "bbox": [1, 1, 8, 8]},
            {"image_id": 2, "category_id": 1, "score": 0.3, "segmentation": _rle(16, 16, 5, 5), "bbox": [5, 5, 6, 6]}]
    return gt, dets


def _ann(k, **values):
    return lambda gt, dets: gt["annotations"][k].update(values)


def _det(k, **values):
    return lambda gt, dets: dets[k].update(values)


def _drop(k, key, where="dets"):
    return lambda gt, dets: (dets[k] if where == "dets" else gt["annotations"][k]).pop(key)


# (mutation, iou type, file named, message)
CASES = {
    "nan score": (_det(1, score=math.nan), "segm", "dets", "detection #1: score nan is not a finite number"),
    "inf score": (_det(0, score=math.inf), "segm", "dets", "detection #0: score inf is not a finite number"),
    "string score": (_det(2, score="0.3"), "bbox", "dets", "detection #2: score '0.3' is not a finite number"),
    "bool score": (_det(2, score=True), "segm", "dets", "detection #2: score True is not a finite number"),
    "number as category name": (lambda gt, d: gt["categories"][1].update(name=1.0), "segm", "gt",
                                "category id 2 has name 1.0; category names must be strings"),
    "flat polygon detection": (_det(0, segmentation=[1, 1, 9, 1, 9, 9]), "segm", "dets",
                               "detection #0: 'segmentation' is a flat list of numbers"),
    "flat polygon ground truth": (_ann(1, segmentation=[1, 1, 9, 1, 9, 9, 1, 9]), "bbox", "gt",
                                  "annotation id 2: 'segmentation' is a flat list of numbers"),
    "RLE size of another image (detection)": (_det(1, segmentation=_rle(20, 30, 1, 1)), "segm", "dets",
                                              "detection #1: RLE size [20, 30] (height, width) differs from its image's [16, 16]"),
    "RLE size of another image (ground truth)": (_ann(0, segmentation=_rle(16, 16, 1, 1)), "segm", "gt",
                                                 "annotation id 1: RLE size [16, 16] (height, width) differs from its image's [20, 30]"),
    "float image id": (_det(0, image_id=1.0), "segm", "dets", "detection #0: image id 1.0 is not an integer >= 0"),
    "string annotation id": (_ann(1, id="b"), "segm", "gt", "annotations: annotation id 'b' is not an integer >= 0"),
    "negative width": (_det(2, bbox=[5, 5, -6, 6]), "bbox", "dets", "detection #2: 'bbox' [5, 5, -6, 6] has a negative"),
    "negative height, boxes only": (lambda gt, dets: [d.pop("segmentation") for d in dets] and dets[1].update(
        bbox=[1, 1, 8, -8]), "bbox", "dets", "detection #1: 'bbox' [1, 1, 8, -8] has a negative"),
    "box of three numbers": (_det(1, bbox=[1, 1, 8]), "bbox", "dets", "detection #1: 'bbox' [1, 1, 8] is not four"),
    "box on some detections only": (_drop(1, "bbox"), "segm", "dets", "detection #1 has no 'bbox' but detection #0 has"),
    "no box for box AP": (_drop(0, "bbox"), "bbox", "dets", "detection #0: no 'bbox' for bbox AP"),
    "missing area": (_drop(0, "area", "gt"), "segm", "gt", "annotation id 1: missing key(s) ['area']"),
    "NaN area": (_ann(1, area=math.nan), "bbox", "gt", "annotation id 2: 'area' nan is not a finite number >= 0"),
    "4-number polygon": (_ann(1, segmentation=[[1, 1, 9, 9]]), "segm", "gt", "annotation id 2: polygon #0 has 4 coordinates"),
    "empty ground-truth mask": (_ann(1, segmentation=[]), "segm", "gt", "annotation id 2: empty 'segmentation'"),
    "image without height": (lambda gt, d: gt["images"][1].pop("height"), "segm", "gt",
                             "annotation id 2: image id 2 needs an integer 'height' and 'width' for mask AP"),
    "uncompressed RLE of the wrong length": (_det(2, segmentation={"size": [16, 16], "counts": [10, 5, 100]}), "segm",
                                             "dets", "detection #2: uncompressed RLE counts add up to 115 pixels"),
    "unknown category": (_ann(0, category_id=9), "segm", "gt", "annotation id 1: category id 9 is not in the ground truth's"),
}


def _files(tmp_path, mutate):
    gt, dets = _valid()
    mutate(gt, dets)
    paths = str(tmp_path / "gt.json"), str(tmp_path / "dets.json")
    for path, obj in zip(paths, (gt, dets)):
        with open(path, "w") as f:
            json.dump(obj, f)  # NaN / Infinity tokens, as Python writes them
    return gt, dets, paths


@pytest.mark.parametrize("case", list(CASES))
def test_every_engine_and_the_cli_refuse_it_naming_file_and_id(tmp_path, capsys, case):
    mutate, iou_type, named, message = CASES[case]
    gt, dets, (gt_path, dets_path) = _files(tmp_path, mutate)
    path = gt_path if named == "gt" else dets_path
    for engine in ENGINES:
        with pytest.raises(EvaluationInputError) as error:
            run_cocoeval(gt_path, dets_path, iou_type, engine)
        assert str(error.value).startswith(f"{path}: {message}"), (engine, str(error.value))
        assert cli.main(["instances", "--gt", gt_path, "--results", dets_path, "--iou-type", iou_type,
                         "--engine", engine]) == 2
        assert f"error: {path}: {message}" in capsys.readouterr().err
    with pytest.raises(EvaluationInputError, match="^(ground truth|results): "):  # in memory: no file to name
        evaluate_coco(copy.deepcopy(gt), copy.deepcopy(dets), iou_type)


def test_results_that_are_not_a_list(tmp_path, capsys):
    gt, dets, (gt_path, dets_path) = _files(tmp_path, lambda gt, dets: None)
    with open(dets_path, "w") as f:
        json.dump({"annotations": dets}, f)
    for engine in ENGINES:
        with pytest.raises(EvaluationInputError, match=f"^{dets_path}: a COCO results file must hold a JSON list"):
            run_cocoeval(gt_path, dets_path, "segm", engine)
    assert cli.main(["instances", "--gt", gt_path, "--results", dets_path]) == 2


@pytest.mark.parametrize("named", ["gt", "dets"])
def test_invalid_utf8_is_malformed_json_naming_the_file(tmp_path, capsys, named):
    """msgspec raises a bare UnicodeDecodeError on invalid UTF-8 in a string; it is the file's error."""
    _, _, (gt_path, dets_path) = _files(tmp_path, lambda gt, dets: None)
    path = gt_path if named == "gt" else dets_path
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data.replace(b'"counts": "', b'"counts": "\xff', 1))  # a byte no UTF-8 text holds
    for engine in ENGINES:
        with pytest.raises(EvaluationInputError, match=f"^{path}: malformed JSON"):
            run_cocoeval(gt_path, dets_path, "segm", engine)
    assert cli.main(["instances", "--gt", gt_path, "--results", dets_path]) == 2
    assert f"error: {path}: malformed JSON" in capsys.readouterr().err


def test_valid_case_evaluates_on_every_engine(tmp_path):
    """The base of the cases above is valid, so each failure comes from its one mutation."""
    _, _, (gt_path, dets_path) = _files(tmp_path, lambda gt, dets: None)
    for iou_type in ("segm", "bbox"):
        aps = {float(run_cocoeval(gt_path, dets_path, iou_type, engine).stats[0]) for engine in ENGINES}
        assert len(aps) == 1 and 0 < aps.pop() < 1


def test_fast_coco_evaluator_refuses_a_nan_score(tmp_path):
    """During training the same checks apply: a model whose scores are NaN gets an error, not a number."""
    import torch
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.structures import Boxes, Instances

    from seg_d2.data import register_shapes
    from seg_d2.evaluation import FastCOCOEvaluator

    register_shapes("seg_d2_test_bad_inputs", root=str(tmp_path / "shapes"), seed=1, split_sizes={"val": 2})
    name = "seg_d2_test_bad_inputs_val"
    d = DatasetCatalog.get(name)[0]
    instances = Instances((d["height"], d["width"]))
    instances.pred_boxes = Boxes(torch.tensor([[1.0, 1.0, 9.0, 9.0]]))
    instances.scores = torch.tensor([float("nan")])
    instances.pred_classes = torch.tensor([0])
    instances.pred_masks = torch.zeros((1, d["height"], d["width"]), dtype=torch.bool)
    evaluator = FastCOCOEvaluator(name, output_dir=str(tmp_path / "eval"), tasks=("bbox",))
    evaluator.reset()
    evaluator.process([{"image_id": d["image_id"]}], [{"instances": instances}])
    with pytest.raises(EvaluationInputError, match=f"predictions on {name}: detection #0: score nan"):
        evaluator.evaluate()
    assert MetadataCatalog.get(name).json_file


# The typed fast path for results files (msgspec) must clear nothing the record checks refuse.
_value = st.one_of(st.none(), st.booleans(), st.integers(-3, 40), st.floats(allow_nan=False, allow_infinity=False),
                   st.text(max_size=3))
_box = st.one_of(st.lists(st.one_of(st.integers(-2, 30), st.floats(-2, 30), st.booleans()), max_size=5),
                 st.lists(st.integers(-2, 9), min_size=4, max_size=4))
_mask = st.fixed_dictionaries({"size": st.lists(st.one_of(st.integers(0, 30), st.sampled_from([16])), max_size=3),
                               "counts": st.one_of(st.text(max_size=4), st.integers())})
_valid_record = st.fixed_dictionaries(
    {"image_id": st.integers(0, 2), "category_id": st.integers(0, 2), "score": st.floats(0, 1)},
    optional={"bbox": st.lists(st.floats(0, 9), min_size=4, max_size=4),
              "segmentation": st.fixed_dictionaries({"size": st.just([16, 16]), "counts": st.text(max_size=4)})})
_corrupted_record = st.tuples(_valid_record, st.sampled_from(["image_id", "category_id", "score", "bbox", "segmentation"]),
                              st.one_of(_value, _box, _mask)).map(lambda t: {**t[0], t[1]: t[2]})


@settings(max_examples=300, deadline=None)
@given(records=st.lists(st.one_of(_valid_record, _corrupted_record), min_size=1, max_size=3),
       iou_type=st.sampled_from(["segm", "bbox"]))
def test_what_the_typed_path_clears_the_record_checks_accept(records, iou_type):
    gt = {"images": [{"id": i, "height": 16, "width": 16} for i in range(3)],
          "categories": [{"id": c, "name": f"c{c}"} for c in range(3)]}
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "dets.json")
        with open(path, "wb") as f:
            f.write(msgspec.json.encode(records))
        cleared = _typed_file_clear(path, _Index(gt), iou_type) is not None
    event(f"cleared: {cleared}")
    if cleared:
        check_results(records, gt, "file", iou_type)  # must not raise


@pytest.mark.parametrize("check, value, message", [
    (lambda v, where: check_id(v, "image", where), True, "image id True is not an integer >= 0"),
    (lambda v, where: check_id(v, "image", where), -1, "image id -1 is not an integer >= 0"),
    (check_score, float("nan"), "score nan is not a finite number"),
    (check_bbox, [0, 0, float("inf"), 1], "'bbox' [0, 0, inf, 1] is not four finite numbers"),
    (check_segmentation, [[0, 0, 1, 1, 2, float("nan")]], "polygon #0 is not a list of finite numbers"),
    (check_segmentation, {"size": [4, 4.0], "counts": "x"}, "RLE size [4, 4.0] is not two integers"),
    (check_segmentation, {"size": [4, 4], "counts": 5}, "RLE counts must be a string or a list of integers"),
    (check_segmentation, "polygon", "'segmentation' must be a list of polygons or an RLE dict"),
])
def test_record_checks_name_what_is_wrong(check, value, message):
    with pytest.raises(COCOFormatError) as error:
        check(value, "where")
    assert str(error.value).startswith(f"where: {message}")
