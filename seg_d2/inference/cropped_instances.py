"""Instances whose masks are kept cropped to their own bounding box, in full-image coordinates.

Detectron2's ``Instances`` hold one dense (H, W) mask per instance; on a 10000x10000 image a hundred of
them take 10 GB. Here each mask is the tight crop around its pixels plus its top-left corner, so memory
follows the objects' areas, and COCO RLEs are written straight from the crops.
"""
from dataclasses import dataclass
from typing import List, Tuple

import numpy as np
import torch
from pycocotools import mask as mask_util

from detectron2.structures import Boxes, Instances

__all__ = ["CroppedInstances", "crop_to_rle", "tight_crop"]


def tight_crop(mask):
    """(x0, y0, crop) of a bool (H, W) mask: the smallest box holding every pixel; (0, 0, 0x0) if empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if len(rows) == 0:
        return 0, 0, np.zeros((0, 0), dtype=bool)
    cols = np.flatnonzero(mask.any(axis=0))
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    # a copy, never a view: a view of a full-width crop would keep the tile's whole mask array alive
    return int(x0), int(y0), np.array(mask[y0:y1, x0:x1], dtype=bool, copy=True)


def crop_to_rle(crop, x0, y0, height, width):
    """COCO RLE (compressed, ``counts`` as str) of an (H, W) image that is zero except ``crop`` at (x0, y0).

    COCO counts runs over the column-major pixel order, starting with a run of zeros; the runs of one
    crop column are those of the image column shifted by ``x * height + y0``, so the full-size mask is
    never built.
    """
    h, w = crop.shape
    columns = np.zeros((w, h + 2), dtype=np.int8)
    columns[:, 1:-1] = crop.T
    changes = np.diff(columns, axis=1)  # +1 where a run of ones starts, -1 one past its end
    col_start, row_start = np.nonzero(changes == 1)
    _, row_end = np.nonzero(changes == -1)  # same columns, same order as the starts
    base = (x0 + col_start.astype(np.int64)) * height + y0
    starts, ends = base + row_start, base + row_end
    # A run ending on the image's last row continues on the next column's first row: join them.
    if len(starts):
        joined = starts[1:] == ends[:-1]
        starts = starts[np.concatenate(([True], ~joined))]
        ends = ends[np.concatenate((~joined, [True]))]
    bounds = np.empty(2 * len(starts) + 2, dtype=np.int64)
    bounds[0], bounds[1:-1:2], bounds[2:-1:2], bounds[-1] = 0, starts, ends, height * width
    counts = np.diff(bounds).tolist()
    if len(counts) > 1 and counts[-1] == 0:  # ends on a foreground pixel: COCO writes no empty last run
        counts.pop()
    rle = mask_util.frPyObjects({"counts": counts, "size": [height, width]}, height, width)
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


@dataclass
class CroppedInstances:
    """N instances of an image: ``boxes`` (N, 4) float XYXY as predicted, ``scores`` (N,), ``classes``
    (N,) int, and per instance ``masks[i]`` = (x0, y0, bool crop) with the crop tight around its pixels."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    masks: List[Tuple[int, int, np.ndarray]]

    def __len__(self):
        return len(self.scores)

    @classmethod
    def empty(cls):
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64), [])

    @classmethod
    def from_instances(cls, instances, offset=(0, 0)):
        """From Detectron2 ``Instances`` (pred_boxes, scores, pred_classes, pred_masks) of an image whose
        top-left pixel sits at ``offset`` = (x, y) in the full image."""
        dx, dy = offset
        masks = instances.pred_masks.to("cpu").numpy().astype(bool, copy=False)
        crops = [tight_crop(m) for m in masks]
        return cls(
            boxes=instances.pred_boxes.tensor.to("cpu").numpy().astype(np.float64) + [dx, dy, dx, dy],
            scores=instances.scores.to("cpu").numpy().astype(np.float64),
            classes=instances.pred_classes.to("cpu").numpy().astype(np.int64),
            masks=[(x0 + dx, y0 + dy, crop) for x0, y0, crop in crops],
        )

    @classmethod
    def concatenate(cls, parts):
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        return cls(
            boxes=np.concatenate([p.boxes for p in parts]),
            scores=np.concatenate([p.scores for p in parts]),
            classes=np.concatenate([p.classes for p in parts]),
            masks=[m for p in parts for m in p.masks],
        )

    def select(self, indices):
        indices = np.asarray(indices, dtype=np.int64)
        return CroppedInstances(self.boxes[indices], self.scores[indices], self.classes[indices],
                                [self.masks[i] for i in indices])

    def mask_boxes(self):
        """(N, 4) int XYXY boxes of the mask crops (empty masks: zero-size boxes)."""
        return np.array([(x0, y0, x0 + c.shape[1], y0 + c.shape[0]) for x0, y0, c in self.masks],
                        dtype=np.int64).reshape(-1, 4)

    def areas(self):
        return np.array([int(c.sum()) for _, _, c in self.masks], dtype=np.int64)

    def contains(self, x, y):
        """(N,) bool: does instance i's mask cover pixel (x, y)?"""
        return np.array([0 <= y - y0 < c.shape[0] and 0 <= x - x0 < c.shape[1] and bool(c[y - y0, x - x0])
                         for x0, y0, c in self.masks], dtype=bool)

    def dense_mask(self, i, height, width):
        x0, y0, crop = self.masks[i]
        mask = np.zeros((height, width), dtype=bool)
        mask[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]] = crop
        return mask

    def to_rles(self, height, width):
        return [crop_to_rle(crop, x0, y0, height, width) for x0, y0, crop in self.masks]

    def to_instances(self, height, width):
        """Detectron2 ``Instances`` with dense masks: only for images small enough to hold N (H, W) masks."""
        out = Instances((height, width))
        out.pred_boxes = Boxes(torch.as_tensor(self.boxes, dtype=torch.float32).reshape(-1, 4))
        out.scores = torch.as_tensor(self.scores, dtype=torch.float32)
        out.pred_classes = torch.as_tensor(self.classes, dtype=torch.int64)
        masks = [self.dense_mask(i, height, width) for i in range(len(self))]
        out.pred_masks = torch.from_numpy(np.stack(masks) if masks else np.zeros((0, height, width), dtype=bool))
        return out
