"""Tiling as a dataset transform: tiles hold exactly the pixels of their window, with the mapping kept."""

import numpy as np
import pytest
import seg_d2  # noqa: F401  (before detectron2)
from PIL import Image

from detectron2.config import get_cfg
from detectron2.structures import BoxMode
from seg_d2.data.converters import mask_to_rle, segmentation_to_mask
from seg_d2.data.exact_polygons import mask_to_polygons
from seg_d2.data.dataset_mappers import SegD2DatasetMapper
from seg_d2.data.image_io import read_label_map
from seg_d2.data.tiling import Window, crop_record, tile_records, tile_windows

pytestmark = pytest.mark.usefixtures("derived_cache")
H, W = 70, 90


def test_tile_windows_cover_with_overlap():
    windows = tile_windows(70, 90, 32, 8)
    covered = np.zeros((70, 90), int)
    for x0, y0, x1, y1 in windows:
        assert x1 - x0 <= 32 and y1 - y0 <= 32
        covered[y0:y1, x0:x1] += 1
    assert covered.min() >= 1
    xs = sorted({w[0] for w in windows})
    assert xs == [0, 24, 48, 58] and max(w[2] for w in windows) == 90  # every 24, the last flush
    assert tile_windows(10, 10, 32, 8) == [(0, 0, 10, 10)]
    with pytest.raises(ValueError, match="0 <= overlap < tile_size"):
        tile_windows(10, 10, 8, 8)


def _masks():
    yy, xx = np.mgrid[:H, :W]
    ring = ((yy - 35) ** 2 + (xx - 45) ** 2 <= 200) & ((yy - 35) ** 2 + (xx - 42) ** 2 > 20)
    return [ring,  # across tile seams, with a hole that a seam cuts too
            ((yy - 10) ** 2 + (xx - 12) ** 2 <= 16),
            (yy >= 60) & (xx >= 80) & (yy < 62) & (xx < 83)]  # small, near a corner


def _record(tmp_path, polygons):
    """An 8-bit image, three instances (polygons or RLE) and their semantic labels."""
    image = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "big.png")
    labels = np.zeros((H, W), np.uint8)
    annotations = []
    for k, mask in enumerate(_masks()):
        labels[mask] = k + 1
        segmentation = mask_to_polygons(mask) if polygons else mask_to_rle(mask)
        ys, xs = np.nonzero(mask)
        annotations.append({"segmentation": segmentation, "category_id": k % 2, "iscrowd": 0,
                            "bbox": [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], "bbox_mode": BoxMode.XYXY_ABS})
    Image.fromarray(labels).save(tmp_path / "labels.png")
    return {"file_name": str(tmp_path / "big.png"), "sem_seg_file_name": str(tmp_path / "labels.png"),
            "height": H, "width": W, "image_id": 7, "annotations": annotations}, labels


@pytest.mark.parametrize("polygons", [True, False])
def test_tiles_hold_exactly_their_window(tmp_path, polygons):
    record, labels = _record(tmp_path, polygons)
    tiles = tile_records([record], tile_size=32, overlap=8)
    assert len(tiles) == len(tile_windows(H, W, 32, 8)) and [t["image_id"] for t in tiles] == list(range(1, 13))
    masks = _masks()
    for tile in tiles:
        x0, y0, x1, y1 = tile["window"]
        assert (tile["height"], tile["width"], tile["source_image_id"]) == (y1 - y0, x1 - x0, 7)
        expected = [(m[y0:y1, x0:x1], k % 2) for k, m in enumerate(masks) if m[y0:y1, x0:x1].any()]
        got = [(segmentation_to_mask(a["segmentation"], y1 - y0, x1 - x0), a["category_id"])
               for a in tile["annotations"]]
        assert len(got) == len(expected)
        for (mask, cls), (want, want_cls) in zip(got, expected):
            np.testing.assert_array_equal(mask, want)
            assert cls == want_cls
            ys, xs = np.nonzero(want)
            assert tile["annotations"][0]["bbox_mode"] == BoxMode.XYWH_ABS
        boxes = [a["bbox"] for a in tile["annotations"]]
        assert boxes == [[float(np.nonzero(w)[1].min()), float(np.nonzero(w)[0].min()),
                          float(np.ptp(np.nonzero(w)[1]) + 1), float(np.ptp(np.nonzero(w)[0]) + 1)] for w, _ in expected]
        np.testing.assert_array_equal(read_label_map(tile["sem_seg_file_name"]), labels[y0:y1, x0:x1])


def test_drop_empty_min_area_region_and_exclude(tmp_path):
    record, _ = _record(tmp_path, polygons=False)
    everything = tile_records([record], 32, 8)
    kept = tile_records([record], 32, 8, drop_empty=True)
    assert len(kept) == sum(bool(t["annotations"]) for t in everything) < len(everything)
    cut = tile_records([record], 32, 8, min_area=10)  # parts of the big disc under 10 px cut by a border go
    areas = [segmentation_to_mask(a["segmentation"], t["height"], t["width"]).sum() for t in cut for a in
             t["annotations"]]
    assert min(areas) == 6  # the whole 2x3 instance stays, however small
    assert sum(len(t["annotations"]) for t in cut) < sum(len(t["annotations"]) for t in everything)
    inside = tile_records([record], 16, 0, region=Window.parse("0.5,0,1.0,0.5"))
    assert all(t["window"][0] >= 45 and t["window"][3] <= 35 for t in inside) and len(inside) == 9
    outside = tile_records([record], 16, 0, exclude=Window.parse("45,0,90,35"))
    touching = [w for w in tile_windows(H, W, 16, 0) if w[0] < 90 and w[2] > 45 and w[1] < 35]  # brute force
    assert [tuple(t["window"]) for t in outside] == [w for w in tile_windows(H, W, 16, 0) if w not in touching]
    assert len(touching) == 12  # 4 columns (one straddles x = 45) x 3 rows


def test_tiles_of_a_region_map_to_the_source_image(tmp_path):
    record, _ = _record(tmp_path, polygons=True)
    (region,) = crop_record(record, [Window.parse("20,10,84,58").pixels(H, W)])
    tiles = tile_records([region], 32, 0)
    assert [t["window"] for t in tiles] == [[20, 10, 52, 42], [52, 10, 84, 42], [20, 26, 52, 58], [52, 26, 84, 58]]
    cfg = get_cfg()
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.RANDOM_FLIP, cfg.INPUT.MASK_FORMAT = (0,), "none", "bitmask"
    cfg.MODEL.MASK_ON = True
    mapper = SegD2DatasetMapper(cfg, is_train=True)
    whole = mapper(record)
    for tile in tiles:
        x0, y0, x1, y1 = tile["window"]
        mapped = mapper(tile)
        assert np.array_equal(mapped["image"], whole["image"][:, y0:y1, x0:x1])
        assert np.array_equal(mapped["sem_seg"], whole["sem_seg"][y0:y1, x0:x1])
        union = mapped["instances"].gt_masks.tensor.any(dim=0)
        assert np.array_equal(union, whole["instances"].gt_masks.tensor.any(dim=0)[y0:y1, x0:x1])


def test_window_parse_and_pixels():
    assert Window.parse("0.5, 0, 1.0, 100").pixels(200, 300) == (150, 0, 300, 100)
    assert Window.parse("10,20,5000,5000").pixels(200, 300) == (10, 20, 300, 200)  # clipped to the image
    with pytest.raises(ValueError, match=r"window \(400, 0, 500, 10\) is empty in a 300x200 image"):
        Window.parse("400,0,500,10").pixels(200, 300)
