"""tools/predict.py on every model family (random weights, small images from the built-in data):
outputs equal what Detectron2 itself would write for the same model, tools/evaluate.py scores them,
inputs are files, folders and globs, bad inputs are reported and skipped, overrides go after --opts."""
import importlib.util
import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import seg_d2  # noqa: F401  (before detectron2)
from detectron2.data import MetadataCatalog
from detectron2.engine import DefaultPredictor
from detectron2.evaluation.coco_evaluation import instances_to_coco_json

from seg_d2.data.builtin import dataset_paths, ensure_builtin_data
from seg_d2.engine.trainer import setup_cfg
from seg_d2.evaluation.panoptic_png import read_panoptic_png

torch.set_num_threads(1)
ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
CONFIGS = os.path.join(ROOT, "configs", "builtin")


def _tool(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def val_images(tmp_path_factory):
    """Three built-in validation images and the subsets of their ground truths."""
    paths = dataset_paths(ensure_builtin_data(), "val")
    folder = tmp_path_factory.mktemp("val")
    with open(paths["json_file"]) as f:
        coco = json.load(f)
    images = coco["images"][:3]
    for image in images:
        shutil.copy(os.path.join(paths["image_root"], image["file_name"]), folder)
    ids = {image["id"] for image in images}
    coco.update(images=images, annotations=[a for a in coco["annotations"] if a["image_id"] in ids])
    (folder / "instances.json").write_text(json.dumps(coco))
    with open(paths["panoptic_json"]) as f:
        panoptic = json.load(f)
    panoptic.update(images=images, annotations=[a for a in panoptic["annotations"] if a["image_id"] in ids])
    (folder / "panoptic.json").write_text(json.dumps(panoptic))
    return folder, images, paths


def _run(tmp_path, config, inputs, *extra):
    out = tmp_path / "out"
    code = _tool("predict").main(["--config-file", os.path.join(CONFIGS, config), "--input", *map(str, inputs),
                                  "--output", str(out), *extra, "--opts", "MODEL.WEIGHTS", ""])
    return code, out


def _cfg(config, *opts):
    return setup_cfg(os.path.join(CONFIGS, config), ["MODEL.WEIGHTS", "", *opts])


def test_override_among_inputs_is_refused_before_anything_runs(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        _tool("predict").main(["--config-file", os.path.join(CONFIGS, "mask_rcnn_R18_shapes.yaml"), "--input",
                               "a.png", "MODEL.WEIGHTS", "w.pth", "--output", str(tmp_path / "out")])
    assert e.value.code == 2
    assert "MODEL.WEIGHTS looks like a config override" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_instances_equal_detectron2s_coco_results_and_evaluate(val_images, tmp_path, capsys):
    folder, images, _ = val_images
    code, out = _run(tmp_path, "mask_rcnn_R18_shapes.yaml", [folder], "--score-thresh", "0.05", "--max-drawn", "10",
                     "--gt", str(folder / "instances.json"))
    assert code == 0
    results = json.loads((out / "instances_results.json").read_text())
    # the reference: what Detectron2's COCOEvaluator writes for DefaultPredictor's outputs on the same images
    cfg = _cfg("mask_rcnn_R18_shapes.yaml", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.05")
    predictor = DefaultPredictor(cfg)
    to_dataset = {v: k for k, v in MetadataCatalog.get("seg_d2_shapes_val").thing_dataset_id_to_contiguous_id.items()}
    expected = []
    for image in images:
        pixels = np.asarray(Image.open(folder / image["file_name"]).convert("RGB"))[:, :, ::-1]
        for r in instances_to_coco_json(predictor(pixels)["instances"].to("cpu"), image["id"]):
            expected.append(dict(r, category_id=to_dataset[r["category_id"]]))
    key = lambda r: (r["image_id"], round(r["score"], 6), r["segmentation"]["counts"])  # noqa: E731
    assert len(results) == len(expected) > 0
    for got, want in zip(sorted(results, key=key), sorted(expected, key=key)):
        assert key(got) == key(want) and got["category_id"] == want["category_id"]
        np.testing.assert_allclose(got["bbox"], want["bbox"], atol=1e-3)
    assert all((out / f"{os.path.splitext(i['file_name'])[0]}.png").is_file() for i in images)
    capsys.readouterr()
    assert _tool("evaluate").main(["instances", "--gt", str(folder / "instances.json"),
                                   "--results", str(out / "instances_results.json")]) == 0
    assert "AP" in capsys.readouterr().out


def test_semantic_label_pngs_equal_the_models_argmax_and_evaluate(val_images, tmp_path):
    folder, images, paths = val_images
    code, out = _run(tmp_path, "semantic_unet.yaml", [folder / "*.png"])
    assert code == 0
    predictor = DefaultPredictor(_cfg("semantic_unet.yaml"))
    for image in images:
        pixels = np.asarray(Image.open(folder / image["file_name"]).convert("RGB"))[:, :, ::-1]
        expected = predictor(pixels)["sem_seg"].argmax(dim=0).numpy()
        name = os.path.splitext(image["file_name"])[0] + ".png"
        assert np.array_equal(np.asarray(Image.open(out / "sem_seg" / name)), expected)
    assert not (out / "instances_results.json").exists()
    assert _tool("evaluate").main(["semantic", "--gt-dir", paths["semantic_root"], "--pred-dir",
                                   str(out / "sem_seg"), "--num-classes", "6"]) == 0


def test_panoptic_pngs_and_json_and_evaluate(val_images, tmp_path):
    folder, images, paths = val_images
    config = "panoptic_seg_d2_R18_unet_head.yaml"
    code, out = _run(tmp_path, config, [folder / images[0]["file_name"], folder], "--score-thresh", "0.2",
                     "--gt", str(folder / "panoptic.json"))
    assert code == 0
    predictions = json.loads((out / "panoptic.json").read_text())
    assert [a["image_id"] for a in predictions["annotations"]] == [i["id"] for i in images]  # no repeats
    model = DefaultPredictor(_cfg(config, "MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH", "0.2"))
    meta = MetadataCatalog.get("seg_d2_shapes_val_panoptic_separated")
    things = {v: k for k, v in meta.thing_dataset_id_to_contiguous_id.items()}
    stuff = {v: k for k, v in meta.stuff_dataset_id_to_contiguous_id.items()}
    for image, ann in zip(images, predictions["annotations"]):
        pixels = np.asarray(Image.open(folder / image["file_name"]).convert("RGB"))[:, :, ::-1]
        ids, segments = model(pixels)["panoptic_seg"]
        assert np.array_equal(read_panoptic_png(str(out / "panoptic" / ann["file_name"])), ids.numpy())
        assert [(s["id"], s["category_id"]) for s in ann["segments_info"]] == \
            [(s["id"], (things if s["isthing"] else stuff)[s["category_id"]]) for s in segments]
    assert any(s["isthing"] for a in predictions["annotations"] for s in a["segments_info"])
    assert _tool("evaluate").main(["panoptic", "--gt", str(folder / "panoptic.json"), "--gt-folder",
                                   paths["panoptic_root"], "--pred", str(out / "panoptic.json")]) == 0


def test_bad_inputs_are_reported_and_skipped(val_images, tmp_path, capsys):
    folder, images, _ = val_images
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (tmp_path / "empty").mkdir()
    inputs = [folder / images[0]["file_name"], tmp_path / "broken.png", tmp_path / "missing.png",
              tmp_path / "empty", tmp_path / "*.jpg"]
    code, out = _run(tmp_path, "mask_rcnn_R18_shapes.yaml", inputs)
    assert code == 1
    printed = capsys.readouterr().out
    assert "predicted 1 of 5 inputs" in printed and "4 failed" in printed
    for reason in ("broken.png: ImageReadError", "missing.png: no such file", "empty: folder holds no image",
                   "*.jpg: pattern matches no file"):
        assert reason in printed
    assert (out / (os.path.splitext(images[0]["file_name"])[0] + ".png")).is_file()


def test_large_image_is_tiled_and_drawn_downscaled(val_images, tmp_path, capsys):
    folder, images, _ = val_images
    tiles = [np.asarray(Image.open(folder / i["file_name"]).convert("RGB")) for i in images]
    big = np.concatenate([np.concatenate(tiles[:2], 1), np.concatenate([tiles[2], tiles[0]], 1)], 0)  # 256 x 256
    Image.fromarray(big).save(tmp_path / "big.png")
    code, out = _run(tmp_path, "panoptic_fpn_R18_demo.yaml", [tmp_path / "big.png"], "--tile", "128",
                     "--overlay-max-side", "200")
    assert code == 0
    assert "256x256 in 9 tiles" in capsys.readouterr().out
    assert Image.open(out / "big.png").size == (200, 200)
    assert np.asarray(Image.open(out / "panoptic" / "big.png")).shape == (256, 256, 3)


FAMILIES = [("builtin", "mask_rcnn_R18_shapes_cascade_scoring.yaml"), ("builtin", "semantic_fpn_R18.yaml"),
            ("builtin", "semantic_deeplabv3plus_R18.yaml"), ("builtin", "segformer_b0.yaml"),
            ("builtin", "semantic_fcn_R18.yaml"), ("projects/PointRend", "pointrend_rcnn_R18_FPN_shapes.yaml"),
            ("projects/DeepLab", "deeplab_v3_plus_R50_shapes.yaml")]


@pytest.mark.parametrize("folder, config", FAMILIES, ids=[c for _, c in FAMILIES])
def test_every_model_family_predicts_in_tiles(val_images, tmp_path, folder, config):
    images_folder, images, _ = val_images
    code, out = _run(tmp_path, os.path.join("..", folder, config), [images_folder / images[0]["file_name"]],
                     "--tile", "96")
    assert code == 0
    assert (out / (os.path.splitext(images[0]["file_name"])[0] + ".png")).is_file()


def test_panoptic_deeplab_predicts_whole_images_and_refuses_tiles(val_images, tmp_path, capsys):
    """Its panoptic output is its own label map (centres and offsets), taken as it is; tiles cannot rebuild it."""
    folder, images, _ = val_images
    config = os.path.join("..", "projects", "Panoptic-DeepLab", "panoptic_deeplab_R50_shapes.yaml")
    code, out = _run(tmp_path, config, [folder / images[0]["file_name"]])
    assert code == 0
    ann = json.loads((out / "panoptic.json").read_text())["annotations"][0]
    ids = read_panoptic_png(str(out / "panoptic" / ann["file_name"]))
    assert set(np.unique(ids[ids > 0]).tolist()) == {s["id"] for s in ann["segments_info"]}
    assert sum(s["area"] for s in ann["segments_info"]) == int((ids > 0).sum())
    code, _ = _run(tmp_path, config, [folder / images[0]["file_name"]], "--tile", "96")
    assert code == 1 and "cannot be stitched from tiles: predict whole images (--tile 0)" in capsys.readouterr().out


def test_cuda_config_predicts_on_the_cpu_without_a_gpu(capsys):
    cfg = _tool("predict").load_config(os.path.join(CONFIGS, "mask_rcnn_R18_shapes.yaml"), ["MODEL.DEVICE", "cuda"])
    assert cfg.MODEL.DEVICE == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        assert "no CUDA device is available: predicting on the CPU" in capsys.readouterr().err
