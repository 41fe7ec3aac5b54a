"""seg_d2's sliding-window inference on real seg_d2 models (random weights, small images): one window
reproduces DefaultPredictor exactly, for every family; tiles run end to end and stay consistent."""
import os

import numpy as np
import pytest
import torch

import seg_d2  # noqa: F401  (before detectron2)
from detectron2.engine import DefaultPredictor

from seg_d2.engine.trainer import setup_cfg
from seg_d2.inference import SlidingWindowPredictor

torch.set_num_threads(1)
CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "builtin")


def _predictors(name, *opts):
    cfg = setup_cfg(os.path.join(CONFIGS, name), ["MODEL.WEIGHTS", "", *opts])
    predictor = DefaultPredictor(cfg)
    return predictor, SlidingWindowPredictor(cfg, predictor=predictor)


def _image(height=256, width=320, seed=0):
    rng = np.random.default_rng(seed)
    image = np.full((height, width, 3), 90, np.uint8)
    for _ in range(12):  # blocks of colour give the random-weight models something to respond to
        x, y = rng.integers(0, width - 40), rng.integers(0, height - 40)
        image[y:y + rng.integers(10, 60), x:x + rng.integers(10, 60)] = rng.integers(0, 255, 3)
    return image


def _whole(sliding, image):
    sliding.tile_above_pixels = -1
    return sliding(image)


def test_instances_one_window_equals_default_predictor():
    predictor, sliding = _predictors("mask_rcnn_R18_shapes.yaml")
    image = _image()
    expected = predictor(image)["instances"]
    got = _whole(sliding, image).instances
    assert len(got) == len(expected) > 0
    order = torch.argsort(expected.scores, descending=True, stable=True)
    assert torch.equal(got.to_instances(256, 320).pred_masks, expected.pred_masks[order])
    np.testing.assert_array_equal(got.scores, expected.scores[order].numpy().astype(np.float64))
    np.testing.assert_allclose(got.boxes, expected.pred_boxes.tensor[order].numpy(), rtol=1e-6)


def test_instances_tiled_end_to_end():
    _, sliding = _predictors("mask_rcnn_R18_shapes.yaml")
    sliding.tile_above_pixels = 0
    prediction = sliding(_image())
    assert prediction.num_tiles == 9  # 128-px tiles (INPUT.MIN_SIZE_TEST), a quarter shared
    instances = prediction.instances
    assert len(instances) > 0 and np.all(np.diff(instances.scores) <= 0)
    for (x0, y0, crop), rle in zip(instances.masks, instances.to_rles(256, 320)):
        assert 0 <= x0 and x0 + crop.shape[1] <= 320 and 0 <= y0 and y0 + crop.shape[0] <= 256
        assert int(crop.sum()) == int(__import__("pycocotools.mask").mask.area(rle))


def test_semantic_one_window_and_tiles():
    predictor, sliding = _predictors("semantic_unet.yaml")
    image = _image()
    expected = predictor(image)["sem_seg"].argmax(dim=0).numpy()
    assert np.array_equal(_whole(sliding, image).sem_seg, expected)
    sliding.tile_above_pixels = 0
    tiled = sliding(image).sem_seg
    # A fully convolutional U-Net sees less context at a tile's edge; the blend leaves little of it.
    agreement = float((tiled == expected).mean())
    assert agreement > 0.9, agreement


@pytest.mark.parametrize("config", ["panoptic_seg_d2_R18_unet_head.yaml", "panoptic_fpn_R18_demo.yaml"])
def test_panoptic_one_window_equals_the_models_own_fusion(config):
    predictor, sliding = _predictors(config, "MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH", "0.2")
    image = _image(224, 224)  # 4 tiles
    outputs = predictor(image)
    expected_ids, expected_segments = outputs["panoptic_seg"]
    got = _whole(sliding, image)
    assert np.array_equal(got.panoptic_seg, expected_ids.numpy())
    key = lambda s: (s["id"], s["isthing"], s["category_id"], round(s.get("score", 0), 5))  # noqa: E731
    assert [key(s) for s in got.segments_info] == [key(s) for s in expected_segments]
    assert any(s["isthing"] for s in got.segments_info)
    sliding.tile_above_pixels = 0
    tiled = sliding(image)
    ids = np.unique(tiled.panoptic_seg)
    assert set(ids[ids > 0].tolist()) <= {s["id"] for s in tiled.segments_info}
