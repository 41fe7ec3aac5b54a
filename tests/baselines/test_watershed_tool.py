import importlib.util
import os

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch

import seg_d2  # noqa: F401  (before detectron2)
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

torch.set_num_threads(1)
TOOL = os.path.join(os.path.dirname(__file__), "..", "..", "tools", "watershed_baseline.py")


def _load_tool():
    spec = importlib.util.spec_from_file_location("watershed_baseline", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def discs_dataset(tmp_path):
    """Two 96x96 images of bright discs on a dark background, one category."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:96, :96]
    dicts = []
    for i, centres in enumerate([[(20, 20), (60, 30), (40, 70)], [(25, 60), (70, 70)]]):
        masks = [((yy - cy) ** 2 + (xx - cx) ** 2 <= 100) for cy, cx in centres]
        image = np.where(np.logical_or.reduce(masks), 200, 30) + rng.normal(0, 4, (96, 96))
        path = str(tmp_path / f"{i}.png")
        cv2.imwrite(path, np.repeat(np.clip(image, 0, 255).astype(np.uint8)[..., None], 3, axis=2))
        anns = []
        for m in masks:
            rle = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode()
            ys, xs = np.nonzero(m)
            box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
            anns.append({"bbox": box, "bbox_mode": BoxMode.XYXY_ABS, "segmentation": rle, "category_id": 0})
        dicts.append({"file_name": path, "image_id": i, "height": 96, "width": 96, "annotations": anns})
    name = "test_watershed_discs"
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(thing_classes=["disc"], evaluator_type="coco")
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def test_tool_scores_high_mask_ap_on_discs(discs_dataset, tmp_path, capsys):
    results = _load_tool().main(["--dataset", discs_dataset, "--output-dir", str(tmp_path / "out")])
    assert results["segm"]["AP"] > 80
    assert f"watershed mask AP on {discs_dataset}" in capsys.readouterr().out


def test_tool_wrong_polarity_scores_low(discs_dataset, tmp_path):
    results = _load_tool().main(["--dataset", discs_dataset, "--dark", "--output-dir", str(tmp_path / "out")])
    assert results["segm"]["AP"] < 20


NUCLEI = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "nuclei-stardist")


@pytest.mark.skipif(not os.path.isdir(NUCLEI), reason=f"{NUCLEI} absent (the shared real-image data)")
def test_tool_on_16bit_nuclei_declared_in_the_config(tmp_path, monkeypatch):
    """The 16-bit TIFF and its instance raster, registered by DATASETS.REGISTER; the held-out quadrant scored.
    Read as Detectron2 reads it the image is white (no nucleus found); seg_d2's reader stretches it."""
    monkeypatch.setenv("SEG_D2_DATA_DIR", str(tmp_path / "cache"))
    for sub, name in (("img", "img2d.tif"), ("masks", "mask2d.tif")):
        (tmp_path / sub).mkdir()
        os.symlink(os.path.join(NUCLEI, name), tmp_path / sub / "nuclei.tif")
    register = (f"(('ws_nuclei', 'image_mask_folders', '{tmp_path / 'img'}', '{tmp_path / 'masks'}', 'nucleus'), "
                "('ws_nuclei_q4', 'region', 'ws_nuclei', '0.5,0.5,1.0,1.0'))")
    results = _load_tool().main(["--dataset", "ws_nuclei_q4", "--min-distance", "6", "--output-dir",
                                 str(tmp_path / "out"), "DATASETS.REGISTER", register])
    assert results["segm"]["AP"] > 30
