"""PanopticQualityEvaluator against Detectron2's COCOPanopticEvaluator (panopticapi) on the same outputs."""
import contextlib
import io
import os
import uuid

import numpy as np
import pytest
import torch
from PIL import Image

import seg_d2  # noqa: F401
from detectron2.data import MetadataCatalog
from detectron2.evaluation import COCOPanopticEvaluator
from seg_d2.evaluation.panoptic_evaluator import PanopticQualityEvaluator
from seg_d2.evaluation.panoptic_quality import rgb2id


def _register(root, gt_json):
    name = f"pq_eval_{uuid.uuid4().hex[:8]}"
    cats = gt_json["categories"]
    things = [c["id"] for c in cats if c["isthing"]]
    stuff = [c["id"] for c in cats if not c["isthing"]]
    MetadataCatalog.get(name).set(
        panoptic_json=os.path.join(root, "gt.json"),
        panoptic_root=os.path.join(root, "gt"),
        # one contiguous numbering over things then stuff, as label_divisor models use
        thing_dataset_id_to_contiguous_id={c: i for i, c in enumerate(things)},
        stuff_dataset_id_to_contiguous_id={c: len(things) + i for i, c in enumerate(stuff)},
        label_divisor=1000,
    )
    return name


def _model_outputs(root, gt_json, pred_json, name, with_segments_info):
    meta = MetadataCatalog.get(name)
    isthing = {c["id"]: bool(c["isthing"]) for c in gt_json["categories"]}
    inputs, outputs = [], []
    for ann in pred_json["annotations"]:
        ids = rgb2id(np.asarray(Image.open(os.path.join(root, "pred", ann["file_name"]))))
        segs = []
        for s in ann["segments_info"]:
            mapping = meta.thing_dataset_id_to_contiguous_id if isthing[s["category_id"]] else (
                meta.stuff_dataset_id_to_contiguous_id)
            segs.append({"id": s["id"], "category_id": mapping[s["category_id"]], "isthing": isthing[s["category_id"]]})
        if with_segments_info:
            seg = torch.from_numpy(ids.astype(np.int32))
        else:  # category * label_divisor + instance, -1 for VOID
            packed = np.full(ids.shape, -1, np.int32)
            for k, s in enumerate(segs):
                packed[ids == s["id"]] = s["category_id"] * 1000 + k
            seg, segs = torch.from_numpy(packed), None
        inputs.append({"image_id": ann["image_id"], "file_name": f"img{ann['image_id']}.jpg"})
        outputs.append({"panoptic_seg": (seg, segs)})
    return inputs, outputs


def _run(evaluator, inputs, outputs):
    evaluator.reset()
    for i in range(0, len(inputs), 2):
        evaluator.process(inputs[i : i + 2], outputs[i : i + 2])
    with contextlib.redirect_stdout(io.StringIO()):
        return evaluator.evaluate()["panoptic_seg"]


@pytest.mark.parametrize("seed, with_segments_info", [(1, True), (2, True), (3, False)])
def test_same_numbers_as_detectron2(tmp_path, panoptic_case, seed, with_segments_info):
    root = str(tmp_path)
    gt_json, pred_json, _ = panoptic_case(root, seed, 6, "normal")
    name = _register(root, gt_json)
    inputs, outputs = _model_outputs(root, gt_json, pred_json, name, with_segments_info)
    ours = _run(PanopticQualityEvaluator(name, str(tmp_path / "out")), inputs, outputs)
    ref = _run(COCOPanopticEvaluator(name), inputs, outputs)
    for key, value in ref.items():
        assert ours[key] == pytest.approx(value, abs=1e-7, nan_ok=True), key
    # and per class, which Detectron2 does not report
    assert {f"PQ-{c['name']}" for c in gt_json["categories"]} <= set(ours)
    assert os.path.exists(tmp_path / "out" / "panoptic_quality.json")


def test_per_class_pq_by_hand(tmp_path):
    # one 2x2 image: gt "a" (thing) left column, "b" (stuff) right column; pred gets "a" exactly, misses "b"
    gt = np.array([[1, 2], [1, 2]], np.uint32)
    os.makedirs(tmp_path / "gt")
    Image.fromarray(np.stack([gt, gt * 0, gt * 0], -1).astype(np.uint8)).save(tmp_path / "gt" / "0.png")
    gt_json = {
        "images": [{"id": 0, "width": 2, "height": 2, "file_name": "0.jpg"}],
        "categories": [{"id": 5, "name": "a", "isthing": 1}, {"id": 6, "name": "b", "isthing": 0}],
        "annotations": [{"image_id": 0, "file_name": "0.png", "segments_info": [
            {"id": 1, "category_id": 5, "iscrowd": 0, "area": 2}, {"id": 2, "category_id": 6, "iscrowd": 0, "area": 2}]}],
    }
    (tmp_path / "gt.json").write_text(__import__("json").dumps(gt_json))
    name = _register(str(tmp_path), gt_json)
    pred = torch.tensor([[7, 0], [7, 0]], dtype=torch.int32)
    ev = PanopticQualityEvaluator(name)
    res = _run(ev, [{"image_id": 0}], [{"panoptic_seg": (pred, [{"id": 7, "category_id": 0, "isthing": True}])}])
    assert res["PQ-a"] == 100 and res["PQ-b"] == 0 and res["PQ"] == 50 and res["RQ_st"] == 0 and res["SQ_th"] == 100
