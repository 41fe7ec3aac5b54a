"""Detectron2 v0.6's stock scripts (their call sequences: see conftest.py) on every seg_d2 config family: the
config merges into plain get_cfg(), trains, evaluates with the stock evaluators, predicts and draws; the
other stock tools (plain_train_net.py, analyze_model.py, visualize_data.py) run on each task."""
import math
import os

import pytest

from detectron2.data import MetadataCatalog

# What stock tools/train_net.py evaluates, and what the model outputs, for each evaluator type.
COCO, SEMANTIC = {"bbox", "segm"}, {"sem_seg"}
EVALUATED = {"coco": COCO, "sem_seg": SEMANTIC, "coco_panoptic_seg": COCO | SEMANTIC | {"panoptic_seg"}}
OUTPUTS = {"coco": {"instances"}, "sem_seg": {"sem_seg"}, "coco_panoptic_seg": {"sem_seg", "instances", "panoptic_seg"}}
BUILTIN_CONFIGS = [
    "mask_rcnn_R18_shapes_bce_dice.yaml",  # instance, seg_d2 loss head
    "mask_rcnn_R18_shapes_scoring.yaml",  # Mask Scoring R-CNN
    "mask_rcnn_R18_shapes_cascade_scoring.yaml",  # cascade
    "panoptic_fpn_R18_demo.yaml",  # stock Panoptic FPN
    "panoptic_seg_d2_R18_unet_head.yaml",
    "panoptic_seg_d2_R18_deeplabv3plus_scoring.yaml",
    "semantic_unet.yaml",
    "semantic_fcn_R18.yaml",
    "semantic_deeplabv3plus_R18.yaml",
    "segformer_b0.yaml",
    "semantic_unet_head_R18.yaml",
    "semantic_fpn_R18.yaml",
]


def _evaluator_type(cfg):
    return MetadataCatalog.get(cfg.DATASETS.TEST[0]).evaluator_type


def _finite_losses(losses):
    return losses and all(math.isfinite(v) for step in losses for v in step.values())


def _evaluated(results, evaluator_type):
    assert set(results) == EVALUATED[evaluator_type]
    return all(isinstance(v, float) for task in results.values() for v in task.values())


@pytest.mark.parametrize("name", BUILTIN_CONFIGS)
def test_stock_train_net_trains_evaluates_and_demo_draws(stock, config_path, val_image, name):
    config = config_path("builtin", name)
    cfg, results, losses = stock.train_net(config, stock.small(config))
    assert len(losses) == 1 and _finite_losses(losses)
    assert _evaluated(results, _evaluator_type(cfg))

    weights = ["MODEL.WEIGHTS", os.path.join(cfg.OUTPUT_DIR, "model_final.pth")]
    predictions, drawing = stock.demo(config, stock.small(config) + weights, val_image, confidence_threshold=0.0)
    assert set(predictions) == OUTPUTS[_evaluator_type(cfg)]
    assert drawing.shape == (128, 128, 3) and stock.is_picture(drawing)


def test_stock_train_net_eval_only_reads_the_checkpoint(stock, config_path):
    config = config_path("builtin", "semantic_unet.yaml")
    cfg, trained, _ = stock.train_net(config, stock.small(config, max_iter=3))
    weights = ["MODEL.WEIGHTS", os.path.join(cfg.OUTPUT_DIR, "model_final.pth")]
    again = stock.eval_only(config, stock.small(config) + weights)
    assert again["sem_seg"] == pytest.approx(trained["sem_seg"])  # same weights, same numbers
    fresh = stock.eval_only(config, stock.small(config))  # no weights: another (random) model
    assert fresh["sem_seg"] != pytest.approx(trained["sem_seg"])


@pytest.mark.parametrize(
    "name", ["mask_rcnn_R18_shapes_dice.yaml", "panoptic_seg_d2_R18_unet_head.yaml", "semantic_unet.yaml"]
)
def test_stock_plain_train_net(stock, config_path, name):
    config = config_path("builtin", name)
    cfg, results, losses = stock.plain_train_net(config, stock.small(config, max_iter=2))
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    assert list(results) == list(cfg.DATASETS.TEST) and _evaluated(results[cfg.DATASETS.TEST[0]], _evaluator_type(cfg))


@pytest.mark.parametrize("name", ["mask_rcnn_R18_shapes.yaml", "segformer_b0.yaml"])
def test_stock_analyze_model(stock, config_path, name):
    config = config_path("builtin", name)
    parameters, gflops = stock.analyze_model(config, stock.small(config))
    assert parameters > 10**5 and gflops["conv"] > 0


@pytest.mark.parametrize("form, source", [
    ("mask_rcnn_R18_shapes.yaml", "annotation"), ("mask_rcnn_R18_shapes.yaml", "dataloader"),
    ("panoptic_fpn_R18_demo.yaml", "annotation"), ("panoptic_fpn_R18_demo.yaml", "dataloader"),
    ("semantic_unet.yaml", "annotation"),  # its dataloader source draws instances only (stock)
])
def test_stock_visualize_data(stock, config_path, form, source):
    config = config_path("builtin", form)
    pictures = stock.visualize_data(config, stock.small(config), source)
    assert len(pictures) == 2 and all(stock.is_picture(p) for p in pictures)
