import importlib.util
import json
import os

import numpy as np
import pycocotools.mask as mask_util
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


@pytest.mark.parametrize("flag, text, parsed", [
    ("--points", "10,20,1; 30.5,4,0;", ([[10.0, 20.0], [30.5, 4.0]], [1, 0])),
    ("--boxes", "1,2,30,40;5,5,9,9", [[1.0, 2.0, 30.0, 40.0], [5.0, 5.0, 9.0, 9.0]]),
])
def test_prompt_flags_parse(flag, text, parsed):
    args = _tool().parse_args(["--config-file", "c.yaml", "--input", "a.png", "--output", "o", flag, text])
    assert getattr(args, flag[2:]) == parsed


@pytest.mark.parametrize("flag, bad", [("--points", "10,20"), ("--points", "10,20,2"), ("--points", "a,20,1"),
                                       ("--points", ";"), ("--boxes", "1,2,3"), ("--boxes", ";")])
def test_bad_prompt_flags_exit_2_naming_the_flag(flag, bad, capsys):
    with pytest.raises(SystemExit) as e:
        _tool().parse_args(["--config-file", "c.yaml", "--input", "a.png", "--output", "o", flag, bad])
    assert e.value.code == 2 and f"{flag}: " in capsys.readouterr().err


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
    assert "prompt 1: no instance contains all positive points" in capsys.readouterr().out
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
    printed = [line.strip() for line in capsys.readouterr().out.splitlines() if "prompt 1 candidate" in line]
    assert printed == [f"prompt 1 candidate #{r + 1}: score={s:.3f} area={int(m.sum())}"
                       for r, (m, s) in enumerate(expected)]
    written = json.loads((tmp_path / "out" / "prompt_masks.json").read_text())
    assert [(r["prompt"], r["rank"], round(r["score"], 6)) for r in written] == \
        [(1, r + 1, round(s, 6)) for r, (_, s) in enumerate(expected)]
    for record, (mask, _) in zip(written, expected):
        np.testing.assert_array_equal(mask_util.decode(record["segmentation"]), mask)


def test_points_and_boxes_answered_by_sam_as_sam_predictor(tmp_path, capsys, scene, tiny_sam_checkpoint, tiny_sam):
    """With MODEL.SAM.CHECKPOINT, --points and each of --boxes are one prompt each, answered exactly as
    segment_anything.SamPredictor answers them (multimask, best first), written to prompt_masks.json."""
    segment_anything = pytest.importorskip("segment_anything")
    model_type, checkpoint = tiny_sam_checkpoint
    image = tmp_path / "scene.png"
    Image.fromarray(scene[:, :, ::-1]).save(image)  # scene is BGR
    cfg = os.path.join(ROOT, "configs", "builtin", "mask_rcnn_R18_shapes.yaml")
    assert _tool().main(["--config-file", cfg, "--input", str(image), "--output", str(tmp_path / "out"),
                         "--points", "12,18,1;50,10,0", "--boxes", "4,6,30,34;30,15,62,46",
                         "--opts", "MODEL.WEIGHTS", "", "MODEL.SAM.TYPE", model_type, "MODEL.SAM.CHECKPOINT", checkpoint]) == 0
    reference = segment_anything.SamPredictor(tiny_sam)
    reference.set_image(scene, image_format="BGR")
    prompts = [dict(point_coords=np.array([[12.0, 18.0], [50.0, 10.0]]), point_labels=np.array([1, 0])),
               dict(box=np.array([4.0, 6, 30, 34])), dict(box=np.array([30.0, 15, 62, 46]))]
    written = json.loads((tmp_path / "out" / "prompt_masks.json").read_text())
    for number, prompt in enumerate(prompts, 1):
        masks, scores, _ = reference.predict(**prompt, multimask_output=True)
        order = np.argsort(-scores, kind="stable")
        records = [r for r in written if r["prompt"] == number]
        assert [r["rank"] for r in records] == [1, 2, 3]
        np.testing.assert_allclose([r["score"] for r in records], scores[order], rtol=1e-6)
        for record, k in zip(records, order):
            np.testing.assert_array_equal(mask_util.decode(record["segmentation"]).astype(bool), masks[k])
    out = capsys.readouterr().out
    assert "prompt 3 candidate #3" in out
    assert Image.open(tmp_path / "out" / "scene.png").size == (64, 48)
