"""Cropped masks: COCO RLE written from the crop equals pycocotools' encoding of the full-size mask."""
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_util

import seg_d2  # noqa: F401  (before detectron2)
from detectron2.structures import Boxes, Instances

from seg_d2.inference import CroppedInstances, crop_to_rle
from seg_d2.inference.cropped_instances import tight_crop


def _reference_rle(mask):
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


@pytest.mark.parametrize("seed", range(40))
def test_rle_from_crop_equals_pycocotools(seed):
    rng = np.random.default_rng(seed)
    height, width = rng.integers(1, 40, size=2)
    # crops of every size, from one pixel to the whole image (runs then join across columns)
    h, w = rng.integers(1, height + 1), rng.integers(1, width + 1)
    y0, x0 = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
    crop = rng.random((h, w)) < rng.choice([0.1, 0.5, 0.95, 1.0])
    full = np.zeros((height, width), dtype=bool)
    full[y0:y0 + h, x0:x0 + w] = crop
    assert crop_to_rle(crop, x0, y0, height, width) == _reference_rle(full)


def test_rle_of_empty_and_corner_masks():
    assert crop_to_rle(np.zeros((0, 0), bool), 0, 0, 5, 4) == _reference_rle(np.zeros((5, 4), bool))
    corner = np.zeros((5, 4), bool)
    corner[4, 3] = True
    assert crop_to_rle(np.ones((1, 1), bool), 3, 4, 5, 4) == _reference_rle(corner)


def test_from_instances_round_trip():
    rng = np.random.default_rng(0)
    masks = rng.random((4, 30, 50)) < 0.05
    masks[2] = False  # an empty mask is kept, as Detectron2 keeps it
    masks[3, 5:9, :] = True  # full width: its crop must still be a copy, not a view of the tile's masks
    instances = Instances((30, 50))
    instances.pred_masks = torch.from_numpy(masks)
    instances.pred_boxes = Boxes(torch.rand(4, 4) * 30)
    instances.scores = torch.rand(4)
    instances.pred_classes = torch.tensor([0, 2, 1, 0])
    cropped = CroppedInstances.from_instances(instances, offset=(7, 3))
    assert len(cropped) == 4
    for i in range(4):
        expected = np.zeros((40, 60), bool)
        expected[3:33, 7:57] = masks[i]
        assert np.array_equal(cropped.dense_mask(i, 40, 60), expected)
        assert cropped.masks[i][2].shape == tight_crop(masks[i])[2].shape
        assert not np.shares_memory(cropped.masks[i][2], instances.pred_masks.numpy())
    np.testing.assert_allclose(cropped.boxes, instances.pred_boxes.tensor.numpy() + [7, 3, 7, 3], rtol=1e-6)
    dense = cropped.to_instances(40, 60)
    assert torch.equal(dense.pred_masks[:, 3:33, 7:57], instances.pred_masks)
    assert list(cropped.areas()) == [int(m.sum()) for m in masks]
    ys, xs = np.nonzero(masks[0])
    assert cropped.contains(xs[0] + 7, ys[0] + 3)[0] and not cropped.contains(0, 0).any()
