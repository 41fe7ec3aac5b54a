"""SamDetector: a seg_d2 detector's boxes prompt SAM; the outputs go through DefaultPredictor, tools/train_net.py
--eval-only (FastCOCOEvaluator) and the Visualizer unchanged."""
import importlib.util
import json
import os

import numpy as np
import pytest
import torch

import seg_d2  # noqa: F401  (before detectron2)
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import DefaultPredictor, default_argument_parser
from detectron2.modeling import build_model
from detectron2.utils.visualizer import Visualizer

from seg_d2.data.image_io import read_image
from seg_d2.engine import Trainer, setup_cfg
from seg_d2.modeling.meta_arch.sam_detector import SamDetector, choose_masks

segment_anything = pytest.importorskip("segment_anything", reason="the optional segment-anything package (seg_d2[sam])")
torch.set_num_threads(1)
ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
CONFIGS = os.path.join(ROOT, "configs", "builtin")
MASK_RCNN = os.path.join(CONFIGS, "mask_rcnn_R18_shapes.yaml")
# every box, however weak a few iterations leave the detector, so that SAM has boxes to answer
ALL_BOXES = ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "MODEL.RETINANET.SCORE_THRESH_TEST", "0.0",
             "TEST.DETECTIONS_PER_IMAGE", "8"]


def _sam_opts(tiny_sam_checkpoint, *more):
    model_type, checkpoint = tiny_sam_checkpoint
    return ["MODEL.META_ARCHITECTURE", "SamDetector", "MODEL.SAM.TYPE", model_type,
            "MODEL.SAM.CHECKPOINT", checkpoint, *ALL_BOXES, *more]


def _train_net():
    spec = importlib.util.spec_from_file_location("train_net", os.path.join(ROOT, "tools", "train_net.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _eval_only(out, *opts):
    """tools/train_net.py --eval-only on the built-in validation images; (results, the COCO results file's rows)."""
    argv = ["--config-file", MASK_RCNN, "--eval-only", "OUTPUT_DIR", str(out), *ALL_BOXES, *opts]
    results = _train_net().main(default_argument_parser().parse_args(argv))
    with open(os.path.join(out, "inference", "seg_d2_shapes_val", "coco_instances_results.json")) as f:
        return results, json.load(f)  # one test dataset: DefaultTrainer.test returns its results alone


def test_eval_only_gives_mask_ap_of_sam_masks(trained_detector, tiny_sam_checkpoint, tmp_path):
    weights = ["MODEL.WEIGHTS", trained_detector]
    detector, detector_rows = _eval_only(tmp_path / "detector", *weights)
    sam, sam_rows = _eval_only(tmp_path / "sam", *weights, *_sam_opts(tiny_sam_checkpoint))
    kept, kept_rows = _eval_only(tmp_path / "kept", *weights, *_sam_opts(
        tiny_sam_checkpoint, "MODEL.SAM.KEEP_DETECTOR_MASKS", "True", "MODEL.SAM.DETECTOR_MASK_IOU", "1e9"))
    np.testing.assert_equal(sam["bbox"], detector["bbox"])  # the detector's boxes, scores, classes (NaN == NaN)
    assert set(sam["segm"]) == set(detector["segm"]) and np.isfinite(sam["segm"]["AP"])
    boxes = [(r["image_id"], r["category_id"], r["score"]) for r in detector_rows]
    assert [(r["image_id"], r["category_id"], r["score"]) for r in sam_rows] == boxes and len(boxes) >= 50
    changed = [a["segmentation"] != b["segmentation"] for a, b in zip(sam_rows, detector_rows)]
    assert np.mean(changed) > 0.9  # evaluated: SAM's masks, not the detector's
    # no SAM IoU beats 1e9: every detector mask is kept, and the evaluation is the detector's
    np.testing.assert_equal(kept, detector)
    assert kept_rows == detector_rows


def _val_image():
    record = DatasetCatalog.get("seg_d2_shapes_val")[0]
    return read_image(record["file_name"], format="BGR")


def test_default_predictor_instances_are_sam_answers_to_the_boxes(trained_detector, tiny_sam_checkpoint, tiny_sam):
    image = _val_image()
    assert image.shape[:2] == (128, 128)  # INPUT.MIN/MAX_SIZE_TEST 128: the detector sees the image unresized
    plain = DefaultPredictor(setup_cfg(MASK_RCNN, ["MODEL.WEIGHTS", trained_detector, *ALL_BOXES]))(image)["instances"]
    cfg = setup_cfg(MASK_RCNN, ["MODEL.WEIGHTS", trained_detector, *_sam_opts(tiny_sam_checkpoint)])
    predictor = DefaultPredictor(cfg)
    assert isinstance(predictor.model, SamDetector)
    instances = predictor(image)["instances"]
    assert len(instances) == len(plain) == 8
    for field in ("pred_boxes", "scores", "pred_classes"):
        assert torch.equal(getattr(instances, field).tensor if field == "pred_boxes" else getattr(instances, field),
                           getattr(plain, field).tensor if field == "pred_boxes" else getattr(plain, field))
    assert instances.pred_masks.dtype == torch.bool and instances.pred_masks.shape == (8, 128, 128)
    reference = segment_anything.SamPredictor(tiny_sam)
    reference.set_image(image, image_format="BGR")
    for box, mask, iou in zip(instances.pred_boxes.tensor.numpy(), instances.pred_masks, instances.sam_ious):
        masks, scores, _ = reference.predict(box=box, multimask_output=False)
        assert np.mean(mask.numpy() != masks[0]) < 1e-3 and float(iou) == pytest.approx(float(scores[0]), abs=1e-5)
    drawing = Visualizer(image[:, :, ::-1], MetadataCatalog.get("seg_d2_shapes_val")).draw_instance_predictions(instances)
    assert drawing.get_image().shape == (128, 128, 3)
    assert not np.array_equal(drawing.get_image(), image[:, :, ::-1])


def test_checkpoints_are_the_detectors(tiny_sam_checkpoint, tmp_path):
    """A plain detector checkpoint loads into SamDetector key for key, and SamDetector saves a plain one;
    SAM's weights are in neither."""
    plain = build_model(setup_cfg(MASK_RCNN))
    sam_cfg = setup_cfg(MASK_RCNN, _sam_opts(tiny_sam_checkpoint))
    model = build_model(sam_cfg)
    assert list(model.state_dict()) == list(plain.state_dict())
    DetectionCheckpointer(plain, save_dir=str(tmp_path)).save("plain")
    DetectionCheckpointer(model).load(str(tmp_path / "plain.pth"))
    assert all(torch.equal(a, b) for a, b in zip(model.detector.state_dict().values(), plain.state_dict().values()))
    torch.nn.init.normal_(model.detector.roi_heads.box_predictor.cls_score.weight)
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("from_sam")
    fresh = build_model(setup_cfg(MASK_RCNN))
    incompatible = fresh.load_state_dict(torch.load(tmp_path / "from_sam.pth", weights_only=False)["model"])
    assert not incompatible.missing_keys and not incompatible.unexpected_keys
    assert torch.equal(fresh.roi_heads.box_predictor.cls_score.weight, model.detector.roi_heads.box_predictor.cls_score.weight)


def test_training_trains_the_detector(tiny_sam_checkpoint, tmp_path):
    cfg = setup_cfg(MASK_RCNN, _sam_opts(tiny_sam_checkpoint, "OUTPUT_DIR", str(tmp_path), "SOLVER.MAX_ITER", "2",
                                         "SOLVER.IMS_PER_BATCH", "2", "DATASETS.TEST", "()",
                                         "SEG_D2.PROGRESS.CURVES", "False", "SEG_D2.NUM_THREADS", "1"))
    trainer = Trainer(cfg)
    sam_weights = {k: v.clone() for k, v in trainer.model.prompter.predictor.model.state_dict().items()}
    trainer.train()
    assert all(torch.equal(v, trainer.model.prompter.predictor.model.state_dict()[k]) for k, v in sam_weights.items())
    saved = torch.load(tmp_path / "model_final.pth", weights_only=False)["model"]
    assert set(saved) == set(build_model(setup_cfg(MASK_RCNN)).state_dict())


def test_choose_masks_by_predicted_iou():
    detector = torch.zeros(3, 2, 2, dtype=torch.bool)
    sam = torch.ones(3, 2, 2, dtype=torch.bool)
    masks, take_sam = choose_masks(detector, torch.tensor([0.9, 0.5, 0.7]), sam, torch.tensor([0.8, 0.6, 0.7]))
    assert take_sam.tolist() == [False, True, False]  # equal IoUs keep the detector's mask
    assert masks.flatten(1).all(1).tolist() == [False, True, False] and not masks[0].any()


def test_mask_scoring_masks_kept_where_their_iou_is_higher(tiny_sam_checkpoint):
    """Mask Scoring R-CNN predicts each mask's IoU (pred_mask_ious): SAM's mask replaces it only where SAM's
    predicted IoU is higher."""
    cfg = setup_cfg(os.path.join(CONFIGS, "mask_rcnn_R18_shapes_scoring.yaml"),
                    _sam_opts(tiny_sam_checkpoint, "MODEL.SAM.KEEP_DETECTOR_MASKS", "True"))
    model = build_model(cfg).eval()
    image = torch.as_tensor(_val_image().transpose(2, 0, 1).astype(np.float32))
    inputs = [{"image": image, "height": 128, "width": 128}]
    with torch.no_grad():
        detector = model.detector(inputs)[0]["instances"]
        model.keep_detector_masks = False
        sam_only = model(inputs)[0]["instances"]
        # shift SAM's IoU head so that its IoUs straddle the detector's: both kinds of choice happen
        bias = model.prompter.predictor.model.mask_decoder.iou_prediction_head.layers[-1].bias
        bias += float(detector.pred_mask_ious.median() - sam_only.sam_ious.median())
        sam_only = model(inputs)[0]["instances"]
        model.keep_detector_masks = True
        combined = model(inputs)[0]["instances"]
    take_sam = sam_only.sam_ious > detector.pred_mask_ious
    assert len(detector) == 8 and 0 < int(take_sam.sum()) < 8
    assert torch.equal(combined.sam_ious, sam_only.sam_ious)
    for i in range(len(combined)):
        expected = sam_only.pred_masks[i] if take_sam[i] else detector.pred_masks[i]
        assert torch.equal(combined.pred_masks[i], expected)


@pytest.mark.parametrize("detector_opts", [
    ["MODEL.MASK_ON", "False"],  # Faster R-CNN
    ["MODEL.SAM.DETECTOR", "RetinaNet", "MODEL.RETINANET.NUM_CLASSES", "3",
     "MODEL.RETINANET.IN_FEATURES", "['p2', 'p3', 'p4', 'p5', 'p6']"],
], ids=["faster_rcnn", "retinanet"])
def test_box_only_detectors_get_sam_masks(tiny_sam_checkpoint, detector_opts):
    cfg = setup_cfg(MASK_RCNN, _sam_opts(tiny_sam_checkpoint, *detector_opts))
    model = build_model(cfg).eval()
    image = torch.as_tensor(_val_image().transpose(2, 0, 1).astype(np.float32))
    inputs = [{"image": image, "height": 96, "width": 96}]  # predictions at another size than the input's
    with torch.no_grad():
        boxes = model.detector(inputs)[0]["instances"]
        instances = model(inputs)[0]["instances"]
    assert len(instances) > 0 and torch.equal(instances.pred_boxes.tensor, boxes.pred_boxes.tensor)
    assert instances.pred_masks.shape == (len(instances), 96, 96) and instances.sam_ious.shape == (len(instances),)
    model.keep_detector_masks = True
    with pytest.raises(ValueError, match="KEEP_DETECTOR_MASKS needs a detector that predicts masks"):
        model(inputs)


@pytest.mark.parametrize("name, match", [
    ("SamDetector", "not SamDetector itself"),
    ("NoSuchArch", "must name a detector meta-architecture"),
    ("PanopticFPN", "a panoptic model fuses"),
])
def test_bad_detectors(tiny_sam_checkpoint, name, match):
    with pytest.raises(ValueError, match=match):
        build_model(setup_cfg(MASK_RCNN, _sam_opts(tiny_sam_checkpoint, "MODEL.SAM.DETECTOR", name)))


def test_without_a_checkpoint_the_error_says_where_to_get_one():
    with pytest.raises(ValueError, match="MODEL.SAM.CHECKPOINT is empty.*sam_vit_h_4b8939.pth"):
        build_model(setup_cfg(MASK_RCNN, ["MODEL.META_ARCHITECTURE", "SamDetector"]))
