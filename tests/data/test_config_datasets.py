"""DATASETS.REGISTER: every format registers from the config alone, idempotently; bad entries name themselves."""
import json
import os

import numpy as np
import pytest
import seg_d2  # noqa: F401  (before detectron2)
import tifffile
from PIL import Image

from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from seg_d2.data.config_datasets import register_datasets_from_config
from seg_d2.data.converters import segmentation_to_mask

pytestmark = pytest.mark.usefixtures("derived_cache")
SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data")
needs_shared = pytest.mark.skipif(not os.path.isdir(SHARED), reason=f"{SHARED} absent (the shared real-image data)")


def _register(*entries, check_images="header"):
    cfg = get_cfg()
    cfg.DATASETS.REGISTER = entries
    cfg.DATASETS.CHECK_IMAGES = check_images
    register_datasets_from_config(cfg)
    return cfg


def _folders(tmp_path, n=2, size=(12, 16)):
    """Images + label maps (0/1/2, 255 in a corner) + instance rasters, named alike."""
    for sub in ("img", "sem", "inst"):
        (tmp_path / sub).mkdir()
    rng = np.random.default_rng(0)
    for k in range(n):
        tifffile.imwrite(tmp_path / "img" / f"s{k}.tif", rng.integers(0, 4000, size, dtype=np.uint16))
        labels = np.zeros(size, np.uint8)
        labels[2:6, 3:9], labels[7:10, 10:14], labels[0, 0] = 1, 2, 255
        Image.fromarray(labels).save(tmp_path / "sem" / f"s{k}.png")
        raster = np.zeros(size, np.uint16)
        raster[2:6, 3:9], raster[7:10, 10:14], raster[11, 15] = 7, 300, 2  # the last one pixel
        tifffile.imwrite(tmp_path / "inst" / f"s{k}.tif", raster)


def test_sem_seg_and_image_mask_folders(tmp_path):
    _folders(tmp_path)
    (tmp_path / "classes.json").write_text(json.dumps(["background", "road", "car"]))
    name = f"cfg_{tmp_path.name}"
    _register((f"{name}_sem", "sem_seg", str(tmp_path / "img"), str(tmp_path / "sem"), str(tmp_path / "classes.json")),
              (f"{name}_inst", "image_mask_folders", str(tmp_path / "img"), str(tmp_path / "inst"), "cell"))
    sem = DatasetCatalog.get(f"{name}_sem")
    assert [(os.path.basename(r["file_name"]), os.path.basename(r["sem_seg_file_name"]), r["height"], r["width"])
            for r in sem] == [("s0.tif", "s0.png", 12, 16), ("s1.tif", "s1.png", 12, 16)]
    meta = MetadataCatalog.get(f"{name}_sem")
    assert meta.stuff_classes == ["background", "road", "car"] and meta.ignore_label == 255
    assert meta.evaluator_type == "sem_seg"
    inst = DatasetCatalog.get(f"{name}_inst")
    assert [len(r["annotations"]) for r in inst] == [3, 3]  # the one-pixel instance too
    areas = [segmentation_to_mask(a["segmentation"], 12, 16).sum() for a in inst[0]["annotations"]]
    assert sorted(areas) == [1, 12, 24]
    meta = MetadataCatalog.get(f"{name}_inst")
    assert meta.thing_classes == ["cell"] and meta.evaluator_type == "coco" and os.path.isfile(meta.json_file)


def test_sem_seg_class_count_and_stems_checked(tmp_path):
    _folders(tmp_path)
    (tmp_path / "two.json").write_text(json.dumps(["background", "road"]))
    with pytest.raises(ValueError, match=r"entry 'bad_classes' \(sem_seg\): .*s0\.png: label id 2 but 2 classes"):
        _register(("bad_classes", "sem_seg", str(tmp_path / "img"), str(tmp_path / "sem"), str(tmp_path / "two.json")))
    assert "bad_classes" not in DatasetCatalog.list()
    os.remove(tmp_path / "sem" / "s1.png")
    with pytest.raises(ValueError, match=r"sem: no label map for 1 image\(s\) of .*img: s1"):
        _register(("bad_stems", "sem_seg", str(tmp_path / "img"), str(tmp_path / "sem")))


def test_registration_is_idempotent_and_names_are_guarded(tmp_path):
    _folders(tmp_path)
    entry = (f"idem_{tmp_path.name}", "sem_seg", str(tmp_path / "img"), str(tmp_path / "sem"))
    _register(entry)
    loader = DatasetCatalog[entry[0]]
    _register(entry)  # e.g. setup_cfg and then Trainer: nothing happens the second time
    assert DatasetCatalog[entry[0]] is loader
    with pytest.raises(ValueError, match=r"entry 'idem_.*': a dataset of that name is already registered \(from another"):
        _register(entry[:3] + (str(tmp_path / "inst"),))
    with pytest.raises(ValueError, match=r"'seg_d2_shapes_train': a dataset of that name is already registered \(built in"):
        _register(("seg_d2_shapes_train", "sem_seg", str(tmp_path / "img"), str(tmp_path / "sem")))


@pytest.mark.parametrize("entry, message", [
    (("x", "cocoo", "a.json", "img"), r"unknown format 'cocoo'; formats: coco, coco_panoptic"),
    (("x", "coco", "a.json"), r"format 'coco' takes \(instances_json, image_root\), got 1"),
    (("x", "coco", "a.json", "img", "drp=a"), r"format 'coco' has no option\(s\) \['drp'\]; options: \['drop'\]"),
    (("x", "tiles", "seg_d2_shapes_train", "size=64", "drop_empty=maybe"), r"expected true or false, got 'maybe'"),
    (("x", "region", "seg_d2_shapes_train", "1,2,3"), r"a window is 'x0,y0,x1,y1', got '1,2,3'"),
    (("x", "tiles", "no_such_set", "size=64"), r"source dataset 'no_such_set' is not registered"),
    (("x", "coco", "no/such.json", "."), r"Annotation file not found: .*no/such\.json"),
])
def test_bad_entries_name_themselves(entry, message):
    with pytest.raises((ValueError, OSError), match=message):
        _register(entry)


def test_single_unwrapped_entry_is_one_entry(tmp_path):
    _folders(tmp_path)
    cfg = get_cfg()
    cfg.merge_from_list(["DATASETS.REGISTER", f"('single_{tmp_path.name}', 'sem_seg', '{tmp_path / 'img'}', "
                         f"'{tmp_path / 'sem'}')"])
    register_datasets_from_config(cfg)
    assert f"single_{tmp_path.name}" in DatasetCatalog.list()


def test_tiles_and_region_of_the_builtin_data():
    _register(("cfg_shapes_tiles", "tiles", "seg_d2_shapes_val_sem_seg", "size=64", "overlap=0"),
              ("cfg_shapes_region", "region", "seg_d2_shapes_val", "0,0,0.5,0.5"))
    tiles = DatasetCatalog.get("cfg_shapes_tiles")
    assert len(tiles) == 4 * 50 and tiles[1]["window"] == [64, 0, 128, 64]
    region = DatasetCatalog.get("cfg_shapes_region")
    assert {(r["height"], r["width"], tuple(r["window"])) for r in region} == {(64, 64, (0, 0, 64, 64))}
    assert MetadataCatalog.get("cfg_shapes_region").thing_classes == MetadataCatalog.get("seg_d2_shapes_val").thing_classes


@needs_shared
def test_voc_labelme_registers_with_background_dropped():
    labelme = os.path.join(SHARED, "voc-labelme")
    _register(("cfg_voc", "coco", os.path.join(labelme, "annotations.json"), labelme, "drop=_background_"))
    assert len(MetadataCatalog.get("cfg_voc").thing_classes) == 20
    assert sum(len(r["annotations"]) for r in DatasetCatalog.get("cfg_voc")) == 12


def test_entries_from_a_yaml_config(tmp_path):
    _folders(tmp_path)
    (tmp_path / "cfg.yaml").write_text(
        "DATASETS:\n  REGISTER:\n"
        f"    - [yaml_sem_{tmp_path.name}, sem_seg, {tmp_path / 'img'}, {tmp_path / 'sem'}]\n"
        f"    - [yaml_tiles_{tmp_path.name}, tiles, yaml_sem_{tmp_path.name}, size=8, drop_empty=true]\n")
    cfg = get_cfg()
    cfg.merge_from_file(str(tmp_path / "cfg.yaml"))
    register_datasets_from_config(cfg)
    tiles = DatasetCatalog.get(f"yaml_tiles_{tmp_path.name}")
    assert len(tiles) == 2 * 4 and {tuple(t["window"]) for t in tiles} == {(0, 0, 8, 8), (8, 0, 16, 8),
                                                                            (0, 4, 8, 12), (8, 4, 16, 12)}
