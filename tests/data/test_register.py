"""register.py: user datasets by path load through Detectron2; bad input fails early and clearly."""
import json
import os

import numpy as np
import pytest
import seg_d2  # noqa: F401  (before detectron2)
import pycocotools.mask as mask_util
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog
from seg_d2.data import register_coco_instances_dataset, register_coco_panoptic_dataset

pytestmark = pytest.mark.usefixtures("derived_cache")
# ../shared/data beside the repository (always there in CI; absent from a user's clone)
LABELME = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "voc-labelme")


def _instances():
    """Two 8x8 images; annotation 11 is a 2x3 box of category 7 (so ids are not contiguous)."""
    polygon = [[1, 1, 4, 1, 4, 3, 1, 3]]
    box = {"segmentation": polygon, "bbox": [1, 1, 3, 2], "area": 6, "iscrowd": 0}
    return {
        "images": [
            {"id": 1, "file_name": "a.png", "height": 8, "width": 8},
            {"id": 2, "file_name": "b.png", "height": 8, "width": 8},
        ],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 3, **box},
            {"id": 11, "image_id": 2, "category_id": 7, **box},
        ],
        "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
    }


def _write(tmp_path, data, name="ann.json"):
    for image in data["images"]:
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / image["file_name"])
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


def _name(tmp_path):
    return f"test_register_{tmp_path.name}"


def _register(tmp_path, data, **kwargs):
    json_file = _write(tmp_path, data)
    return register_coco_instances_dataset(_name(tmp_path), json_file, str(tmp_path), **kwargs)


def test_valid_instances_load_with_contiguous_ids(tmp_path):
    _register(tmp_path, _instances())
    dicts = DatasetCatalog.get(_name(tmp_path))
    assert [d["image_id"] for d in dicts] == [1, 2]
    assert [a["category_id"] for d in dicts for a in d["annotations"]] == [0, 1]
    meta = MetadataCatalog.get(_name(tmp_path))
    assert meta.thing_classes == ["cat", "dog"] and meta.evaluator_type == "coco"
    assert meta.thing_dataset_id_to_contiguous_id == {3: 0, 7: 1}
    assert meta.json_file == str(tmp_path / "ann.json")


def test_drop_categories_removes_category_and_its_annotations(tmp_path):
    _register(tmp_path, _instances(), drop_categories=["cat"])
    dicts = DatasetCatalog.get(_name(tmp_path))
    assert [len(d["annotations"]) for d in dicts] == [0, 1]
    assert dicts[1]["annotations"][0]["category_id"] == 0
    meta = MetadataCatalog.get(_name(tmp_path))
    assert meta.thing_classes == ["dog"] and meta.thing_dataset_id_to_contiguous_id == {7: 0}
    with open(meta.json_file) as f:  # what COCOEvaluator scores against: the kept categories only
        kept = json.load(f)
    assert [c["id"] for c in kept["categories"]] == [7] and [a["id"] for a in kept["annotations"]] == [11]
    assert meta.json_file != str(tmp_path / "ann.json")


def test_drop_unknown_category_name(tmp_path):
    with pytest.raises(ValueError, match=r"ann\.json.*\['bird'\]"):
        _register(tmp_path, _instances(), drop_categories=["bird"])


def test_missing_json(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        register_coco_instances_dataset(_name(tmp_path), str(tmp_path / "nope.json"), str(tmp_path))


def test_missing_image_root(tmp_path):
    json_file = _write(tmp_path, _instances())
    with pytest.raises(FileNotFoundError, match="Image root.*no_images"):
        register_coco_instances_dataset(_name(tmp_path), json_file, str(tmp_path / "no_images"))


def test_malformed_json(tmp_path):
    path = tmp_path / "ann.json"
    path.write_text('{"images": [\n  {"id": 1,}\n]}')
    with pytest.raises(ValueError, match=r"ann\.json: malformed JSON at line 2"):
        register_coco_instances_dataset(_name(tmp_path), str(path), str(tmp_path))


def test_missing_top_level_list(tmp_path):
    data = _instances()
    del data["categories"]
    with pytest.raises(ValueError, match=r"ann\.json: expected a list under 'categories'"):
        _register(tmp_path, data)


@pytest.mark.parametrize(
    "section, index, key, value, message",
    [
        ("images", 1, "id", 1, r"ann\.json: duplicate image id 1"),
        ("annotations", 1, "id", 10, r"ann\.json: duplicate annotation id 10"),
        ("annotations", 1, "image_id", 5, r"ann\.json: annotation id 11 refers to unknown image id 5"),
        ("annotations", 0, "category_id", 4, r"ann\.json: annotation id 10 refers to unknown category id 4"),
    ],
    ids=["duplicate_image_id", "duplicate_annotation_id", "annotation_with_unknown_image",
         "annotation_with_unknown_category"],
)
def test_inconsistent_ids(tmp_path, section, index, key, value, message):
    data = _instances()
    data[section][index][key] = value
    with pytest.raises(ValueError, match=message):
        _register(tmp_path, data)


def test_missing_image_file(tmp_path):
    json_file = _write(tmp_path, _instances())
    os.remove(tmp_path / "b.png")
    with pytest.raises(FileNotFoundError, match=r"ann\.json: image id 2: file not found: .*b\.png"):
        register_coco_instances_dataset(_name(tmp_path), json_file, str(tmp_path))


# ---------------------------------------------------------------- panoptic
def _panoptic(tmp_path):
    """One 8x8 image: segment 5 (thing "cat") is the top half, segment 9 (stuff "sky") the rest."""
    ids = np.full((8, 8), 9, np.uint32)
    ids[:4] = 5
    (tmp_path / "pan").mkdir()
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "pan" / "a.png")
    return {
        "images": [{"id": 1, "file_name": "a.png", "height": 8, "width": 8}],
        "annotations": [
            {
                "image_id": 1,
                "file_name": "a.png",
                "segments_info": [
                    {"id": 5, "category_id": 3, "area": 32, "bbox": [0, 0, 8, 4], "iscrowd": 0},
                    {"id": 9, "category_id": 8, "area": 32, "bbox": [0, 4, 8, 4], "iscrowd": 0},
                ],
            }
        ],
        "categories": [
            {"id": 3, "name": "cat", "isthing": 1},
            {"id": 8, "name": "sky", "isthing": 0},
        ],
    }


def _register_panoptic(tmp_path, data):
    json_file = _write(tmp_path, data, "panoptic.json")
    register_coco_panoptic_dataset(_name(tmp_path), json_file, str(tmp_path), str(tmp_path / "pan"))


def test_valid_panoptic_loads_standard_form(tmp_path):
    _register_panoptic(tmp_path, _panoptic(tmp_path))
    (d,) = DatasetCatalog.get(_name(tmp_path))
    assert d["file_name"] == str(tmp_path / "a.png")  # the JSON's name, not Detectron2's ".jpg"
    assert d["pan_seg_file_name"] == str(tmp_path / "pan" / "a.png")
    assert [(s["id"], s["category_id"], s["isthing"]) for s in d["segments_info"]] == [
        (5, 0, True),
        (9, 1, False),
    ]
    meta = MetadataCatalog.get(_name(tmp_path))
    assert meta.evaluator_type == "coco_panoptic_seg" and meta.stuff_classes == ["cat", "sky"]
    assert meta.thing_dataset_id_to_contiguous_id == {3: 0}
    assert meta.stuff_dataset_id_to_contiguous_id == {8: 1}


def test_panoptic_missing_png(tmp_path):
    data = _panoptic(tmp_path)
    os.remove(tmp_path / "pan" / "a.png")
    message = r"panoptic\.json: annotation of image id 1: panoptic PNG not found: .*pan/a\.png"
    with pytest.raises(FileNotFoundError, match=message):
        _register_panoptic(tmp_path, data)


def test_panoptic_segment_with_unknown_category(tmp_path):
    data = _panoptic(tmp_path)
    data["annotations"][0]["segments_info"][1]["category_id"] = 99
    message = r"panoptic\.json: segment id 9 of image id 1 refers to unknown category id 99"
    with pytest.raises(ValueError, match=message):
        _register_panoptic(tmp_path, data)


def test_panoptic_duplicate_segment_id(tmp_path):
    data = _panoptic(tmp_path)
    data["annotations"][0]["segments_info"][1]["id"] = 5
    with pytest.raises(ValueError, match=r"panoptic\.json: duplicate segment id 5 in image id 1"):
        _register_panoptic(tmp_path, data)


def test_panoptic_category_without_isthing(tmp_path):
    data = _panoptic(tmp_path)
    del data["categories"][1]["isthing"]
    with pytest.raises(ValueError, match=r"category id 8 lacks 'isthing'"):
        _register_panoptic(tmp_path, data)


@pytest.mark.skipif(not os.path.isdir(LABELME), reason=f"{LABELME} absent (the shared real-image data)")
def test_voc_labelme_loads_without_background():
    name = "test_register_voc_labelme"
    register_coco_instances_dataset(
        name, os.path.join(LABELME, "annotations.json"), LABELME, drop_categories=["_background_"]
    )
    meta = MetadataCatalog.get(name)
    assert len(meta.thing_classes) == 20 and "_background_" not in meta.thing_classes
    assert meta.thing_dataset_id_to_contiguous_id[15] == meta.thing_classes.index("person") == 14
    dicts = DatasetCatalog.get(name)
    assert len(dicts) == 3 and sum(len(d["annotations"]) for d in dicts) == 12
    assert all(os.path.isfile(d["file_name"]) for d in dicts)


# ---------------------------------------------------------------- deeper checks: segmentations, boxes, images
def test_flat_polygon_list_refused_with_file_and_id(tmp_path):
    data = _instances()
    data["annotations"][1]["segmentation"] = [1, 1, 4, 1, 4, 3, 1, 3]
    with pytest.raises(ValueError, match=r"ann\.json: annotation id 11: 'segmentation' is a flat list.*flat-polygons"):
        _register(tmp_path, data)


def test_rle_of_another_size_refused(tmp_path):
    data = _instances()
    data["annotations"][0]["segmentation"] = {"size": [4, 4], "counts": "0@0"}
    with pytest.raises(ValueError, match=r"annotation id 10: RLE size \[4, 4\].*\[8, 8\]"):
        _register(tmp_path, data)


def test_degenerate_boxes_counted(tmp_path, caplog):
    data = _instances()
    extra = [({"bbox": [2, 2, 0, 3]}, 12), ({"bbox": [9, 1, 2, 2]}, 13), ({"bbox": [6, 6, 5, 1]}, 14),
             ({"bbox": [3, 3, 0, 0]}, 15), ({"bbox": [7.5, 0, 1, 8]}, 16)]  # the last only rounds past the border
    for fields, ann_id in extra:
        data["annotations"].append({**data["annotations"][0], **fields, "id": ann_id})
    with caplog.at_level("WARNING", logger="seg_d2.data.register"):
        _register(tmp_path, data)
    assert ("degenerate boxes: 2 have a zero width or height (annotation ids 12, 15); 1 lie entirely outside "
            "their image (annotation ids 13); 1 reach more than 1 pixel past their image's border") in caplog.text
    assert "16" not in caplog.text.split("degenerate boxes")[1]


def test_image_size_must_match_the_file(tmp_path):
    data = _instances()
    data["images"][1]["height"] = 9
    with pytest.raises(ValueError, match=r"ann\.json: image id 2: .*b\.png is 8x8 \(WxH\), the annotations say 8x9"):
        _register(tmp_path, data)


def test_truncated_image_found_when_decoding(tmp_path):
    json_file = _write(tmp_path, _instances())
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 8, 3), np.uint8)).save(tmp_path / "b.jpg")
    data = _instances()
    data["images"][1]["file_name"] = "b.jpg"
    (tmp_path / "ann.json").write_text(json.dumps(data))
    data_bytes = (tmp_path / "b.jpg").read_bytes()
    (tmp_path / "b.jpg").write_bytes(data_bytes[: len(data_bytes) - 60])  # the end of the scan is lost
    register_coco_instances_dataset(_name(tmp_path), json_file, str(tmp_path))  # the header still reads
    with pytest.raises(OSError, match=r"ann\.json: image id 2: .*b\.jpg: cannot decode image"):
        register_coco_instances_dataset(_name(tmp_path) + "_decode", json_file, str(tmp_path), check_images="decode")


def test_non_string_category_name_refused(tmp_path):
    data = _instances()
    data["categories"][1]["name"] = 1.0
    with pytest.raises(ValueError, match=r"ann\.json: category id 7 has name 1\.0"):
        _register(tmp_path, data)


# ---------------------------------------------------------------- panoptic, separated form
def test_panoptic_separated_form_derives_instances_and_semantic_labels(tmp_path):
    json_file = _write(tmp_path, _panoptic(tmp_path), "panoptic.json")
    register_coco_panoptic_dataset(_name(tmp_path), json_file, str(tmp_path), str(tmp_path / "pan"), form="separated")
    (d,) = DatasetCatalog.get(_name(tmp_path))
    (ann,) = d["annotations"]  # the one thing segment (5, "cat"), from the PNG
    mask = mask_util.decode(dict(ann["segmentation"], counts=ann["segmentation"]["counts"].encode()))
    assert ann["category_id"] == 0 and mask[:4].all() and not mask[4:].any()
    semantic = np.asarray(Image.open(d["sem_seg_file_name"]))
    assert (semantic[:4] == 0).all() and (semantic[4:] == 1).all()  # things 0, "sky" 1
    meta = MetadataCatalog.get(_name(tmp_path))
    assert meta.stuff_classes == ["things", "sky"] and meta.thing_classes == ["cat"]
    assert meta.stuff_dataset_id_to_contiguous_id == {0: 0, 8: 1} and meta.evaluator_type == "coco_panoptic_seg"
    with open(meta.json_file) as f:
        assert [a["category_id"] for a in json.load(f)["annotations"]] == [3]


def test_panoptic_png_with_unlisted_segment_refused(tmp_path):
    data = _panoptic(tmp_path)
    data["annotations"][0]["segments_info"].pop(1)  # id 9 is still in the PNG
    json_file = _write(tmp_path, data, "panoptic.json")
    with pytest.raises(ValueError, match=r"panoptic\.json: .*pan/a\.png holds segment id\(s\) \[9\]"):
        register_coco_panoptic_dataset(_name(tmp_path), json_file, str(tmp_path), str(tmp_path / "pan"),
                                       form="separated")


def test_binary_file_as_json(tmp_path):
    (tmp_path / "ann.json").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(ValueError, match=r"ann\.json: not a JSON text file"):
        register_coco_instances_dataset(_name(tmp_path), str(tmp_path / "ann.json"), str(tmp_path))
