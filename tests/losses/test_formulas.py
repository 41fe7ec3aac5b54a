"""Each loss against hand-computed values or an independent formula on small tensors."""
import math

import pytest
import seg_d2  # noqa: F401  (before detectron2 / fvcore)
import torch
from fvcore.nn import sigmoid_focal_loss
from torch.nn import functional as F

from seg_d2.losses import (
    BCELoss,
    CrossEntropyLoss,
    DiceLoss,
    FocalLoss,
    FocalTverskyLoss,
    IoULoss,
    LovaszLoss,
    TverskyLoss,
)

LN3 = math.log(3.0)
# sigmoid probabilities 0.5, 0.75, 0.25 against target 1, 1, 0: TP = 1.25, FP = 0.25, FN = 0.75
HAND_LOGITS = torch.tensor([[0.0, LN3, -LN3]])
HAND_TARGET = torch.tensor([[1.0, 1.0, 0.0]])


def close(a, b, tol=1e-6):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64), atol=tol)


# ---- region losses, by hand ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "loss, expected",
    [
        (DiceLoss("binary", smooth=0.0), 1 - 2.5 / 3.5),
        (DiceLoss("binary", smooth=1.0), 1 - 3.5 / 4.5),
        (DiceLoss("binary", smooth=0.0, log_loss=True), -math.log(2.5 / 3.5)),
        (IoULoss("binary", smooth=0.0), 1 - 1.25 / 2.25),
        (TverskyLoss("binary", alpha=0.3, beta=0.7, smooth=0.0), 1 - 1.25 / (1.25 + 0.3 * 0.25 + 0.7 * 0.75)),
        (FocalTverskyLoss("binary", alpha=0.3, beta=0.7, gamma=0.75, smooth=0.0), (1 - 1.25 / 1.85) ** 0.75),
    ],
)
def test_region_losses_by_hand(loss, expected):
    assert close(loss(HAND_LOGITS, HAND_TARGET), expected)


def test_dice_and_iou_match_the_set_formulas_on_random_input():
    torch.manual_seed(0)
    logits, target = torch.randn(2, 3, 5, 5), torch.rand(2, 3, 5, 5).round()
    p = logits.sigmoid()
    inter, total = (p * target).sum((0, 2, 3)), (p + target).sum((0, 2, 3))
    dice = 1 - (2 * inter / total).mean()  # 2|A∩B| / (|A| + |B|)
    iou = 1 - (inter / (total - inter)).mean()  # |A∩B| / |A∪B|
    assert close(DiceLoss("multilabel", smooth=0.0)(logits, target), dice)
    assert close(IoULoss("multilabel", smooth=0.0)(logits, target), iou)
    # Tversky generalises both (Salehi 2017): α = β = 0.5 is Dice, α = β = 1 is IoU.
    assert close(TverskyLoss("multilabel", alpha=0.5, beta=0.5, smooth=0.0)(logits, target), dice)
    assert close(TverskyLoss("multilabel", alpha=1.0, beta=1.0, smooth=0.0)(logits, target), iou)


def test_multiclass_dice_uses_softmax_one_hot_and_averages_classes():
    torch.manual_seed(1)
    logits, labels = torch.randn(2, 4, 3, 3), torch.randint(0, 4, (2, 3, 3))
    p, t = logits.softmax(1), F.one_hot(labels, 4).permute(0, 3, 1, 2).float()
    per_class = [(2 * (p[:, c] * t[:, c]).sum() + 1) / ((p[:, c] + t[:, c]).sum() + 1) for c in range(4)]
    assert close(DiceLoss("multiclass")(logits, labels), 1 - torch.stack(per_class).mean())


def test_per_image_dice_averages_each_images_dice():
    torch.manual_seed(2)
    logits, target = torch.randn(3, 6, 6), torch.rand(3, 6, 6).round()
    single = [DiceLoss("binary")(logits[i : i + 1], target[i : i + 1]) for i in range(3)]
    per_image = DiceLoss("binary", per_image=True)(logits, target)
    assert close(per_image, torch.stack(single).mean())
    assert not close(per_image, DiceLoss("binary")(logits, target))  # global pools all pixels


# ---- pixel losses --------------------------------------------------------------------------------


def test_bce_by_hand():
    # -(log 0.5 + log 0.75 + log 0.75) / 3
    expected = -(math.log(0.5) + 2 * math.log(0.75)) / 3
    assert close(BCELoss("binary")(HAND_LOGITS, HAND_TARGET), expected)
    # pos_weight scales the foreground terms only
    expected = -(2 * math.log(0.5) + 2 * math.log(0.75) + math.log(0.75)) / 3
    assert close(BCELoss("binary", pos_weight=2.0)(HAND_LOGITS, HAND_TARGET), expected)


@pytest.mark.parametrize("class_weights, smoothing", [((), 0.0), ((1.0, 2.0, 0.5, 3.0), 0.0), ((), 0.2), ((1.0, 2.0, 0.5, 3.0), 0.1)])
def test_cross_entropy_matches_torch(class_weights, smoothing):
    torch.manual_seed(3)
    logits, labels = torch.randn(2, 4, 5, 5), torch.randint(0, 4, (2, 5, 5))
    labels[0, :2] = 255
    loss = CrossEntropyLoss("multiclass", ignore_index=255, class_weights=class_weights, label_smoothing=smoothing)
    weight = torch.tensor(class_weights) if class_weights else None
    expected = F.cross_entropy(logits, labels, weight=weight, ignore_index=255, label_smoothing=smoothing)
    assert close(loss(logits, labels), expected)


def test_sigmoid_cross_entropy_smoothing_and_class_weights_by_formula():
    torch.manual_seed(4)
    logits, target = torch.randn(2, 3, 4), torch.rand(2, 3, 4).round()
    smoothed = target * 0.8 + 0.1
    w = torch.tensor([1.0, 2.0, 3.0]).view(3, 1)
    expected = (w * -(smoothed * F.logsigmoid(logits) + (1 - smoothed) * F.logsigmoid(-logits))).mean()
    loss = CrossEntropyLoss("multilabel", class_weights=(1.0, 2.0, 3.0), label_smoothing=0.2)
    assert close(loss(logits, target), expected)


def test_focal_matches_fvcore_and_reduces_to_bce():
    torch.manual_seed(5)
    logits, target = torch.randn(2, 3, 4, 4), torch.rand(2, 3, 4, 4).round()
    for alpha, gamma in [(0.25, 2.0), (0.7, 1.5)]:
        expected = sigmoid_focal_loss(logits, target, alpha=alpha, gamma=gamma, reduction="mean")
        assert close(FocalLoss("multilabel", alpha=alpha, gamma=gamma)(logits, target), expected)
    plain = FocalLoss("multilabel", alpha=None, gamma=0.0)(logits, target)
    assert close(plain, F.binary_cross_entropy_with_logits(logits, target))


def test_softmax_focal_by_formula():
    torch.manual_seed(6)
    logits, labels = torch.randn(2, 3, 4), torch.randint(0, 3, (2, 4))
    p_t = logits.softmax(1).gather(1, labels.unsqueeze(1))
    expected = (-0.5 * (1 - p_t) ** 2 * p_t.log()).mean()
    assert close(FocalLoss("multiclass", alpha=0.5, gamma=2.0)(logits, labels), expected)
    assert close(FocalLoss("multiclass", alpha=None, gamma=0.0)(logits, labels), F.cross_entropy(logits, labels))


# ---- Lovász --------------------------------------------------------------------------------------


def jaccard_loss_of_set(mispredicted, gt):
    """Berman 2018's set function Δ_J(M) = |M| / |gt ∪ M|."""
    return len(mispredicted) / max(len(gt | mispredicted), 1)


def lovasz_by_definition(errors, gt):
    """f(m) = Σ_i m_(i) (Δ(top i) - Δ(top i-1)) with set arithmetic, one row of pixels."""
    order = sorted(range(len(errors)), key=lambda i: -errors[i])
    gt_set = {i for i, g in enumerate(gt) if g}
    total, prev, top = 0.0, 0.0, set()
    for i in order:
        top.add(i)
        cur = jaccard_loss_of_set(top, gt_set)
        total += max(errors[i], 0.0) * (cur - prev)
        prev = cur
    return total


def test_lovasz_hinge_at_an_indicator_is_the_jaccard_loss():
    # errors 1 - x·(2t-1) = [0, 1, 1, 0]: pixels 1 and 2 mispredicted, gt = {0, 1} -> Δ_J = 2/3
    loss = LovaszLoss("binary")(torch.tensor([[1.0, 0.0, 0.0, -1.0]]), torch.tensor([[1.0, 1.0, 0.0, 0.0]]))
    assert close(loss, 2 / 3)


def test_lovasz_hinge_and_softmax_match_the_definition():
    torch.manual_seed(7)
    logits, target = torch.randn(10), torch.rand(10).round()
    errors = (1 - logits * (2 * target - 1)).tolist()
    expected = lovasz_by_definition(errors, target.tolist())
    assert close(LovaszLoss("binary")(logits.view(1, 10), target.view(1, 10)), expected)

    logits, labels = torch.randn(1, 3, 12), torch.tensor([[0, 0, 1, 1, 1, 0, 0, 1, 1, 0, 0, 1]])
    probs = logits.softmax(1)[0]
    per_class = [
        lovasz_by_definition((labels[0] == c).float().sub(probs[c]).abs().tolist(), (labels[0] == c).tolist())
        for c in range(3)
    ]
    # class 2 is absent: "present" averages classes 0 and 1, "all" all three
    assert close(LovaszLoss("multiclass")(logits, labels), sum(per_class[:2]) / 2)
    assert close(LovaszLoss("multiclass", classes="all")(logits, labels), sum(per_class) / 3)


def test_lovasz_per_image_averages_images():
    torch.manual_seed(8)
    logits, target = torch.randn(3, 16), torch.rand(3, 16).round()
    single = [LovaszLoss("binary")(logits[i : i + 1], target[i : i + 1]) for i in range(3)]
    assert close(LovaszLoss("binary", per_image=True)(logits, target), torch.stack(single).mean())
