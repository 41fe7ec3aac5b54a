"""The prompt API without SAM: prompts select among a seg_d2 model's instances (today's behaviour), one model run
per image, from Detectron2 outputs or from seg_d2's sliding-window Prediction."""
import os

import numpy as np
import pytest
import torch

import seg_d2  # noqa: F401  (before detectron2)
from detectron2.structures import Boxes, Instances

from seg_d2.engine import setup_cfg
from seg_d2.inference import CroppedInstances, Prediction
from seg_d2.prompting import ModelPrompter, NoMatchingInstance, build_prompter, select_instances

torch.set_num_threads(1)
H, W = 40, 60
ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def _rect(x0, y0, x1, y1):
    m = torch.zeros(H, W, dtype=torch.bool)
    m[y0:y1, x0:x1] = True
    return m


# A inside B (a cluster); C right; D a smaller box inside C's.
RECTS = {"A": (5, 5, 20, 20), "B": (0, 0, 30, 35), "C": (40, 10, 55, 30), "D": (42, 12, 50, 22)}
SCORES = {"A": 0.6, "B": 0.9, "C": 0.8, "D": 0.7}


def _instances():
    inst = Instances((H, W))
    inst.pred_masks = torch.stack([_rect(*RECTS[n]) for n in RECTS])
    inst.pred_boxes = Boxes(torch.tensor([RECTS[n] for n in RECTS], dtype=torch.float32))
    inst.scores = torch.tensor([SCORES[n] for n in RECTS])
    inst.pred_classes = torch.zeros(len(RECTS), dtype=torch.int64)
    return inst


class CountingPredictor:
    def __init__(self, as_prediction=False):
        self.calls, self.as_prediction = 0, as_prediction

    def __call__(self, image):
        self.calls += 1
        if self.as_prediction:  # what tools/predict.py's SlidingWindowPredictor returns
            return Prediction(H, W, instances=CroppedInstances.from_instances(_instances()))
        return {"instances": _instances()}


IMAGE = np.zeros((H, W, 3), np.uint8)


def _names(answer):
    return [next(n for n in RECTS if np.array_equal(m, _rect(*RECTS[n]).numpy())) for m in answer.masks]


@pytest.mark.parametrize("as_prediction", [False, True], ids=["detectron2_outputs", "sliding_window_prediction"])
def test_points_select_as_select_instances(as_prediction):
    prompter = ModelPrompter(CountingPredictor(as_prediction))
    answer = prompter.predict(IMAGE, point_coords=[[10, 10]], point_labels=[1])
    expected = select_instances(_instances(), [[10, 10]], [1])
    assert _names(answer) == ["B", "A"] and answer.scores.tolist() == pytest.approx([s for _, s in expected])
    assert answer.low_res_logits is None and answer.masks.dtype == bool
    assert _names(prompter.predict(IMAGE, point_coords=[[10, 10]], point_labels=[1], multimask_output=False)) == ["B"]


@pytest.mark.parametrize("as_prediction", [False, True], ids=["detectron2_outputs", "sliding_window_prediction"])
def test_box_selects_by_box_iou(as_prediction):
    prompter = ModelPrompter(CountingPredictor(as_prediction), min_box_iou=0.3)
    # box IoUs with [41, 11, 52, 24]: D 0.56, C 0.48 -> D first although C scores higher
    assert _names(prompter.predict(IMAGE, box=[41, 11, 52, 24])) == ["D", "C"]
    # a positive point in C outside D leaves C
    assert _names(prompter.predict(IMAGE, box=[41, 11, 52, 24], point_coords=[[53, 27]], point_labels=[1])) == ["C"]
    # a negative one in D rules both out
    with pytest.raises(NoMatchingInstance, match="and answers the points"):
        prompter.predict(IMAGE, box=[41, 11, 52, 24], point_coords=[[45, 15]], point_labels=[0])
    assert _names(prompter.predict(IMAGE, box=[4, 4, 21, 21], multimask_output=False)) == ["A"]
    with pytest.raises(NoMatchingInstance, match=r"no instance's box overlaps the prompt box \[0.0, 36.0, 5.0, 39.0\]"):
        prompter.predict(IMAGE, box=[0, 36, 5, 39])


def test_the_model_runs_once_per_image():
    predictor = CountingPredictor()
    prompter = ModelPrompter(predictor)
    for point in ([10, 10], [45, 15], [2, 30]):
        prompter.predict(IMAGE, point_coords=[point], point_labels=[1])
    prompter.predict(IMAGE, box=[41, 11, 52, 24])
    assert predictor.calls == 1
    other = IMAGE.copy()
    other[3, 3] = 1
    prompter.predict(other, point_coords=[[10, 10]], point_labels=[1])
    assert predictor.calls == 2


def test_mask_prompts_and_bad_outputs_say_what_is_needed():
    prompter = ModelPrompter(CountingPredictor())
    with pytest.raises(ValueError, match=r"mask prompt \(mask_input\) needs SAM: set MODEL.SAM.CHECKPOINT .*seg_d2\[sam\]"):
        prompter.predict(IMAGE, mask_input=np.zeros((1, 256, 256)))
    semantic = ModelPrompter(lambda image: {"sem_seg": torch.zeros(2, H, W)})
    with pytest.raises(ValueError, match="no 'instances'.*or SAM"):
        semantic.predict(IMAGE, point_coords=[[1, 1]], point_labels=[1])
    with pytest.raises(ValueError, match="an empty prompt"):
        prompter.predict(IMAGE)


def test_build_prompter_without_sam_uses_the_configs_model():
    cfg = setup_cfg(os.path.join(ROOT, "configs", "builtin", "mask_rcnn_R18_shapes.yaml"),
                    ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"])
    prompter = build_prompter(cfg)
    assert isinstance(prompter, ModelPrompter)
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    instances = prompter.predictor.predictor(image)["instances"]  # the DefaultPredictor it built
    ys, xs = np.nonzero(instances.pred_masks[0].numpy())
    point = [[xs[0] + 0.5, ys[0] + 0.5]]
    answer = prompter.predict(image, point_coords=point, point_labels=[1])
    assert [s for _, s in select_instances(instances, point, [1])] == pytest.approx(answer.scores.tolist())
