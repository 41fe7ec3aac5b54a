"""timm backbones in Detectron2's registry: shapes and strides, weights from a file saved by
``timm.create_model`` (identical features), frozen stages, norms, no download, and a config per task that
trains."""
import os

import pytest
import timm
import torch
from torchvision.ops.misc import FrozenBatchNorm2d as TimmFrozenBN  # what timm freezes a BatchNorm2d into
from timm.layers import FrozenBatchNormAct2d

import seg_d2
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone, build_model

from seg_d2.modeling.backbone import TimmBackbone

REPO = os.path.join(os.path.dirname(__file__), "..", "..")

# (timm name, OUT_INDICES, expected strides): ConvNeXt, EfficientNet, ResNet-D and a ViT (all stride 16)
MODELS = [
    ("convnext_atto", (0, 1, 2, 3), [4, 8, 16, 32]),
    ("efficientnet_b0", (1, 2, 3, 4), [4, 8, 16, 32]),
    ("resnet18d", (1, 2, 3, 4), [4, 8, 16, 32]),
    ("test_vit", (1, 3, 5), [16, 16, 16]),
]


def _cfg(config="configs/builtin/semantic_fpn_R18.yaml", *opts):
    cfg = get_cfg()
    seg_d2.add_seg_d2_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, config))
    cfg.merge_from_list(list(opts))
    return cfg


@pytest.mark.parametrize("name,indices,strides", MODELS, ids=[m[0] for m in MODELS])
def test_features_equal_timm_model_loaded_from_its_checkpoint(name, indices, strides, tmp_path):
    torch.manual_seed(1)
    reference = timm.create_model(name, pretrained=False, **({"dynamic_img_size": True} if "vit" in name else {}))
    torch.save(reference.state_dict(), tmp_path / "timm.pth")  # full model, classifier included
    torch.manual_seed(2)  # another initialisation: features match only if the file was loaded
    backbone = TimmBackbone(name, indices, weights=str(tmp_path / "timm.pth")).eval()
    report = backbone.weights_report
    assert report.missing == [] and report.mismatched == [] and report.loaded
    assert all(k.startswith(("head", "fc.", "classifier", "conv_head", "bn2", "norm.", "fc_norm")) for k in report.unexpected)

    image = torch.rand(1, 3, 96, 128)
    reference.eval()
    with torch.no_grad():
        expected = reference.forward_intermediates(image, indices=list(indices), intermediates_only=True)
        features = backbone(image)
    shapes = backbone.output_shape()
    assert [shapes[n].stride for n in backbone._out_features] == strides
    for (feature_name, feature), want, stride in zip(features.items(), expected, strides):
        assert feature.shape == (1, shapes[feature_name].channels, 96 // stride, 128 // stride)
        assert torch.equal(feature, want), feature_name
    assert backbone.size_divisibility == max(strides)


def test_output_names_follow_detectron2():
    assert list(TimmBackbone("resnet18d").output_shape()) == ["res2", "res3", "res4", "res5"]
    assert list(TimmBackbone("test_vit", (1, 3, 5)).output_shape()) == ["stage1", "stage3", "stage5"]


def test_freeze_at_freezes_stem_and_first_stage_like_detectron2():
    backbone = TimmBackbone("resnet18d", freeze_at=2)
    body = backbone.body
    frozen = {n for n, p in body.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith(("conv1.", "bn1.", "layer1.")) for n in frozen)
    assert all(p.requires_grad for n, p in body.named_parameters() if n.startswith(("layer2.", "layer4.")))
    assert all(not p.requires_grad for n, p in body.named_parameters() if n.startswith(("conv1.", "layer1.")))
    assert isinstance(body.bn1, (TimmFrozenBN, FrozenBatchNormAct2d))
    assert isinstance(body.layer2[0].bn1, torch.nn.BatchNorm2d)


def test_freeze_at_enters_a_vit():
    backbone = TimmBackbone("test_vit", (1, 3, 5), freeze_at=2)  # patch embedding and blocks 0, 1
    trainable = {n for n, p in backbone.body.named_parameters() if p.requires_grad}
    assert not any(n.startswith(("model.patch_embed", "model.blocks.0.", "model.blocks.1.", "model.pos_embed",
                                 "model.cls_token")) for n in trainable)
    assert any(n.startswith("model.blocks.2.") for n in trainable)


def test_norm_choices():
    frozen = TimmBackbone("efficientnet_b0", norm="FrozenBN")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in frozen.modules())
    assert any(isinstance(m, FrozenBatchNormAct2d) for m in frozen.modules())  # BN + activation kept together
    synced = TimmBackbone("resnet18d", norm="SyncBN")
    assert not any(type(m) is torch.nn.BatchNorm2d for m in synced.modules())
    with pytest.raises(ValueError, match="MODEL.TIMM.NORM"):
        TimmBackbone("resnet18d", norm="GN")


def test_never_downloads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("timm tried to download weights")

    import huggingface_hub
    import timm.models._builder as builder

    monkeypatch.setattr(builder, "load_pretrained", refuse)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    cfg = _cfg("configs/timm/semantic_fpn_efficientnet_b0_shapes.yaml")
    assert build_backbone(cfg, ShapeSpec(channels=3)).output_shape()["p2"].stride == 4


def test_bad_weights_file_named(tmp_path):
    torch.save({"something.else": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="other.pth"):
        TimmBackbone("resnet18d", weights=str(tmp_path / "other.pth"))
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        TimmBackbone("resnet18d", weights=str(tmp_path / "missing.pth"))


@pytest.mark.parametrize("name,indices", [("test_vit", (1, 3, 5))], ids=["vit"])
def test_vit_backbone_trains_with_a_semantic_head(semseg, name, indices):
    cfg = _cfg("configs/builtin/semantic_fcn_R18.yaml", "MODEL.BACKBONE.NAME", "build_timm_backbone",
               "MODEL.TIMM.NAME", name, "MODEL.TIMM.OUT_INDICES", str(indices), "MODEL.BACKBONE.FREEZE_AT", "0",
               "MODEL.SEM_SEG_HEAD.IN_FEATURES", "['stage5']")
    model = semseg.model(cfg)
    losses = semseg.train(model, cfg, semseg.batch(cfg), iters=5)
    assert losses[-1] < losses[0], losses


TIMM_CONFIGS = ["mask_rcnn_convnext_atto_fpn_shapes", "panoptic_fpn_resnet18d_shapes"]


@pytest.mark.parametrize("config", TIMM_CONFIGS)
def test_detector_config_trains(detector, config):
    cfg = _cfg(f"configs/timm/{config}.yaml", "SOLVER.IMS_PER_BATCH", "2")
    torch.manual_seed(0)
    model = build_model(cfg)
    _, totals = detector.train_on_one_batch(model, cfg, iters=5)
    assert totals[-1] < totals[0], totals


def test_semantic_config_trains(semseg):
    cfg = _cfg("configs/timm/semantic_fpn_efficientnet_b0_shapes.yaml")
    model = semseg.model(cfg)
    losses = semseg.train(model, cfg, semseg.batch(cfg), iters=5)
    assert losses[-1] < losses[0], losses
