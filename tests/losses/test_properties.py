"""Properties every loss must have in every mode: gradients, ignore regions, empty targets, shapes, AMP."""
import pytest
import seg_d2  # noqa: F401  (before detectron2)
import torch

from seg_d2.losses import MODES, SEG_LOSS_REGISTRY, DiceLoss

LOSS_CLASSES = [cls for _, cls in sorted(SEG_LOSS_REGISTRY)]
CASES = [(cls, mode) for cls in LOSS_CLASSES for mode in MODES]
IDS = [f"{cls.__name__}-{mode}" for cls, mode in CASES]
IGNORE = 255


def make_input(mode, n=2, c=3, h=3, w=4, dtype=torch.float64, seed=0):
    """Random logits and a target with ignored pixels (row 0 of image 0), in ``mode``'s conventions."""
    g = torch.Generator().manual_seed(seed)
    if mode == "binary":
        logits = torch.randn(n, h, w, generator=g, dtype=dtype)
        target = torch.randint(0, 2, (n, h, w), generator=g).to(dtype)
    elif mode == "multiclass":
        logits = torch.randn(n, c, h, w, generator=g, dtype=dtype)
        target = torch.randint(0, c, (n, h, w), generator=g)
    else:
        logits = torch.randn(n, c, h, w, generator=g, dtype=dtype)
        target = torch.randint(0, 2, (n, c, h, w), generator=g).to(dtype)
    target[0, ..., 0, :] = IGNORE
    return logits, target


@pytest.mark.parametrize("cls, mode", CASES, ids=IDS)
def test_gradcheck(cls, mode):
    logits, target = make_input(mode)
    loss = cls(mode=mode, ignore_index=IGNORE)
    assert torch.autograd.gradcheck(lambda x: loss(x, target), (logits.requires_grad_(),))


@pytest.mark.parametrize("cls, mode", CASES, ids=IDS)
def test_ignored_pixels_contribute_nothing(cls, mode):
    logits, target = make_input(mode)
    loss = cls(mode=mode, ignore_index=IGNORE)
    logits.requires_grad_()
    value = loss(logits, target)
    (grad,) = torch.autograd.grad(value, logits)
    assert grad[0, ..., 0, :].abs().max() == 0
    assert grad.abs().max() > 0

    ignored = target == IGNORE
    changed = logits.detach().clone()
    changed[0, ..., 0, :] += 5.0
    assert torch.allclose(loss(changed, target), value)
    # the same pixels ignored through a zero weight instead of the ignore index
    weight = torch.ones(target.shape[0], *target.shape[-2:], dtype=logits.dtype)
    weight[0, 0, :] = 0
    filled = target.masked_fill(ignored, 0)
    assert torch.allclose(cls(mode=mode)(logits, filled, weight), value)


@pytest.mark.parametrize("cls, mode", CASES, ids=IDS)
def test_empty_target_is_finite_with_finite_gradient(cls, mode):
    logits, target = make_input(mode)
    empty = torch.zeros_like(target)  # multiclass: everything background (class 0)
    logits.requires_grad_()
    value = cls(mode=mode)(logits, empty)
    (grad,) = torch.autograd.grad(value, logits)
    assert torch.isfinite(value) and torch.isfinite(grad).all()
    assert grad.abs().max() > 0  # it still teaches to predict "empty"


@pytest.mark.parametrize("cls, mode", CASES, ids=IDS)
def test_all_ignored_or_no_roi_gives_zero(cls, mode):
    logits, target = make_input(mode)
    logits.requires_grad_()
    value = cls(mode=mode, ignore_index=IGNORE)(logits, torch.full_like(target, IGNORE))
    assert value == 0 and torch.isfinite(torch.autograd.grad(value, logits)[0]).all()
    none = cls(mode=mode)(logits[:0], target[:0])
    assert none == 0 and none.requires_grad


def test_dice_on_empty_target_by_hand():
    logits = torch.tensor([[0.0, torch.log(torch.tensor(3.0))]])  # p = 0.5, 0.75
    assert torch.isclose(DiceLoss("binary")(logits, torch.zeros(1, 2)), torch.tensor(1 - 1 / 2.25))


@pytest.mark.parametrize("cls, mode", CASES, ids=IDS)
def test_trailing_shapes_and_binary_channel(cls, mode):
    logits, target = make_input(mode, dtype=torch.float32)
    loss = cls(mode=mode, ignore_index=IGNORE)
    value = loss(logits, target)
    assert torch.allclose(loss(logits.flatten(-2), target.flatten(-2)), value)
    if mode == "binary":
        assert torch.allclose(loss(logits.unsqueeze(1), target), value)
        assert torch.allclose(loss(logits.unsqueeze(1), target.unsqueeze(1)), value)


@pytest.mark.parametrize("mode", MODES)
def test_bad_shapes_raise(mode):
    logits, target = make_input(mode, dtype=torch.float32)
    with pytest.raises(ValueError, match=f"{mode} mode"):
        DiceLoss(mode)(logits, target[:, ..., :2])


def test_multiclass_target_must_be_integer():
    logits, target = make_input("multiclass", dtype=torch.float32)
    with pytest.raises(ValueError, match="integer"):
        DiceLoss("multiclass")(logits, target.float())


@pytest.mark.parametrize("cls, mode", CASES, ids=IDS)
def test_autocast_computes_in_float32(cls, mode):
    logits, target = make_input(mode, dtype=torch.float32)
    loss = cls(mode=mode, ignore_index=IGNORE)
    half = logits.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss(half, target)
    assert value.dtype == torch.float32
    assert torch.allclose(value, loss(half.float(), target))
