"""Scenes and a stand-in "model" for the stitching tests.

A scene is a BGR image that encodes its own ground truth: R = the object's value (0: none; one value per
object, 100..254), G = 50 * (thing class + 1), B = 60 * stuff label (1..S). The stand-in model sees only the
tile it is given and reads it back pixel by pixel, so it is exactly right wherever it sees an object whole:
what tiled inference gets wrong can only come from the stitching.
"""
import numpy as np
import pytest
import torch
from scipy import ndimage

from detectron2.structures import Boxes, Instances

NUM_STUFF = 2


def paint(height, width, objects, stuff=None):
    """objects: (value, class, mask-function (yy, xx) -> bool); stuff: (H, W) labels 1..S (default: 1)."""
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[..., 0] = 60 * (np.ones((height, width), dtype=np.uint8) if stuff is None else stuff)
    yy, xx = np.mgrid[:height, :width]
    for value, cls, inside in objects:
        mask = inside(yy, xx)
        image[mask, 2] = value
        image[mask, 1] = 50 * (cls + 1)
    return image


def disc(cx, cy, r):
    return lambda yy, xx: (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def rect(x0, y0, x1, y1):
    return lambda yy, xx: (xx >= x0) & (xx < x1) & (yy >= y0) & (yy < y1)


class StandInModel:
    """image tile -> Detectron2 outputs: one instance per connected region of one object value; sem_seg
    logits one-hot (10 on the pixel's label); panoptic_seg as a placeholder (the stitcher fuses anew)."""

    def __init__(self, outputs=("instances",)):
        self.outputs = outputs
        self.calls = 0

    def _instances(self, tile):
        masks, scores, classes = [], [], []
        for value in np.unique(tile[..., 2]):
            if value == 0:
                continue
            regions, count = ndimage.label(tile[..., 2] == value)
            for k in range(1, count + 1):
                mask = regions == k
                masks.append(mask)
                scores.append(value / 255.0)
                classes.append(int(tile[mask, 1][0]) // 50 - 1)
        out = Instances(tile.shape[:2])
        stacked = np.stack(masks) if masks else np.zeros((0,) + tile.shape[:2], dtype=bool)
        out.pred_masks = torch.from_numpy(stacked)
        out.pred_boxes = Boxes(torch.tensor([_box(m) for m in masks], dtype=torch.float32).reshape(-1, 4))
        out.scores = torch.tensor(scores, dtype=torch.float32)
        out.pred_classes = torch.tensor(classes, dtype=torch.int64)
        return out

    @staticmethod
    def semantic_labels(image):
        """0 = things, else the stuff label: the panoptic ("separated") semantic task."""
        return np.where(image[..., 2] > 0, 0, image[..., 0] // 60).astype(np.int64)

    def __call__(self, tile):
        self.calls += 1
        out = {}
        if "instances" in self.outputs:
            out["instances"] = self._instances(tile)
        if "sem_seg" in self.outputs:
            labels = torch.from_numpy(self.semantic_labels(tile))
            out["sem_seg"] = 10.0 * torch.nn.functional.one_hot(labels, NUM_STUFF + 1).permute(2, 0, 1).float()
        if "panoptic_seg" in self.outputs:
            out["panoptic_seg"] = (torch.zeros(tile.shape[:2], dtype=torch.int32), [])
        return out


def _box(mask):
    ys, xs = np.nonzero(mask)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


@pytest.fixture
def scenes():
    """The scene helpers, for test modules (conftest functions cannot be imported under importlib mode)."""
    return type("Scenes", (), {"paint": staticmethod(paint), "disc": staticmethod(disc), "rect": staticmethod(rect),
                               "StandInModel": StandInModel, "num_stuff": NUM_STUFF})
