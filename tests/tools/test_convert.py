"""tools/convert.py's subcommands (its main(), in this process): each writes what registers, bad input exits 2
naming the file. (tests/data/test_own_data_end_to_end.py runs the converters before training on them.)"""
import importlib.util
import json
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "convert.py"


def _main(*argv):
    spec = importlib.util.spec_from_file_location("convert_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main([str(a) for a in argv])


def test_flat_polygons(tmp_path, capsys):
    coco = {"images": [{"id": 1, "file_name": "a.png", "height": 8, "width": 8}], "categories": [{"id": 1, "name": "x"}],
            "annotations": [{"id": 4, "image_id": 1, "category_id": 1, "bbox": [1, 1, 3, 3],
                             "segmentation": [1, 1, 4, 1, 4, 4]}]}
    (tmp_path / "flat.json").write_text(json.dumps(coco))
    assert _main("flat-polygons", "--coco", tmp_path / "flat.json", "--out", tmp_path / "nested.json") == 0
    assert "1 flat polygon list(s) nested (annotation ids 4)" in capsys.readouterr().out
    assert json.loads((tmp_path / "nested.json").read_text())["annotations"][0]["segmentation"] == [[1, 1, 4, 1, 4, 4]]


def test_bad_input_exits_2_naming_the_file(tmp_path, capsys):
    (tmp_path / "img").mkdir()
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "img" / "a.png")
    assert _main("rasters-to-coco", "--images", tmp_path / "img", "--masks", tmp_path / "masks", "--out",
                 tmp_path / "out.json") == 2
    assert "masks: no instance raster for 1 image(s)" in capsys.readouterr().err
    (tmp_path / "broken.json").write_text("{")
    assert _main("coco-to-yolo", "--coco", tmp_path / "broken.json", "--out", tmp_path / "yolo") == 2
    assert "broken.json: malformed JSON at line 1" in capsys.readouterr().err


def test_labelme_and_yolo_subcommands(tmp_path, capsys):
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "a.png")
    shapes = [{"label": "cat", "shape_type": "polygon", "points": [[2, 2], [12, 2], [12, 10]], "group_id": None}]
    (tmp_path / "a.json").write_text(json.dumps({"imagePath": "a.png", "shapes": shapes}))
    assert _main("labelme-to-coco", "--input", tmp_path, "--out", tmp_path / "coco.json") == 0
    coco = json.loads((tmp_path / "coco.json").read_text())
    assert coco["images"][0]["file_name"] == "a.png" and coco["categories"] == [{"id": 1, "name": "cat"}]
    assert _main("coco-to-yolo", "--coco", tmp_path / "coco.json", "--out", tmp_path / "yolo") == 0
    (tmp_path / "data.yaml").write_text("names:\n  0: cat\n")
    assert _main("yolo-to-coco", "--labels", tmp_path / "yolo", "--images", tmp_path, "--names", tmp_path / "data.yaml",
                 "--out", tmp_path / "back.json") == 0
    back = json.loads((tmp_path / "back.json").read_text())
    assert back["annotations"][0]["segmentation"] == coco["annotations"][0]["segmentation"]
    assert "1 images, 1 annotations, 1 categories" in capsys.readouterr().out
