"""SegD2PanopticFPN and its panoptic fusion: fusion rules on hand-built tensors, then the model end to end."""
import os

import numpy as np
import pytest
import torch

import seg_d2
from detectron2.config import get_cfg
from detectron2.data import build_detection_train_loader
from detectron2.modeling import build_model
from detectron2.modeling.meta_arch.panoptic_fpn import combine_semantic_and_instance_outputs
from detectron2.structures import Instances
from detectron2.utils.events import EventStorage

from seg_d2.modeling.meta_arch.panoptic_fusion import fuse_panoptic

torch.set_num_threads(1)
CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "configs")
H = W = 20
LOOSE = {"overlap_thresh": 1.0, "stuff_area_limit": 0, "score_thresh": 0.0}


def instances(boxes, scores, classes=None):
    """Rectangular instance masks (y0, x0, y1, x1) on an H×W image."""
    masks = torch.zeros(len(boxes), H, W, dtype=torch.bool)
    for mask, (y0, x0, y1, x1) in zip(masks, boxes):
        mask[y0:y1, x0:x1] = True
    out = Instances((H, W))
    out.pred_masks = masks
    out.scores = torch.tensor(scores, dtype=torch.float32)
    out.pred_classes = torch.tensor(classes if classes is not None else [0] * len(boxes))
    return out


def check_consistent(panoptic, segments):
    """Ids unique, every nonzero pixel in one listed segment, each segment's area is its pixel count."""
    ids = [s["id"] for s in segments]
    assert len(set(ids)) == len(ids) and 0 not in ids
    assert set(panoptic.unique().tolist()) - {0} == set(ids)
    for s in segments:
        assert int((panoptic == s["id"]).sum()) == s["area"] > 0


# ------------------------------------------------------------------------------------------------ fusion
@pytest.mark.parametrize("seed", range(5))
def test_fusion_equals_detectron2_reference_on_random_inputs(seed):
    g = torch.Generator().manual_seed(seed)
    n = 12
    inst = Instances((H, W))
    inst.pred_masks = torch.rand(n, H, W, generator=g) < 0.3 * torch.rand(n, 1, 1, generator=g)
    inst.scores = torch.randperm(100, generator=g)[:n].float() / 100  # distinct: no tie-breaking question
    inst.pred_classes = torch.randint(0, 3, (n,), generator=g)
    semantic = torch.randint(0, 4, (H, W), generator=g)
    args = (0.3, 40, 0.4)
    expected, expected_info = combine_semantic_and_instance_outputs(inst, semantic, *args)
    panoptic, info = fuse_panoptic(inst, semantic, overlap_thresh=args[0], stuff_area_limit=args[1],
                                   score_thresh=args[2])
    assert torch.equal(panoptic, expected)
    keys = ("id", "isthing", "category_id", "instance_id")
    assert [{k: s.get(k) for k in keys} for s in info] == [{k: s.get(k) for k in keys} for s in expected_info]
    assert sum(s["isthing"] for s in info) > 0 and sum(not s["isthing"] for s in info) > 0
    check_consistent(panoptic, info)


def test_no_pixel_assigned_twice_and_instances_keep_only_free_pixels():
    inst = instances([(0, 0, 10, 10), (5, 5, 15, 15), (8, 0, 20, 8)], [0.9, 0.8, 0.7], [0, 1, 2])
    semantic = torch.full((H, W), 2)
    panoptic, info = fuse_panoptic(inst, semantic, **LOOSE)
    check_consistent(panoptic, info)
    things = [s for s in info if s["isthing"]]
    assert [s["instance_id"] for s in things] == [0, 1, 2]
    assert [s["area"] for s in things] == [100, 100 - 25, 96 - 16 - 15]  # each loses what higher scores took
    for s in things:  # a thing's pixels lie inside its own mask
        assert inst.pred_masks[s["instance_id"]][panoptic == s["id"]].all()
    assert info[-1] == {"id": 4, "isthing": False, "category_id": 2, "area": H * W - sum(s["area"] for s in things)}


def test_score_threshold_keeps_equal_and_drops_below():
    inst = instances([(0, 0, 4, 4), (0, 10, 6, 16), (10, 10, 14, 14)], [0.5, 0.6, 0.49])
    panoptic, info = fuse_panoptic(inst, torch.zeros(H, W, dtype=torch.long), **{**LOOSE, "score_thresh": 0.5})
    assert [s["instance_id"] for s in info] == [1, 0]  # by decreasing score; 0.49 is dropped
    assert not panoptic[10:14, 10:14].any()


@pytest.mark.parametrize("thresh, kept", [(0.5, True), (0.49, False)])
def test_overlap_threshold(thresh, kept):
    # the second instance (10x10) has half its pixels under the first: overlap / area = 0.5
    inst = instances([(0, 0, 10, 10), (0, 5, 10, 15)], [0.9, 0.8])
    panoptic, info = fuse_panoptic(inst, torch.zeros(H, W, dtype=torch.long), **{**LOOSE, "overlap_thresh": thresh})
    assert len(info) == 1 + kept
    assert int((panoptic > 0).sum()) == 100 + 50 * kept
    check_consistent(panoptic, info)


@pytest.mark.parametrize("limit_2, kept_2", [(15, True), (16, False)])
def test_stuff_area_limit_per_class_counts_only_unassigned_pixels(limit_2, kept_2):
    semantic = torch.zeros(H, W, dtype=torch.long)
    semantic[0:2, 0:10] = 1  # 20 px
    semantic[5:7, 0:10] = 2  # 20 px, of which the instance takes 5
    semantic[10:12, 0:10] = 3  # 20 px
    inst = instances([(5, 0, 6, 5)], [0.9])
    limits = [0, 20, limit_2, 21]  # one per label; label 0 unused
    panoptic, info = fuse_panoptic(inst, semantic, **{**LOOSE, "stuff_area_limit": limits})
    stuff = {s["category_id"]: s["area"] for s in info if not s["isthing"]}
    assert stuff == ({1: 20, 2: 15} if kept_2 else {1: 20})  # area >= limit; 3 misses its limit by one
    assert not panoptic[10:12, 0:10].any()
    check_consistent(panoptic, info)


def test_semantic_things_class_is_ignored():
    semantic = torch.zeros(H, W, dtype=torch.long)  # all "things", no instance: nothing to assign
    panoptic, info = fuse_panoptic(instances([], []), semantic, **LOOSE)
    assert info == [] and not panoptic.any()
    semantic[:, :5] = 1
    panoptic, info = fuse_panoptic(instances([], []), semantic, **LOOSE)
    assert info == [{"id": 1, "isthing": False, "category_id": 1, "area": 5 * H}]
    assert torch.equal(panoptic, (semantic == 1).int())


# ------------------------------------------------------------------------------------------------ model
SMALL = ["SOLVER.IMS_PER_BATCH", 2, "SOLVER.BASE_LR", 0.01, "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 64,
         "MODEL.RPN.POST_NMS_TOPK_TRAIN", 100, "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0,
         "MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH", 0.0, "MODEL.PANOPTIC_FPN.COMBINE.STUFF_AREA_LIMIT", 1]
VARIANTS = ["unet_head", "deeplabv3plus_scoring"]


def make_cfg(variant, opts=()):
    cfg = get_cfg()
    seg_d2.add_seg_d2_config(cfg)
    cfg.merge_from_file(os.path.join(CONFIGS, "builtin", f"panoptic_seg_d2_R18_{variant}.yaml"))
    cfg.merge_from_list([*SMALL, *opts])
    return cfg


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_trains_checkpoints_and_predicts_panoptic(variant, tmp_path, detector):
    cfg = make_cfg(variant)
    torch.manual_seed(0)
    model = build_model(cfg)
    assert type(model).__name__ == "SegD2PanopticFPN"
    losses, totals = detector.train_on_one_batch(model, cfg, iters=6)
    assert np.isfinite(totals).all() and totals[-1] < totals[0], totals
    assert "loss_sem_seg" in losses and ("loss_maskiou" in losses) == ("scoring" in variant)

    predictor, image, expected, reloaded = detector.reload_and_predict(model, cfg, tmp_path)
    assert torch.equal(expected["sem_seg"], reloaded["sem_seg"])
    assert torch.equal(expected["panoptic_seg"][0], reloaded["panoptic_seg"][0])

    out = predictor(image)  # BGR H×W×3 array
    panoptic, info = out["panoptic_seg"]
    assert panoptic.shape == (96, 112) and out["sem_seg"].shape == (4, 96, 112)
    assert len(info) > 0
    check_consistent(panoptic, info)
    instances_out = out["instances"]
    for s in info:
        if s["isthing"]:  # a thing's pixels are its (possibly rescored) instance's, within its mask
            assert s["score"] == pytest.approx(float(instances_out.scores[s["instance_id"]]))
            assert instances_out.pred_masks[s["instance_id"]][panoptic == s["id"]].all()
        else:
            assert 1 <= s["category_id"] <= 3


def test_instance_loss_weight_scales_detector_losses_only():
    cfg = make_cfg("unet_head")
    torch.manual_seed(0)
    batch = next(iter(build_detection_train_loader(cfg)))
    results = []
    for weight in (1.0, 0.25):
        cfg.MODEL.SEG_D2_PANOPTIC.INSTANCE_LOSS_WEIGHT = weight
        torch.manual_seed(0)
        model = build_model(cfg)
        with EventStorage():
            torch.manual_seed(1)  # same proposal / ROI sampling
            results.append({k: v.item() for k, v in model(batch).items()})
    plain, scaled = results
    for key in plain:
        factor = 1.0 if key == "loss_sem_seg" else 0.25
        assert scaled[key] == pytest.approx(plain[key] * factor, rel=1e-4), key


@pytest.mark.parametrize("opts, message", [
    (["MODEL.PANOPTIC_FPN.COMBINE.OVERLAP_THRESH", 1.5], "COMBINE.OVERLAP_THRESH"),
    (["MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH", -0.1], "INSTANCES_CONFIDENCE_THRESH"),
    (["MODEL.PANOPTIC_FPN.COMBINE.STUFF_AREA_LIMIT", -1], "COMBINE.STUFF_AREA_LIMIT"),
    (["MODEL.SEG_D2_PANOPTIC.STUFF_AREA_LIMITS", (64, 64)], "one limit per stuff class"),
    (["MODEL.SEG_D2_PANOPTIC.STUFF_AREA_LIMITS", (64, -1, 64)], "STUFF_AREA_LIMITS must be finite"),
    (["MODEL.PANOPTIC_FPN.INSTANCE_LOSS_WEIGHT", 0.5], "SEG_D2_PANOPTIC.INSTANCE_LOSS_WEIGHT"),
])
def test_bad_config_fails_at_build_time(opts, message):
    with pytest.raises(ValueError, match=message):
        build_model(make_cfg("unet_head", opts))
