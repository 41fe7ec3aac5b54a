import os

import numpy as np
import pytest
import torch

import seg_d2  # noqa: F401  (before detectron2)
from seg_d2.baselines import WatershedSegmenter

torch.set_num_threads(1)
# ../shared/data beside the repository (always there in CI; absent from a user's clone)
NUCLEI = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "nuclei-stardist")


def _disc(shape, cy, cx, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2


def _scene(bright=True):
    shape = (128, 160)
    # Two separated discs and two touching pairs (centres 1.6 radii apart: their union has a neck).
    discs = [(25, 25, 12), (100, 30, 10), (30, 80, 12), (30, 99, 12), (95, 100, 11), (95, 118, 11)]
    masks = [_disc(shape, *d) for d in discs]
    fg = np.logical_or.reduce(masks)
    rng = np.random.default_rng(0)
    image = np.where(fg, 200.0, 40.0) if bright else np.where(fg, 40.0, 200.0)
    image = image + rng.normal(0, 5, shape)
    return torch.from_numpy(np.repeat(image[None], 3, axis=0)).float(), masks


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


@pytest.mark.parametrize("bright", [True, False])
def test_finds_every_disc_separated_and_touching(bright):
    image, gt = _scene(bright)
    seg = WatershedSegmenter(bright_foreground=bright, min_distance=5, min_area=20, class_id=2)
    (out,) = seg([{"image": image}])
    inst = out["instances"]
    pred = inst.pred_masks.numpy()
    assert len(inst) == len(gt)
    for g in gt:
        assert max(_iou(g, p) for p in pred) > 0.8
    assert inst.pred_classes.tolist() == [2] * len(gt)
    assert ((inst.scores > 0) & (inst.scores <= 1)).all()
    # Boxes are the masks' tight boxes (x1, y1, x2 + 1, y2 + 1), as Detectron2's BitMasks gives them.
    for box, mask in zip(inst.pred_boxes.tensor.tolist(), pred):
        ys, xs = np.nonzero(mask)
        assert box == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_wrong_polarity_does_not_find_discs():
    image, gt = _scene(bright=True)
    (out,) = WatershedSegmenter(bright_foreground=False, min_area=20)([{"image": image}])
    pred = out["instances"].pred_masks.numpy()
    assert not any(_iou(g, p) > 0.8 for g in gt for p in pred)


def test_output_resized_to_requested_height_width():
    image, gt = _scene()
    (out,) = WatershedSegmenter(min_area=20)([{"image": image, "height": 256, "width": 320}])
    inst = out["instances"]
    assert inst.image_size == (256, 320) and inst.pred_masks.shape[1:] == (256, 320)
    assert len(inst) == len(gt)


def test_blank_image_gives_no_instances():
    (out,) = WatershedSegmenter()([{"image": torch.full((3, 32, 32), 7.0)}])
    inst = out["instances"]
    assert len(inst) == 0 and inst.pred_masks.shape == (0, 32, 32) and inst.pred_boxes.tensor.shape == (0, 4)


def test_bad_parameters_and_input():
    with pytest.raises(ValueError, match="min_distance"):
        WatershedSegmenter(min_distance=0)
    with pytest.raises(ValueError, match="CHW"):
        WatershedSegmenter()([{"image": torch.zeros(32, 32)}])


@pytest.mark.skipif(not os.path.isdir(NUCLEI), reason=f"real data {NUCLEI} absent")
def test_nuclei_count_is_sensible():
    tifffile = pytest.importorskip("tifffile")
    image = tifffile.imread(os.path.join(NUCLEI, "img2d.tif")).astype(np.float32)
    gt = tifffile.imread(os.path.join(NUCLEI, "mask2d.tif"))
    n_gt = len(np.unique(gt)) - 1
    (out,) = WatershedSegmenter(min_distance=6, min_area=15)([{"image": torch.from_numpy(image)[None]}])
    pred = out["instances"].pred_masks.numpy()
    assert 0.8 * n_gt <= len(pred) <= 1.2 * n_gt, (len(pred), n_gt)
    # Most nuclei are found as such (measured: 85 of 125 at IoU > 0.5; touching clusters stay hard).
    pred_labels = (pred * np.arange(1, len(pred) + 1)[:, None, None]).max(0)  # watershed regions are disjoint
    inter = np.zeros((gt.max() + 1, len(pred) + 1))
    np.add.at(inter, (gt.ravel(), pred_labels.ravel()), 1)
    union = inter.sum(1, keepdims=True) + inter.sum(0, keepdims=True) - inter
    matched = ((inter / np.maximum(union, 1))[1:, 1:] > 0.5).any(1).sum()
    assert matched >= 0.6 * n_gt, matched
