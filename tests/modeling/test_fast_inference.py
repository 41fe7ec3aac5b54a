"""Norms folded into convs (seg_d2.modeling.fast_inference) against Detectron2's own Conv2d + norm.

Tolerance: float32 rounding. A conv output equals stock to 1e-5 relative to its largest value; a whole
Mask R-CNN R50-FPN predicts the same boxes (1e-3 px), scores (1e-5) and masks (0 pixels differ here;
a mask pixel whose probability is within rounding of 0.5 may flip, none did)."""
import copy

import numpy as np
import pytest
import torch

import seg_d2
from detectron2 import model_zoo
from detectron2.config import get_cfg
from detectron2.engine import DefaultPredictor, DefaultTrainer
from detectron2.layers import Conv2d, FrozenBatchNorm2d

from seg_d2.modeling.fast_inference import FoldedNormConv2d, fold_norms, unfold_norms

torch.set_num_threads(1)


def randomize_norm(norm, seed):
    """Statistics and affine terms away from the identity FrozenBatchNorm2d / BatchNorm start with."""
    g = torch.Generator().manual_seed(seed)
    n = norm.num_features
    with torch.no_grad():
        norm.weight.copy_(torch.rand(n, generator=g) + 0.5)
        norm.bias.copy_(torch.randn(n, generator=g))
        norm.running_mean.copy_(torch.randn(n, generator=g))
        norm.running_var.copy_(torch.rand(n, generator=g) + 0.1)


def conv_with(norm, bias=False, activation=None, seed=0):
    torch.manual_seed(seed)
    conv = Conv2d(6, 5, kernel_size=3, padding=1, bias=bias, norm=norm, activation=activation)
    randomize_norm(conv.norm, seed)
    return conv


def assert_close(actual, expected):
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5 * expected.abs().max().item())


NORMS = {"FrozenBN": lambda: FrozenBatchNorm2d(5), "BN": lambda: torch.nn.BatchNorm2d(5)}


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("bias", [False, True])
def test_folded_conv_equals_conv_then_norm(norm, bias):
    stock = conv_with(NORMS[norm](), bias=bias, activation=torch.relu).eval()
    folded = copy.deepcopy(stock)
    assert fold_norms(folded) == 1 and type(folded) is FoldedNormConv2d
    x = torch.randn(2, 6, 9, 11)
    with torch.no_grad():
        assert_close(folded(x), stock(x))


def test_training_gradients_reach_the_conv_weights_as_stock():
    stock = conv_with(FrozenBatchNorm2d(5), bias=True)
    folded = copy.deepcopy(stock)
    fold_norms(folded)
    x = torch.randn(2, 6, 9, 11, requires_grad=True)
    grad_out = torch.randn(2, 5, 9, 11)
    for model in (stock, folded):
        x.grad = None
        model.output = model(x)
        model.output.backward(grad_out)
        model.input_grad = x.grad.clone()
    assert_close(folded.output, stock.output)
    assert_close(folded.weight.grad, stock.weight.grad)
    assert_close(folded.bias.grad, stock.bias.grad)
    assert_close(folded.input_grad, stock.input_grad)


def test_batchnorm_in_train_mode_is_not_folded():
    """Batch statistics, and running statistics updated exactly as stock."""
    stock = conv_with(torch.nn.BatchNorm2d(5)).train()
    folded = copy.deepcopy(stock)
    fold_norms(folded)
    x = torch.randn(4, 6, 9, 11)
    torch.testing.assert_close(folded(x), stock(x), rtol=0, atol=0)
    torch.testing.assert_close(folded.norm.running_var, stock.norm.running_var, rtol=0, atol=0)


def test_cache_follows_loaded_weights_and_buffers():
    """The folded weights are cached at inference: a load_state_dict (in-place copies) or a change of a
    running statistic must be seen, and the state_dict keys are those of the stock module."""
    folded = conv_with(FrozenBatchNorm2d(5)).eval()
    fold_norms(folded)
    other = conv_with(FrozenBatchNorm2d(5), seed=1).eval()
    assert list(folded.state_dict()) == list(other.state_dict())
    x = torch.randn(1, 6, 9, 11)
    with torch.no_grad():
        folded(x)  # fills the cache
        folded.load_state_dict(other.state_dict())
        assert_close(folded(x), other(x))
        other.norm.running_mean.add_(3.0)
        folded.norm.running_mean.add_(3.0)
        assert_close(folded(x), other(x))


def test_unfold_gives_back_stock_modules():
    model = torch.nn.Sequential(conv_with(FrozenBatchNorm2d(5)), Conv2d(5, 5, 1, norm=torch.nn.GroupNorm(5, 5)))
    assert fold_norms(model) == 1  # GroupNorm depends on its input: not folded
    unfold_norms(model)
    assert [type(m) for m in model] == [Conv2d, Conv2d]


def mask_rcnn_cfg(fold):
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "INPUT.MIN_SIZE_TEST", 192,
                         "INPUT.MAX_SIZE_TEST", 256, "SEG_D2.FOLD_NORMS", fold])
    return cfg


def realistic_random_weights(model):
    """Random weights that still give 100 distinct detections: BatchNorm statistics of pretrained
    scale (else 50 random residual blocks blow activations up), box regressions off, class scores spread
    so several classes per box pass the 0.05 score threshold."""
    for i, norm in enumerate(m for m in model.modules() if isinstance(m, FrozenBatchNorm2d)):
        randomize_norm(norm, i)
        with torch.no_grad():
            norm.weight.mul_(0.5)
    with torch.no_grad():
        for layer in (model.proposal_generator.rpn_head.anchor_deltas, model.roi_heads.box_predictor.bbox_pred):
            layer.weight.zero_()
            layer.bias.zero_()
        model.roi_heads.box_predictor.cls_score.weight.mul_(300.0)


def test_default_predictor_folds_and_predicts_as_stock():
    torch.manual_seed(0)
    stock = DefaultPredictor(mask_rcnn_cfg(fold=False))
    torch.manual_seed(0)
    fast = DefaultPredictor(mask_rcnn_cfg(fold=True))
    assert not any(isinstance(m, FoldedNormConv2d) for m in stock.model.modules())
    assert sum(isinstance(m, FoldedNormConv2d) for m in fast.model.modules()) == 53  # every FrozenBN conv
    realistic_random_weights(stock.model)
    fast.model.load_state_dict(stock.model.state_dict())
    image = np.random.default_rng(0).integers(0, 255, (150, 200, 3), dtype=np.uint8)
    expected, actual = stock(image)["instances"], fast(image)["instances"]
    assert len(expected) == 100 and len(expected.pred_classes.unique()) > 5
    torch.testing.assert_close(actual.pred_boxes.tensor, expected.pred_boxes.tensor, rtol=0, atol=1e-3)
    torch.testing.assert_close(actual.scores, expected.scores, rtol=0, atol=1e-5)
    assert torch.equal(actual.pred_classes, expected.pred_classes)
    assert torch.equal(actual.pred_masks, expected.pred_masks)


def test_trainer_models_are_folded():
    model = DefaultTrainer.build_model(mask_rcnn_cfg(fold=True))
    assert sum(isinstance(m, FoldedNormConv2d) for m in model.modules()) == 53
