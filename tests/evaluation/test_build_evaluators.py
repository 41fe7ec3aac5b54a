"""build_evaluators picks seg_d2's evaluators by evaluator_type and honours the config keys."""
import json
import uuid

import pytest

import seg_d2
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import COCOPanopticEvaluator
from seg_d2.evaluation import (
    FastCOCOEvaluator,
    PanopticQualityEvaluator,
    SemSegMetricsEvaluator,
    build_evaluators,
)


def _dataset(tmp_path, evaluator_type):
    name = f"build_{uuid.uuid4().hex[:8]}"
    gt = {"images": [{"id": 1, "width": 2, "height": 2}], "annotations": [],
          "categories": [{"id": 1, "name": "a", "isthing": 1}]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    DatasetCatalog.register(name, lambda: [{"file_name": "x.jpg", "sem_seg_file_name": "x.png", "image_id": 1}])
    MetadataCatalog.get(name).set(
        evaluator_type=evaluator_type, json_file=str(tmp_path / "gt.json"), panoptic_json=str(tmp_path / "gt.json"),
        panoptic_root=str(tmp_path), thing_dataset_id_to_contiguous_id={1: 0}, stuff_dataset_id_to_contiguous_id={},
        thing_classes=["a"], stuff_classes=["a"], ignore_label=255,
    )
    return name


@pytest.mark.parametrize("evaluator_type, engine, expected", [
    ("coco", "seg_d2", [FastCOCOEvaluator]),
    ("sem_seg", "seg_d2", [SemSegMetricsEvaluator]),
    ("coco_panoptic_seg", "seg_d2", [PanopticQualityEvaluator, FastCOCOEvaluator, SemSegMetricsEvaluator]),
    ("coco_panoptic_seg", "panopticapi", [COCOPanopticEvaluator, FastCOCOEvaluator, SemSegMetricsEvaluator]),
])
def test_evaluators_by_type(tmp_path, evaluator_type, engine, expected):
    cfg = seg_d2.add_seg_d2_config(get_cfg())
    cfg.SEG_D2.EVALUATION.PANOPTIC_ENGINE = engine
    evaluators = build_evaluators(cfg, _dataset(tmp_path, evaluator_type), str(tmp_path))
    assert [type(e) for e in evaluators] == expected


def test_unknown_type_is_refused(tmp_path):
    cfg = seg_d2.add_seg_d2_config(get_cfg())
    with pytest.raises(NotImplementedError, match="lvis"):
        build_evaluators(cfg, _dataset(tmp_path, "lvis"), str(tmp_path))
