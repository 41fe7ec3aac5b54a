"""Mask R-CNN variants: the loss-selectable mask head, Mask Scoring R-CNN's MaskIoU head and ROI heads."""
import os

import numpy as np
import pytest
import torch

import seg_d2
import seg_d2.data  # noqa: F401  (registers the built-in datasets)
import seg_d2.modeling  # noqa: F401  (registers the heads)
from detectron2.config import get_cfg
from detectron2.data import build_detection_train_loader
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model
from detectron2.modeling.roi_heads.mask_head import MaskRCNNConvUpsampleHead, mask_rcnn_loss
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

from seg_d2.modeling.roi_heads import MaskIoUHead, MaskRCNNConvUpsampleLossHead, mask_iou_targets, mask_targets

torch.set_num_threads(1)
CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "configs")
M = 28  # mask side


def make_cfg(config=None, opts=()):
    cfg = get_cfg()
    seg_d2.add_seg_d2_config(cfg)
    if config:
        cfg.merge_from_file(os.path.join(CONFIGS, config))
    cfg.merge_from_list(list(opts))
    return cfg


def fake_rois(num_classes=3, image_size=96):
    """One image: GT masks and foreground proposals whose boxes are integer-aligned with sides 28 and 56,
    so that a 28×28 crop is exact (side 28) or a 2×2 block mean (side 56) and a brute force can repeat it."""
    rng = np.random.default_rng(0)
    boxes = torch.tensor([[10, 5, 38, 33], [20, 30, 76, 86], [0, 0, 28, 28], [40, 40, 96, 96]], dtype=torch.float32)
    masks = torch.from_numpy(rng.random((len(boxes), image_size, image_size)) < 0.4)
    masks[0, 10:30, 12:25] = True  # some structure, so the IoUs are not all alike
    x = Instances((image_size, image_size))
    x.proposal_boxes = Boxes(boxes)
    x.gt_classes = torch.tensor([0, 2, 1, 2]) % num_classes
    x.gt_masks = BitMasks(masks)
    return [x]


def brute_force_iou(logits, masks, boxes):
    """IoU of (logits > 0) with each GT mask cropped to its box and block-averaged to M×M (>= 0.5)."""
    ious = []
    for logit, mask, (x0, y0, x1, y1) in zip(logits.numpy(), masks.numpy(), boxes.int().tolist()):
        crop = mask[y0:y1, x0:x1].astype(float)
        k = crop.shape[0] // M
        gt = crop.reshape(M, k, M, k).mean(axis=(1, 3)) >= 0.5
        pred = logit > 0
        union = (pred | gt).sum()
        ious.append((pred & gt).sum() / union if union else 0.0)
    return torch.tensor(ious, dtype=torch.float32)


# ------------------------------------------------------------------------------------------------ mask head
@pytest.mark.parametrize("agnostic", [False, True])
def test_default_loss_head_trains_like_detectron2(agnostic):
    cfg = make_cfg(opts=["MODEL.ROI_HEADS.NUM_CLASSES", 3, "MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK", agnostic])
    shape = ShapeSpec(channels=8, height=14, width=14)
    torch.manual_seed(0)
    head = MaskRCNNConvUpsampleLossHead(cfg, shape)
    stock = MaskRCNNConvUpsampleHead(cfg, shape)
    stock.load_state_dict(head.state_dict())  # same layers, same checkpoint keys
    instances = fake_rois()
    logits = torch.randn(4, 1 if agnostic else 3, M, M)
    with EventStorage():
        expected = mask_rcnn_loss(logits, instances)
        torch.testing.assert_close(head.losses(logits, instances)["loss_mask"], expected)
        features = torch.randn(4, 8, 14, 14)
        torch.testing.assert_close(head(features, instances)["loss_mask"], stock(features, instances)["loss_mask"])


def test_loss_head_supervises_the_roi_class_channel_with_the_configured_loss():
    cfg = make_cfg(opts=["MODEL.ROI_HEADS.NUM_CLASSES", 3, "MODEL.ROI_MASK_HEAD.LOSS.TERMS", [["DiceLoss", 1.0]]])
    head = MaskRCNNConvUpsampleLossHead(cfg, ShapeSpec(channels=8, height=14, width=14))
    instances = fake_rois()
    gt_masks = mask_targets(instances, M)[1]
    logits = torch.randn(4, 3, M, M)
    loss = head.losses(logits, instances)["loss_mask"]
    other = logits.clone()
    other[torch.arange(4), (instances[0].gt_classes + 1) % 3] += 5  # another class's channel: no effect
    torch.testing.assert_close(head.losses(other, instances)["loss_mask"], loss)
    # Dice on the GT channel: 100% right logits give a (near) zero loss, where BCE would not be 0 at 1.
    perfect = logits.clone()
    perfect[torch.arange(4), instances[0].gt_classes] = (gt_masks * 2 - 1) * 50
    assert head.losses(perfect, instances)["loss_mask"] < 0.05 < loss


# ------------------------------------------------------------------------------------------------ MaskIoU
def test_mask_iou_target_equals_brute_force():
    instances = fake_rois()
    logits = torch.randn(4, M, M)
    logits[0] = (mask_targets(instances, M)[1][0] * 2 - 1)  # a perfect mask: IoU 1
    target = mask_iou_targets(logits, mask_targets(instances, M)[1])
    expected = brute_force_iou(logits, instances[0].gt_masks.tensor, instances[0].proposal_boxes.tensor)
    torch.testing.assert_close(target, expected)
    assert target[0] == 1 and (target[1:] > 0).all() and (target[1:] < 1).all()


def constant_iou_head(cfg, value):
    """A MaskIoU head whose prediction is ``value`` for every ROI and class."""
    head = MaskIoUHead(cfg, ShapeSpec(channels=8, height=14, width=14))
    torch.nn.init.zeros_(head.predictor.weight)
    torch.nn.init.constant_(head.predictor.bias, value)
    return head


@pytest.mark.parametrize("agnostic", [False, True])
def test_mask_iou_loss_is_l2_to_the_target_of_the_roi_class_mask(agnostic):
    cfg = make_cfg(opts=["MODEL.ROI_HEADS.NUM_CLASSES", 3, "MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK", agnostic,
                         "MODEL.ROI_MASKIOU_HEAD.LOSS_WEIGHT", 2.0, "MODEL.ROI_MASKIOU_HEAD.CONV_DIM", 8,
                         "MODEL.ROI_MASKIOU_HEAD.FC_DIM", 16])
    head = constant_iou_head(cfg, 0.3)
    instances = fake_rois()
    logits = torch.randn(4, 1 if agnostic else 3, M, M)
    channel = logits[:, 0] if agnostic else logits[torch.arange(4), instances[0].gt_classes]
    target = mask_iou_targets(channel, mask_targets(instances, M)[1])
    loss = head(torch.randn(4, 8, 14, 14), logits, instances)["loss_maskiou"]
    torch.testing.assert_close(loss, 2.0 * ((0.3 - target) ** 2).mean())


def test_mask_iou_inference_rescores_by_the_clamped_predicted_iou():
    cfg = make_cfg(opts=["MODEL.ROI_HEADS.NUM_CLASSES", 3, "MODEL.ROI_MASKIOU_HEAD.CONV_DIM", 8,
                         "MODEL.ROI_MASKIOU_HEAD.FC_DIM", 16])
    for value, factor in ((0.5, 0.5), (1.7, 1.0), (-0.2, 0.0)):
        head = constant_iou_head(cfg, value).eval()
        detections = Instances((64, 64), scores=torch.tensor([0.9, 0.4]), pred_classes=torch.tensor([2, 0]))
        out = head(torch.randn(2, 8, 14, 14), torch.randn(2, 3, M, M), [detections])[0]
        torch.testing.assert_close(out.scores, torch.tensor([0.9, 0.4]) * factor)
        torch.testing.assert_close(out.pred_mask_ious, torch.full((2,), factor))


# ------------------------------------------------------------------------------------------------ config errors
@pytest.mark.parametrize(
    "opts, message",
    [
        (["MODEL.ROI_MASK_HEAD.POOLER_TYPE", ""], "no ROI features to share"),
        (["MODEL.MASK_ON", False], "needs MODEL.MASK_ON=True"),
        (["MODEL.ROI_MASK_HEAD.NAME", "MaskRCNNConvUpsampleLossHead",
          "MODEL.ROI_MASK_HEAD.LOSS.TERMS", [["NoSuchLoss", 1.0]]], "MODEL.ROI_MASK_HEAD.LOSS.TERMS: unknown loss"),
    ],
)
def test_wrong_config_fails_at_build_time(opts, message):
    cfg = make_cfg("builtin/mask_rcnn_R18_shapes_scoring.yaml", opts)
    with pytest.raises(ValueError, match=message):
        build_model(cfg)


# ------------------------------------------------------------------------------------------------ end to end
VARIANTS = ["dice", "bce_dice", "focal", "scoring", "cascade_scoring"]
SMALL = ["SOLVER.IMS_PER_BATCH", 2, "SOLVER.BASE_LR", 0.01, "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0,
         "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 64, "MODEL.RPN.POST_NMS_TOPK_TRAIN", 100]


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_trains_checkpoints_and_predicts(variant, tmp_path, detector):
    cfg = make_cfg(f"builtin/mask_rcnn_R18_shapes_{variant}.yaml", SMALL)
    torch.manual_seed(0)
    model = build_model(cfg)
    losses, totals = detector.train_on_one_batch(model, cfg)
    assert totals[-1] < totals[0], totals
    assert ("loss_maskiou" in losses) == ("scoring" in variant)

    predictor, image, expected, reloaded = detector.reload_and_predict(model, cfg, tmp_path)
    expected, reloaded = expected["instances"], reloaded["instances"]
    assert len(expected) > 0
    for field in ("pred_boxes", "scores", "pred_classes", "pred_masks"):
        a, b = expected.get(field), reloaded.get(field)
        assert torch.equal(a.tensor if field == "pred_boxes" else a, b.tensor if field == "pred_boxes" else b), field

    out = predictor(image)["instances"]  # DefaultPredictor on an image array (BGR, H×W×3)
    assert out.pred_masks.shape[1:] == (96, 112) and len(out) > 0
    if "scoring" in variant:
        ious = out.pred_mask_ious
        assert ((ious >= 0) & (ious <= 1)).all() and (out.scores <= ious + 1e-6).all()


def test_mask_scoring_under_autocast_and_maskiou_loss_does_not_train_the_mask_predictor():
    cfg = make_cfg("builtin/mask_rcnn_R18_shapes_scoring.yaml", SMALL)
    torch.manual_seed(0)
    model = build_model(cfg)
    batch = next(iter(build_detection_train_loader(cfg)))
    with EventStorage(), torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model(batch)
    assert all(torch.isfinite(v) for v in losses.values()), losses
    losses["loss_maskiou"].backward()
    assert model.roi_heads.mask_iou_head.predictor.weight.grad.abs().sum() > 0
    assert model.roi_heads.mask_head.predictor.weight.grad is None  # the mask prediction is detached
