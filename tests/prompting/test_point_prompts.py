import numpy as np
import pytest
import torch

import seg_d2  # noqa: F401  (before detectron2)
from detectron2.structures import Instances

from seg_d2.prompting import NoMatchingInstance, predict_from_points

torch.set_num_threads(1)
H, W = 40, 60


def _rect(x0, y0, x1, y1):
    m = torch.zeros(H, W, dtype=torch.bool)
    m[y0:y1, x0:x1] = True
    return m


# A: left object; B: big region containing A (e.g. a cluster); C: right object; D: near-duplicate of C.
MASKS = {"A": _rect(5, 5, 20, 20), "B": _rect(0, 0, 30, 35), "C": _rect(40, 10, 55, 30), "D": _rect(40, 10, 55, 29)}
SCORES = {"A": 0.6, "B": 0.9, "C": 0.8, "D": 0.7}


class FakePredictor:
    """Returns hand-made instances, like DefaultPredictor, and records the image it got."""

    def __init__(self, names="ABCD"):
        self.names = names
        self.calls = []

    def __call__(self, image):
        self.calls.append(image.shape)
        inst = Instances((H, W))
        inst.pred_masks = torch.stack([MASKS[n] for n in self.names]) if self.names else torch.zeros(0, H, W, dtype=bool)
        inst.scores = torch.tensor([SCORES[n] for n in self.names])
        inst.pred_classes = torch.zeros(len(self.names), dtype=torch.int64)
        return {"instances": inst}


class FakeModel(torch.nn.Module):
    """The call contract of a Detectron2 model in eval mode."""

    def forward(self, batched_inputs):
        assert batched_inputs[0]["image"].shape == (3, H, W) and batched_inputs[0]["height"] == H
        return [FakePredictor()(batched_inputs[0]["image"].numpy().transpose(1, 2, 0))]


IMAGE = np.zeros((H, W, 3), np.uint8)


def _which(results):
    names = []
    for mask, score in results:
        names.append(next(n for n in MASKS if torch.equal(torch.from_numpy(mask), MASKS[n]) and SCORES[n] == pytest.approx(score)))
    return names


def test_positive_point_in_nested_instances_best_first():
    results = predict_from_points(FakePredictor(), IMAGE, [[10, 10]], [1])
    assert _which(results) == ["B", "A"]  # both contain (10, 10); B scores higher
    for mask, _ in results:
        assert mask[10, 10] and mask.dtype == bool and mask.shape == (H, W)


def test_negative_point_excludes_instances():
    # (25, 25) is in B but not in A: the negative click there rules out the cluster.
    results = predict_from_points(FakePredictor(), IMAGE, np.array([[10.5, 10.5], [25, 25]]), np.array([1, 0]))
    assert _which(results) == ["A"]
    assert results[0][0][10, 10] and not results[0][0][25, 25]


def test_near_duplicates_are_skipped_and_max_candidates():
    results = predict_from_points(FakePredictor(), IMAGE, [[45, 15]], [1])
    assert _which(results) == ["C"]  # D overlaps C with IoU 0.95
    assert _which(predict_from_points(FakePredictor(), IMAGE, [[10, 10]], [1], max_candidates=1)) == ["B"]
    kept = predict_from_points(FakePredictor(), IMAGE, [[45, 15]], [1], duplicate_iou=1.0)
    assert _which(kept) == ["C", "D"]


def test_positives_on_two_objects_give_their_union():
    (mask, score), = predict_from_points(FakePredictor(), IMAGE, [[10, 10], [45, 15], [25, 25]], [1, 1, 0])
    # (10, 10): best clean instance is A (B holds the negative point); (45, 15): C.
    assert np.array_equal(mask, (MASKS["A"] | MASKS["C"]).numpy()) and score == pytest.approx(0.6)


@pytest.mark.parametrize("points, labels", [([[58, 38]], [1]), ([[10, 10], [45, 15]], [1, 1])])
def test_no_matching_instance(points, labels):
    kwargs = {"union_fallback": False} if len(points) == 2 else {}
    with pytest.raises(NoMatchingInstance, match="no instance contains all positive points while excluding"):
        predict_from_points(FakePredictor(), IMAGE, points, labels, **kwargs)


def test_no_instances_at_all():
    with pytest.raises(NoMatchingInstance, match="0 instances predicted"):
        predict_from_points(FakePredictor(names=""), IMAGE, [[10, 10]], [1])


def test_accepts_a_detectron2_model():
    assert _which(predict_from_points(FakeModel().eval(), IMAGE, [[10, 10]], [1])) == ["B", "A"]


@pytest.mark.parametrize(
    "points, labels, match",
    [
        ([10, 10], [1], r"shape \(N, 2\)"),
        ([[10, 10]], [1, 0], r"point_labels must have shape \(1,\)"),
        ([[10, 10]], [2], "1 \\(positive\\) or 0"),
        ([[10, 10]], [0], "at least one positive"),
        ([[60, 10]], [1], "outside the 60x40"),
    ],
)
def test_bad_prompts(points, labels, match):
    with pytest.raises(ValueError, match=match):
        predict_from_points(FakePredictor(), IMAGE, points, labels)


def test_model_without_instances():
    with pytest.raises(ValueError, match="no 'instances'"):
        predict_from_points(lambda image: {"sem_seg": torch.zeros(2, H, W)}, IMAGE, [[1, 1]], [1])
