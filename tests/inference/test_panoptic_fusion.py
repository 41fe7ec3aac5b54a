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


def test_panoptic_deeplab_label_map_as_segments():
    from seg_d2.inference.sliding_window import _segments_from_labels

    labels = np.array([[-1, 2000, 2000], [1001, 1001, 3000], [1002, 1002, 3000]])  # divisor 1000; 1 = thing
    ids, segments = _segments_from_labels(labels, 1000, thing_ids={1})
    assert ids.tolist() == [[0, 3, 3], [1, 1, 4], [2, 2, 4]]
    assert segments == [{"id": 1, "category_id": 1, "isthing": True, "area": 2},
                        {"id": 2, "category_id": 1, "isthing": True, "area": 2},
                        {"id": 3, "category_id": 2, "isthing": False, "area": 2},
                        {"id": 4, "category_id": 3, "isthing": False, "area": 2}]
