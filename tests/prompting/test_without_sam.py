"""Without the optional segment-anything package: seg_d2 imports and works, and every SAM feature says how to
enable it. The package is hidden (sys.modules entry None: `import segment_anything` raises ImportError)."""
import os
import subprocess
import sys
import textwrap

import pytest

import seg_d2  # noqa: F401  (before detectron2)
from seg_d2.prompting import SamPrompter, SamUnavailableError, load_sam

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
HINT = r"pip install 'seg_d2\[sam\]'"


@pytest.fixture
def no_segment_anything(monkeypatch):
    monkeypatch.setitem(sys.modules, "segment_anything", None)


def test_sam_features_say_how_to_install(no_segment_anything, tmp_path):
    with pytest.raises(SamUnavailableError, match=f"segment-anything package, which is not installed: {HINT}"):
        load_sam(str(tmp_path / "sam_vit_h_4b8939.pth"))
    with pytest.raises(ImportError, match=HINT):  # SamUnavailableError is an ImportError
        SamPrompter(object())


def test_seg_d2_imports_and_prompts_without_the_package():
    """A fresh interpreter: import seg_d2 and train_net's modules, prompt a model, then ask for SAM."""
    script = textwrap.dedent(f"""
        import sys
        sys.modules["segment_anything"] = None
        import numpy as np
        import seg_d2
        import seg_d2.modeling, seg_d2.evaluation, seg_d2.engine, seg_d2.prompting.annotation
        from detectron2.modeling import build_model
        from seg_d2.engine import setup_cfg
        from seg_d2.prompting import ModelPrompter, SamUnavailableError, build_prompter
        config = {os.path.join(ROOT, "configs", "builtin", "mask_rcnn_R18_shapes.yaml")!r}
        cfg = setup_cfg(config, ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"])
        prompter = build_prompter(cfg)
        assert isinstance(prompter, ModelPrompter)
        image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
        box = prompter.predictor(image)["instances"].pred_boxes.tensor[0].tolist()
        answer = prompter.predict(image, box=box, multimask_output=False)
        assert answer.masks.shape == (1, 64, 64)
        for opts in (["MODEL.SAM.CHECKPOINT", "sam.pth"], ["MODEL.META_ARCHITECTURE", "SamDetector"]):
            try:
                (build_prompter if opts[0] == "MODEL.SAM.CHECKPOINT" else build_model)(setup_cfg(config, opts))
            except SamUnavailableError as e:
                print("SAM:", e)
        assert "segment_anything" not in sys.modules or sys.modules["segment_anything"] is None
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert run.returncode == 0, run.stderr[-3000:]
    lines = [line for line in run.stdout.splitlines() if line.startswith("SAM:")]
    assert len(lines) == 2 and all("pip install 'seg_d2[sam]'" in line for line in lines)
