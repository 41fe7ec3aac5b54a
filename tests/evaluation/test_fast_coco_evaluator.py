"""FastCOCOEvaluator, as used during training, equals Detectron2's COCOEvaluator on pycocotools.

Both box and mask AP come from one evaluator run over the same Instances, as in tools/train_net.py, so
an engine that modified shared results or ground truth between the two tasks would show up here.
"""
import numpy as np
import pytest
import torch

import seg_d2  # noqa: F401
from pycocotools import mask as mask_util
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import COCOEvaluator
from detectron2.structures import Boxes, Instances

from seg_d2.data import register_shapes
from seg_d2.evaluation import FastCOCOEvaluator

NAME = "seg_d2_test_fast_coco"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    register_shapes(NAME, root=str(tmp_path_factory.mktemp("shapes")), seed=3, split_sizes={"val": 8})
    return f"{NAME}_val"


def _predictions(dicts, rng):
    """Per image: jittered copies of the ground-truth masks and boxes plus false positives, random scores."""
    outputs = []
    for d in dicts:
        h, w = d["height"], d["width"]
        masks, boxes, classes = [], [], []
        for ann in d["annotations"]:
            segm = ann["segmentation"]
            if isinstance(segm, list):  # polygons
                segm = mask_util.merge(mask_util.frPyObjects(segm, h, w))
            m = mask_util.decode(segm).astype(bool)
            m = np.roll(m, rng.integers(-2, 3, size=2), axis=(0, 1))
            ys, xs = np.nonzero(m)
            if len(ys) == 0:
                continue
            masks.append(m)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            classes.append(ann["category_id"])
        for _ in range(3):  # false positives of random size and class
            x0, y0 = rng.integers(0, w - 20), rng.integers(0, h - 20)
            x1, y1 = x0 + rng.integers(4, 20), y0 + rng.integers(4, 20)
            m = np.zeros((h, w), bool)
            m[y0:y1, x0:x1] = True
            masks.append(m)
            boxes.append([x0, y0, x1, y1])
            classes.append(int(rng.integers(0, 3)))
        instances = Instances((h, w))
        instances.pred_masks = torch.as_tensor(np.stack(masks))
        instances.pred_boxes = Boxes(torch.as_tensor(boxes, dtype=torch.float32))
        instances.scores = torch.as_tensor(rng.random(len(masks)), dtype=torch.float32)
        instances.pred_classes = torch.as_tensor(classes, dtype=torch.int64)
        outputs.append({"instances": instances})
    return outputs


def _evaluate(evaluator, dicts, outputs):
    evaluator.reset()
    for d, out in zip(dicts, outputs):
        evaluator.process([{"image_id": d["image_id"]}], [out])
    return evaluator.evaluate()


@pytest.mark.parametrize("engine", ["hotcoco", "ultrafast", "pycocotools"])
def test_fast_coco_evaluator_equals_detectron2_on_pycocotools(dataset, engine, tmp_path):
    dicts = DatasetCatalog.get(dataset)
    assert MetadataCatalog.get(dataset).json_file
    outputs = _predictions(dicts, np.random.default_rng(0))
    reference = _evaluate(COCOEvaluator(dataset, output_dir=str(tmp_path / "ref"), use_fast_impl=False),
                          dicts, outputs)
    fast = _evaluate(FastCOCOEvaluator(dataset, output_dir=str(tmp_path / engine), engine=engine), dicts, outputs)
    assert set(reference) == set(fast) == {"bbox", "segm"}
    for task in reference:
        assert 0 < reference[task]["AP"] < 100  # a non-trivial case
        for metric, value in reference[task].items():
            assert fast[task][metric] == pytest.approx(value, abs=1e-9, nan_ok=True), (task, metric)
