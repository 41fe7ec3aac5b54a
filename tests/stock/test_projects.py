"""Detectron2 v0.6's projects PointRend, DeepLab and Panoptic-DeepLab (shipped as detectron2.projects.* by
seg_d2's Detectron2 build) train and evaluate on the built-in data on a CPU, through their own train_net.py's
call sequence (conftest.py), with the configs in configs/projects/."""
import math

import numpy as np
import pytest
import torch

from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import ROI_MASK_HEAD_REGISTRY, SEM_SEG_HEADS_REGISTRY
from detectron2.projects import deeplab, point_rend
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage
from seg_d2.config_checks import check_config, unused_keys

PANOPTIC = {"panoptic_seg"}, {"bbox", "segm"}  # box and mask AP once instances are predicted (else {})
PROJECT_CONFIGS = [  # (project, config, always evaluated, also evaluated when there are predictions)
    ("PointRend", "pointrend_rcnn_R18_FPN_shapes.yaml", {"bbox", "segm"}, set()),
    ("PointRend", "pointrend_rcnn_R18_FPN_shapes_bce_dice.yaml", {"bbox", "segm"}, set()),
    ("PointRend", "pointrend_semantic_R18_FPN_shapes.yaml", {"sem_seg"}, set()),
    ("DeepLab", "deeplab_v3_plus_R50_shapes.yaml", {"sem_seg"}, set()),
    ("DeepLab", "deeplab_v3_plus_R50_shapes_ce_dice.yaml", {"sem_seg"}, set()),
    ("Panoptic-DeepLab", "panoptic_deeplab_R50_shapes.yaml", *PANOPTIC),
    ("Panoptic-DeepLab", "panoptic_deeplab_R50_shapes_ce_dice.yaml", *PANOPTIC),
]


@pytest.mark.parametrize("project, name, always, possible", PROJECT_CONFIGS, ids=[c[1] for c in PROJECT_CONFIGS])
def test_project_trains_and_evaluates_on_builtin_data(stock, config_path, project, name, always, possible):
    config = config_path("projects", project, name)
    opts = stock.small(config, max_iter=2, project=project)
    cfg, results, losses = stock.train_net(config, opts, project=project)
    assert len(losses) == 2 and all(math.isfinite(v) for step in losses for v in step.values())
    assert always <= set(results) <= always | possible
    check_config(cfg)
    assert unused_keys(cfg) == []


def _project_cfg(add_config, path, **head_names):
    cfg = get_cfg()
    add_config(cfg)
    cfg.merge_from_file(path)
    for key, name in head_names.items():
        cfg.MODEL[key].NAME = name
    return cfg


def _same_weights_same_randomness(stock_head, seg_d2_head, *inputs):
    """Both heads' training losses on ``inputs``, with equal weights and the same random draws."""
    seg_d2_head.load_state_dict(stock_head.state_dict())  # same layers, same keys: strict
    losses = []
    for head in (stock_head, seg_d2_head):
        head.train()
        torch.manual_seed(0)
        with EventStorage():  # Detectron2's mask loss logs its accuracy
            losses.append(head(*inputs))
    return losses


def _instances(rng, image_size=128, n=5, num_classes=3):
    x0, y0 = rng.integers(0, 64, (2, n))
    w, h = rng.integers(16, 60, (2, n))
    boxes = torch.tensor(np.stack([x0, y0, x0 + w, y0 + h], 1), dtype=torch.float32)
    masks = torch.zeros(n, image_size, image_size, dtype=torch.bool)
    for i, (a, b, c, d) in enumerate(boxes.long().tolist()):
        masks[i, b + 2 : d - 3, a + 1 : c - 2] = True  # not the whole box: masks and boxes differ
    instances = Instances((image_size, image_size))
    instances.proposal_boxes = Boxes(boxes + torch.tensor(rng.normal(0, 3, (n, 4)), dtype=torch.float32))
    instances.gt_classes = torch.tensor(rng.integers(0, num_classes, n))
    instances.gt_masks = BitMasks(masks)
    return instances


def test_pointrend_loss_head_with_the_default_bce_loss_equals_pointrend(config_path):
    """Reference: PointRend's own losses (mask_rcnn_loss on the coarse masks, roi_mask_point_loss on points)."""
    path = config_path("projects", "PointRend", "pointrend_rcnn_R18_FPN_shapes.yaml")
    shape = {"p2": ShapeSpec(channels=64, stride=4)}
    heads = [ROI_MASK_HEAD_REGISTRY.get(name)(_project_cfg(point_rend.add_pointrend_config, path, ROI_MASK_HEAD=name),
                                               shape) for name in ("PointRendMaskHead", "PointRendLossMaskHead")]
    rng = np.random.default_rng(0)
    features = {"p2": torch.randn(2, 64, 32, 32)}
    instances = [_instances(rng), _instances(rng)]
    stock, ours = _same_weights_same_randomness(*heads, features, instances)
    assert set(stock) == set(ours) == {"loss_mask", "loss_mask_point"}
    for key in stock:
        assert ours[key].item() == pytest.approx(stock[key].item(), rel=1e-5)


@pytest.mark.parametrize("stock_name, seg_d2_name", [("DeepLabV3PlusHead", "DeepLabV3PlusLossHead"),
                                                     ("DeepLabV3Head", "DeepLabV3LossHead")])
def test_deeplab_loss_heads_with_the_default_cross_entropy_equal_deeplab(config_path, stock_name, seg_d2_name):
    """Reference: the project's heads with LOSS_TYPE "cross_entropy" (mean over the non-ignored pixels)."""
    path = config_path("projects", "DeepLab", "deeplab_v3_plus_R50_shapes.yaml")
    shape = {"res2": ShapeSpec(channels=64, stride=4), "res5": ShapeSpec(channels=512, stride=16)}
    heads = []
    for name in (stock_name, seg_d2_name):
        cfg = _project_cfg(deeplab.add_deeplab_config, path, SEM_SEG_HEAD=name)
        cfg.MODEL.SEM_SEG_HEAD.LOSS_TYPE = "cross_entropy"
        if stock_name == "DeepLabV3Head":  # ASPP on res5 only
            cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES = ["res5"]
            cfg.MODEL.SEM_SEG_HEAD.COMMON_STRIDE = 16
        heads.append(SEM_SEG_HEADS_REGISTRY.get(name)(cfg, shape))
    features = {"res2": torch.randn(2, 64, 32, 32), "res5": torch.randn(2, 512, 8, 8)}
    targets = torch.randint(0, 6, (2, 128, 128))
    targets[:, :10] = 255  # ignored
    (_, stock), (_, ours) = _same_weights_same_randomness(*heads, features, targets)
    assert ours["loss_sem_seg"].item() == pytest.approx(stock["loss_sem_seg"].item(), rel=1e-5)
