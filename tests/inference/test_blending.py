"""Window weights by hand; the streaming blender against a brute-force dense weighted sum."""
import numpy as np
import pytest

import seg_d2  # noqa: F401  (before detectron2)
from seg_d2.data.tiling import tile_windows
from seg_d2.inference import LogitBlender, window_weights
from seg_d2.inference.blending import axis_weights


def test_axis_weights_by_hand():
    # image edges are not seams: only borders inside the image lower the weight
    assert axis_weights(0, 4, 10).tolist() == [4, 3, 2, 1]
    assert axis_weights(3, 7, 10).tolist() == [1, 2, 2, 1]
    assert axis_weights(6, 10, 10).tolist() == [1, 2, 3, 4]
    assert axis_weights(0, 10, 10).tolist() == [10] * 10
    assert window_weights((6, 0, 10, 2), 2, 10).tolist() == [[2, 4, 6, 8], [2, 4, 6, 8]]


def _brute_force(windows, logits, height, width):
    total = np.zeros((logits[0].shape[0], height, width))
    for (x0, y0, x1, y1), tile in zip(windows, logits):
        total[:, y0:y1, x0:x1] += tile * window_weights((x0, y0, x1, y1), height, width)
    return total.argmax(axis=0)


@pytest.mark.parametrize("height,width,tile,overlap", [(50, 70, 20, 6), (33, 100, 16, 8), (20, 20, 32, 4),
                                                       (45, 45, 15, 0), (60, 61, 24, 13)])
def test_blend_equals_dense_weighted_sum(height, width, tile, overlap):
    rng = np.random.default_rng(height * width + tile)
    windows = tile_windows(height, width, tile, overlap)
    logits = [rng.normal(size=(5, y1 - y0, x1 - x0)).astype(np.float32) for x0, y0, x1, y1 in windows]
    blender = LogitBlender(windows, height, width, num_classes=5)
    for window, tile_logits in zip(windows, logits):
        blender.add(window, tile_logits)
    assert np.array_equal(blender.finish(), _brute_force(windows, logits, height, width))


def test_overlap_goes_to_the_tile_with_more_context():
    # two windows on a 1 x 10 strip, sharing columns 4..5; the left tile says class 0, the right class 1
    windows = [(0, 0, 6, 1), (4, 0, 10, 1)]
    blender = LogitBlender(windows, 1, 10, num_classes=2)
    blender.add(windows[0], np.array([[[1.0] * 6], [[0.0] * 6]], np.float32))
    blender.add(windows[1], np.array([[[0.0] * 6], [[1.0] * 6]], np.float32))
    # column 4: weights 2 (left: 2 px from its right border) vs 1 (right: its first column) -> left wins
    assert blender.finish().tolist() == [[0, 0, 0, 0, 0, 1, 1, 1, 1, 1]]


def test_refuses_incomplete_cover_and_missing_tiles():
    with pytest.raises(ValueError, match="do not cover"):
        LogitBlender([(0, 0, 5, 5)], 5, 6, num_classes=2)
    blender = LogitBlender([(0, 0, 4, 5), (2, 0, 6, 5)], 5, 6, num_classes=2)
    blender.add((0, 0, 4, 5), np.zeros((2, 5, 4), np.float32))
    with pytest.raises(RuntimeError, match="wait for windows"):
        blender.finish()
    with pytest.raises(ValueError, match="logits of shape"):
        blender.add((2, 0, 6, 5), np.zeros((2, 5, 5), np.float32))


def test_labels_dtype_follows_class_count():
    assert LogitBlender([(0, 0, 2, 2)], 2, 2, num_classes=256).labels.dtype == np.uint8
    assert LogitBlender([(0, 0, 2, 2)], 2, 2, num_classes=300).labels.dtype == np.int32
