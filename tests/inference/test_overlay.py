"""Overlays paint every instance's pixels from its crop (holes stay clear), at full and reduced size."""
import numpy as np
import pytest
from scipy import ndimage

import seg_d2  # noqa: F401  (before detectron2)
from detectron2.data.catalog import Metadata
from detectron2.utils.visualizer import Visualizer

from seg_d2.inference.cropped_instances import CroppedInstances, tight_crop
from seg_d2.inference.overlay import _paint_masks, _sample, draw_prediction
from seg_d2.inference.sliding_window import Prediction


def _masks():
    """A disc and a ring (a hole of radius 15) on a 240x300 image."""
    yy, xx = np.mgrid[:240, :300]
    disc = (yy - 60) ** 2 + (xx - 70) ** 2 <= 30 ** 2
    radius = (yy - 150) ** 2 + (xx - 200) ** 2
    return [disc, (radius <= 60 ** 2) & (radius > 15 ** 2)]


@pytest.mark.parametrize("scale", [1.0, 1 / 3])
def test_masks_are_painted_from_their_crops_holes_and_outside_clear(scale):
    masks = _masks()
    shape = (round(240 * scale), round(300 * scale))
    vis = Visualizer(np.zeros((*shape, 3), np.uint8))
    _paint_masks(vis, [tight_crop(m) for m in masks], [(1.0, 1.0, 1.0)] * 2, scale)
    picture = vis.output.get_image()
    union = _sample(np.logical_or(*masks).astype(np.uint8), shape).astype(bool)
    inside = ndimage.binary_erosion(union, iterations=2)  # away from the darker outlines
    outside = ~ndimage.binary_dilation(union, iterations=2)
    assert inside.sum() > 0.5 * union.sum() and outside.any()
    assert np.all(np.abs(picture[inside].astype(int) - 127) <= 2)  # white at alpha 0.5 on black
    assert np.all(picture[outside] == 0)                            # also the ring's hole


def test_instance_overlay_draws_at_the_asked_size():
    masks = _masks()
    boxes = np.array([[40, 30, 101, 91], [140, 90, 261, 211]], dtype=np.float64)
    instances = CroppedInstances(boxes, np.array([0.9, 0.8]), np.array([0, 1]), [tight_crop(m) for m in masks])
    prediction = Prediction(height=240, width=300, instances=instances)
    metadata = Metadata(name="overlay_test", thing_classes=["a", "b"])
    picture = draw_prediction(np.zeros((240, 300, 3), np.uint8), "BGR", prediction, metadata, 100).get_image()
    assert picture.shape == (80, 100, 3) and picture.any()
