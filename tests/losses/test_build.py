"""build_loss from the config: defaults, weighted combinations, validation, and mask-head parity
with Detectron2's mask_rcnn_loss."""
import numpy as np
import pytest
import seg_d2
import torch
from detectron2.config import get_cfg
from detectron2.modeling.roi_heads.mask_head import mask_rcnn_loss
from detectron2.structures import BitMasks, Boxes, Instances, PolygonMasks
from detectron2.utils.events import EventStorage
from torch.nn import functional as F

from seg_d2.losses import BCELoss, DiceLoss, build_loss, select_class_channel

MASK_KEY, SEM_KEY = "MODEL.ROI_MASK_HEAD.LOSS", "MODEL.SEM_SEG_HEAD.LOSS"


@pytest.fixture
def cfg():
    return seg_d2.add_seg_d2_config(get_cfg())


def test_default_semantic_loss_is_detectron2s_cross_entropy(cfg):
    logits, labels = torch.randn(2, 5, 6, 6), torch.randint(0, 5, (2, 6, 6))
    labels[1, :3] = 255
    loss = build_loss(cfg.MODEL.SEM_SEG_HEAD.LOSS, "multiclass", ignore_index=cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE)
    expected = F.cross_entropy(logits, labels, reduction="mean", ignore_index=255)
    assert torch.allclose(loss(logits, labels), expected, atol=1e-6)


def test_combined_loss_is_the_weighted_sum_of_its_parts(cfg):
    cfg.merge_from_list(
        [f"{MASK_KEY}.TERMS", "[['BCELoss', 1.0], ['DiceLoss', 0.5]]", f"{MASK_KEY}.WEIGHT", "2.0",
         f"{MASK_KEY}.DICE.SMOOTH", "0.0"]
    )
    loss = build_loss(cfg.MODEL.ROI_MASK_HEAD.LOSS, "binary", cfg_key=MASK_KEY)
    logits, target = torch.randn(4, 7, 7), torch.rand(4, 7, 7).round()
    expected = 2.0 * (BCELoss("binary")(logits, target) + 0.5 * DiceLoss("binary", smooth=0.0)(logits, target))
    assert torch.allclose(loss(logits, target), expected)
    terms = loss.terms(logits, target)
    assert set(terms) == {"BCELoss", "DiceLoss"}
    assert torch.allclose(sum(terms.values()), expected)


def test_config_parameters_reach_the_loss(cfg):
    cfg.merge_from_list([f"{SEM_KEY}.TERMS", "[['FocalLoss', 1.0]]", f"{SEM_KEY}.FOCAL.GAMMA", "0.5",
                         f"{SEM_KEY}.FOCAL.ALPHA", "None"])
    (focal,) = build_loss(cfg.MODEL.SEM_SEG_HEAD.LOSS, "multiclass").losses
    assert (focal.gamma, focal.alpha) == (0.5, None)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("TERMS", "[['DiceLos', 1.0]]", r"MODEL.SEM_SEG_HEAD.LOSS.TERMS: unknown loss 'DiceLos'.*DiceLoss.*LovaszLoss"),
        ("TERMS", "[['DiceLoss']]", r"MODEL.SEM_SEG_HEAD.LOSS.TERMS: each term must be a \(loss name, weight\)"),
        ("TERMS", "[['DiceLoss', 1.0], ['DiceLoss', 2.0]]", r"LOSS.TERMS: each loss may appear once"),
        ("TERMS", "[['DiceLoss', -1.0]]", r"LOSS.TERMS: term weight=-1.0"),
        ("WEIGHT", "-2.0", r"MODEL.SEM_SEG_HEAD.LOSS.WEIGHT: weight=-2.0 is invalid; allowed: a number in \[0.0"),
        ("FOCAL.ALPHA", "1.5", r"MODEL.SEM_SEG_HEAD.LOSS.FOCAL.ALPHA: alpha=1.5 is invalid; allowed: .*\[0.0, 1.0\]"),
        ("FOCAL.GAMMA", "-1.0", r"LOSS.FOCAL.GAMMA: gamma=-1.0 .*\[0.0, inf\]"),
        ("TVERSKY.BETA", "2.0", r"LOSS.TVERSKY.BETA: beta=2.0 .*\[0.0, 1.0\]"),
        ("LOVASZ.CLASSES", "'some'", r"LOSS.LOVASZ.CLASSES: classes='some' .*'present', 'all'"),
        ("CE.LABEL_SMOOTHING", "1.5", r"LOSS.CE.LABEL_SMOOTHING"),
    ],
)
def test_bad_config_fails_at_build_naming_the_key(cfg, key, value, message):
    cfg.merge_from_list([f"{SEM_KEY}.{key}", value])
    if key.split(".")[0] in ("FOCAL", "TVERSKY", "LOVASZ"):
        name = {"FOCAL": "FocalLoss", "TVERSKY": "TverskyLoss", "LOVASZ": "LovaszLoss"}[key.split(".")[0]]
        cfg.MODEL.SEM_SEG_HEAD.LOSS.TERMS = ((name, 1.0),)
    with pytest.raises(ValueError, match=message):
        build_loss(cfg.MODEL.SEM_SEG_HEAD.LOSS, "multiclass", cfg_key=SEM_KEY)


def test_unknown_mode_fails_naming_the_allowed_modes(cfg):
    with pytest.raises(ValueError, match="MODEL.ROI_MASK_HEAD.LOSS: unknown loss mode 'softmax'.*binary, multiclass, multilabel"):
        build_loss(cfg.MODEL.ROI_MASK_HEAD.LOSS, "softmax", cfg_key=MASK_KEY)


def test_class_weights_must_match_the_channels(cfg):
    cfg.MODEL.SEM_SEG_HEAD.LOSS.CE.CLASS_WEIGHTS = (1.0, 2.0)
    loss = build_loss(cfg.MODEL.SEM_SEG_HEAD.LOSS, "multiclass")
    with pytest.raises(ValueError, match="class_weights has 2 entries but the logits have 3 channels"):
        loss(torch.randn(1, 3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))


# ---- mask head ------------------------------------------------------------------------------------


def square_polygon(x0, y0, x1, y1):
    return [np.array([x0, y0, x1, y0, x1, y1, x0, y1], dtype=np.float64)]


def make_instances():
    """Two images of ROIs with hand-made boxes, classes and masks (bitmasks, then polygons)."""
    g = torch.Generator().manual_seed(0)
    first = Instances((20, 24))
    first.proposal_boxes = Boxes(torch.tensor([[0.0, 0.0, 12.0, 10.0], [4.0, 3.0, 23.0, 19.0], [2.0, 2.0, 9.0, 16.0]]))
    first.gt_classes = torch.tensor([2, 0, 1])
    first.gt_masks = BitMasks(torch.rand(3, 20, 24, generator=g) > 0.6)
    second = Instances((16, 16))
    second.proposal_boxes = Boxes(torch.tensor([[1.0, 1.0, 15.0, 15.0], [3.0, 0.0, 9.0, 7.0]]))
    second.gt_classes = torch.tensor([1, 3])
    second.gt_masks = PolygonMasks([square_polygon(3, 4, 11, 12), square_polygon(5.5, 1, 8, 6)])
    return [first, second]


def gt_masks_like_detectron2(instances, side):
    return torch.cat([i.gt_masks.crop_and_resize(i.proposal_boxes.tensor, side) for i in instances]).float()


@pytest.mark.parametrize("channels", [4, 1], ids=["class-specific", "class-agnostic"])
def test_default_mask_loss_equals_mask_rcnn_loss(cfg, channels):
    instances, side = make_instances(), 14
    logits = torch.randn(5, channels, side, side, generator=torch.Generator().manual_seed(1))
    with EventStorage():
        expected = mask_rcnn_loss(logits, instances)
    gt_classes = torch.cat([i.gt_classes for i in instances])
    loss = build_loss(cfg.MODEL.ROI_MASK_HEAD.LOSS, "binary", cfg_key=MASK_KEY)
    value = loss(select_class_channel(logits, gt_classes), gt_masks_like_detectron2(instances, side))
    assert abs(value.item() - expected.item()) < 1e-6


def test_select_class_channel_takes_each_rois_own_class():
    logits = torch.arange(3 * 4 * 2 * 2, dtype=torch.float32).view(3, 4, 2, 2)
    picked = select_class_channel(logits, torch.tensor([3, 0, 2]))
    assert torch.equal(picked, torch.stack([logits[0, 3], logits[1, 0], logits[2, 2]]))
    # a region loss on the selected channel sees only that channel (mmdet#10494)
    other = logits.clone()
    other[0, :3] = -100.0
    assert torch.equal(select_class_channel(other, torch.tensor([3, 0, 2]))[0], picked[0])
    with pytest.raises(ValueError, match="one class per ROI"):
        select_class_channel(logits, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"\(R, C, M, M\)"):
        select_class_channel(logits[0], torch.tensor([1]))
