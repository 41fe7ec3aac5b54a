"""mask_to_polygons: COCO polygons that pycocotools (COCO evaluation) and Detectron2 rasterise back to exactly
the mask, holes and diagonal touches included."""
import numpy as np
import pycocotools.mask as mask_util
import pytest
import seg_d2  # noqa: F401  (before detectron2)
from scipy import ndimage

from detectron2.structures import BitMasks, PolygonMasks
from detectron2.structures.masks import polygons_to_bitmask
from seg_d2.data.exact_polygons import mask_to_polygons


def _pycocotools(polygons, h, w):
    return mask_util.decode(mask_util.merge(mask_util.frPyObjects(polygons, h, w))).astype(bool)


def _assert_exact(mask):
    polygons, (h, w) = mask_to_polygons(mask), mask.shape
    if not mask.any():
        assert polygons == []
        return polygons
    np.testing.assert_array_equal(_pycocotools(polygons, h, w), mask)
    np.testing.assert_array_equal(polygons_to_bitmask(polygons, h, w), mask)
    np.testing.assert_array_equal(BitMasks.from_polygon_masks(PolygonMasks([polygons]), h, w).tensor[0].numpy(), mask)
    assert PolygonMasks([polygons]).area().item() == mask.sum()  # shoelace: holes subtract, bridges add 0
    assert all(float(c).is_integer() for p in polygons for c in p)  # pixel corners only
    return polygons


def _mask(rows):
    return np.array([[c == "#" for c in row] for row in rows])


@pytest.mark.parametrize(
    "rows, expected",
    [
        (["##", "##", "##"], [[0, 0, 2, 0, 2, 3, 0, 3]]),  # a rectangle: its 4 corners, nothing else
        ([".#.", "##.", "..."], [[0, 1, 1, 1, 1, 0, 2, 0, 2, 2, 0, 2]]),  # starts at the smallest corner
        (["#.", ".#"], [[0, 0, 1, 0, 1, 1, 0, 1], [1, 1, 2, 1, 2, 2, 1, 2]]),  # diagonal: two components
        # a ring: the outer square, a bridge from (0, 0) to the hole, the hole the other way round, back
        (["###", "#.#", "###"], [[0, 0, 3, 0, 3, 3, 0, 3, 0, 0, 1, 1, 1, 2, 2, 2, 2, 1, 1, 1]]),
    ],
)
def test_hand_made_masks(rows, expected):
    assert _assert_exact(_mask(rows)) == expected


@pytest.mark.parametrize(
    "rows",
    [
        ["#.#", ".#.", "#.#"],  # every corner of the centre pixel is a diagonal touch
        ["#####", "#...#", "#.#.#", "#...#", "#####"],  # an island inside a hole
        ["#####", "#.#.#", "#####"],  # two holes
        ["##.", "#.#", ".##"],  # a hole open to the outside through a diagonal: no hole
        [".#.#.", "#.#.#", ".#.#.", "#.#.#"],  # checkerboard
        ["."],
        ["#"],
    ],
)
def test_holes_and_diagonal_touches(rows):
    _assert_exact(_mask(rows))


def test_random_masks_of_every_kind():
    """Random blobs with holes, islands, diagonal touches, cut by the border; sizes 1..40."""
    rng = np.random.default_rng(0)
    holes = 0
    for _ in range(400):
        h, w = rng.integers(1, 41, 2)
        mask = ndimage.gaussian_filter(rng.random((h, w)), rng.uniform(0, 2)) < rng.uniform(0.3, 0.7)
        _assert_exact(mask)
        holes += (ndimage.binary_fill_holes(mask) != mask).any()
    assert holes > 50  # the cases that need bridges were tried


def test_coordinates_are_in_image_pixels_whatever_the_bounding_box():
    mask = np.zeros((7, 9), bool)
    mask[6, 8] = True  # bottom-right pixel: the polygon's corners reach the image's width and height
    assert _assert_exact(mask) == [[8, 6, 9, 6, 9, 7, 8, 7]]


def test_refuses_a_non_2d_mask():
    with pytest.raises(ValueError, match=r"\(H, W\) mask, got shape \(1, 2, 2\)"):
        mask_to_polygons(np.ones((1, 2, 2), bool))
