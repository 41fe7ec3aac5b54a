import argparse
import importlib.util
import os

import numpy as np
import pytest
import torch
from PIL import Image

import seg_d2  # noqa: F401  (before detectron2)

torch.set_num_threads(1)
ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def _tool():
    spec = importlib.util.spec_from_file_location("predict_tool", os.path.join(ROOT, "tools", "predict.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_parse_points():
    tool = _tool()
    assert tool.parse_points("10,20,1; 30.5,4,0;") == ([[10.0, 20.0], [30.5, 4.0]], [1, 0])
    for bad in ("10,20", "10,20,2", "a,20,1", ";"):
        with pytest.raises(argparse.ArgumentTypeError, match="--points"):
            tool.parse_points(bad)


def test_writes_overlays_and_prints_instances(tmp_path, capsys):
    tool = _tool()
    image = tmp_path / "scene.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(image)
    cfg = os.path.join(ROOT, "configs", "builtin", "mask_rcnn_R18_shapes.yaml")
    # Random weights: any number of instances; a strict threshold makes the prompt find none.
    common = ["--config-file", cfg, "--input", str(image), "--output", str(tmp_path / "out")]
    opts = ["--opts", "MODEL.WEIGHTS", "", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "1.0"]
    assert tool.main(common + opts) == 0
    assert (tmp_path / "out" / "scene.png").is_file()
    assert f"{image}: 64x64: 0 instances" in capsys.readouterr().out
    os.remove(tmp_path / "out" / "scene.png")
    assert tool.main(common + ["--points", "5,5,1"] + opts) == 0
    assert "no instance contains all positive points" in capsys.readouterr().out
    assert Image.open(tmp_path / "out" / "scene.png").size == (64, 64)


def test_points_select_among_stitched_instances(tmp_path, capsys):
    """--points answers as select_instances does on DefaultPredictor's own dense instances."""
    from detectron2.engine import DefaultPredictor

    from seg_d2.engine.trainer import setup_cfg
    from seg_d2.prompting import select_instances

    tool = _tool()
    image = tmp_path / "scene.png"
    pixels = np.random.default_rng(1).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(image)
    cfg = os.path.join(ROOT, "configs", "builtin", "mask_rcnn_R18_shapes.yaml")
    opts = ["MODEL.WEIGHTS", "", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.05"]
    instances = DefaultPredictor(setup_cfg(cfg, opts))(pixels[:, :, ::-1])["instances"]
    ys, xs = np.nonzero(instances.pred_masks[0].numpy())
    point = [[xs[len(xs) // 2] + 0.5, ys[len(ys) // 2] + 0.5]]
    expected = select_instances(instances, point, [1], max_candidates=3)
    assert tool.main(["--config-file", cfg, "--input", str(image), "--output", str(tmp_path / "out"),
                      "--score-thresh", "0.05", "--points", f"{point[0][0]},{point[0][1]},1", "--opts", *opts]) == 0
    printed = [line.strip() for line in capsys.readouterr().out.splitlines() if "prompt candidate" in line]
    assert printed == [f"prompt candidate #{r + 1}: score={s:.3f} area={int(m.sum())}"
                       for r, (m, s) in enumerate(expected)]
