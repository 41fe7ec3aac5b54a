"""Fusion on cropped masks equals seg_d2's dense fuse_panoptic (same as Detectron2's rules)."""
import numpy as np
import pytest
import torch

import seg_d2  # noqa: F401  (before detectron2)
from detectron2.structures import Boxes, Instances

from seg_d2.inference import CroppedInstances, fuse_cropped_panoptic
from seg_d2.inference import panoptic as panoptic_module
from seg_d2.modeling.meta_arch.panoptic_fusion import fuse_panoptic


def _random_case(rng, height, width, count):
    masks = np.zeros((count, height, width), dtype=bool)
    for m in masks:
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        m[y0:y0 + rng.integers(1, height), x0:x0 + rng.integers(1, width)] = rng.random() < 0.9
        m &= rng.random((height, width)) < 0.8
    instances = Instances((height, width))
    instances.pred_masks = torch.from_numpy(masks)
    instances.pred_boxes = Boxes(torch.zeros(count, 4))
    instances.scores = torch.from_numpy(rng.choice([0.3, 0.5, 0.7, 0.9], size=count)).float()  # ties on purpose
    instances.pred_classes = torch.from_numpy(rng.integers(0, 3, size=count))
    semantic = rng.integers(0, 4, size=(height, width))
    return instances, semantic


@pytest.mark.parametrize("seed", range(12))
def test_equals_dense_fusion(seed, monkeypatch):
    rng = np.random.default_rng(seed)
    monkeypatch.setattr(panoptic_module, "_BAND_ROWS", 7)  # several bands in the stuff pass
    instances, semantic = _random_case(rng, 30, 40, int(rng.integers(0, 12)))
    limits = [0.0, 30.0, 80.0, 10.0] if seed % 2 else 50.0
    kwargs = dict(overlap_thresh=float(rng.choice([0.2, 0.5, 0.8])), stuff_area_limit=limits,
                  score_thresh=float(rng.choice([0.0, 0.5])))
    expected_ids, expected_segments = fuse_panoptic(instances, torch.from_numpy(semantic), **kwargs)
    ids, segments = fuse_cropped_panoptic(CroppedInstances.from_instances(instances), semantic, **kwargs)
    assert np.array_equal(ids, expected_ids.numpy())
    assert segments == expected_segments
    assert ids.dtype == np.int32
