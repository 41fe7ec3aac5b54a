"""What every prompter takes and gives: SAM's prompt semantics (Kirillov et al., "Segment Anything", 2023).

A prompt on one image is any of: ``point_coords`` (N, 2) (x, y) pixels with ``point_labels`` (N,) 1 for a
point on the object and 0 for one off it; ``box`` (4,) x0, y0, x1, y1 pixels; ``mask_input`` (1, h, w) low-res
mask logits from an earlier answer (SAM only). The answer is :class:`PromptMasks`: one mask per candidate
(three with ``multimask_output`` for an ambiguous prompt, one without) and a score for each.
"""
import hashlib
from dataclasses import dataclass
from typing import Optional

import numpy as np

__all__ = ["PromptMasks", "check_prompt", "image_key"]


@dataclass(frozen=True)
class PromptMasks:
    """Candidate masks answering one prompt.

    masks: (C, H, W) bool at the image's size. scores: (C,) float32, SAM's predicted IoU of each mask (or
    the seg_d2 model's instance score). low_res_logits: (C, h, w) SAM's mask logits, to pass one back as
    ``mask_input=low_res_logits[i][None]`` to refine it; None from a seg_d2 model.
    """

    masks: np.ndarray
    scores: np.ndarray
    low_res_logits: Optional[np.ndarray] = None

    def __len__(self):
        return len(self.scores)

    @property
    def best_index(self):
        """Index of the highest-scoring candidate (SAM's advice for choosing among multimask outputs)."""
        return int(np.argmax(self.scores))

    def best(self):
        """(mask, score) of the highest-scoring candidate."""
        return self.masks[self.best_index], float(self.scores[self.best_index])

    def ranked(self):
        """[(mask, score)] of every candidate, best first (equal scores keep their order)."""
        return [(self.masks[i], float(self.scores[i])) for i in np.argsort(-self.scores, kind="stable")]


def _finite(array, name, shape_text, ok):
    if not ok or not np.isfinite(array).all():
        raise ValueError(f"{name} must be {shape_text} of finite numbers, got shape {array.shape}")


def check_prompt(point_coords=None, point_labels=None, box=None, mask_input=None):
    """The prompt as float64 / int arrays (None where absent), or ValueError naming what is wrong."""
    if point_coords is None and box is None and mask_input is None:
        raise ValueError("an empty prompt: give point_coords with point_labels, a box, or a mask_input")
    if (point_coords is None) != (point_labels is None):
        raise ValueError("point_coords and point_labels go together: one label (1 on, 0 off the object) per point")
    if point_coords is not None:
        point_coords = np.asarray(point_coords, dtype=np.float64)
        point_labels = np.asarray(point_labels)
        _finite(point_coords, "point_coords", "(N, 2) (x, y) with N >= 1",
                point_coords.ndim == 2 and point_coords.shape[1] == 2 and len(point_coords) > 0)
        if point_labels.shape != (len(point_coords),):
            raise ValueError(f"point_labels must have shape ({len(point_coords)},), got {point_labels.shape}")
        if not np.isin(point_labels, (0, 1)).all():
            raise ValueError(f"point_labels must be 1 (positive) or 0 (negative), got {np.unique(point_labels).tolist()}")
        point_labels = point_labels.astype(np.int64)
    if box is not None:
        box = np.asarray(box, dtype=np.float64)
        _finite(box, "box", "(4,) x0, y0, x1, y1", box.shape == (4,))
        if not (box[0] <= box[2] and box[1] <= box[3]):
            raise ValueError(f"box must be x0, y0, x1, y1 with x0 <= x1 and y0 <= y1, got {box.tolist()}")
    if mask_input is not None:
        mask_input = np.asarray(mask_input, dtype=np.float32)
        _finite(mask_input, "mask_input", "(1, h, w) mask logits", mask_input.ndim == 3 and len(mask_input) == 1)
    return point_coords, point_labels, box, mask_input


def image_key(image):
    """A key equal for two images exactly when their pixels are: caches (one encoding, one model run per
    image) must not take an image changed in place for the one they hold."""
    array = np.ascontiguousarray(image)
    digest = hashlib.blake2b(memoryview(array).cast("B"), digest_size=16).digest()
    return array.shape, array.dtype.str, digest
