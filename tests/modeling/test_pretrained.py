"""Pretrained weights from files the tests write themselves: Detectron2 checkpoints (.pth, model-zoo .pkl)
into every model family, torchvision ResNet / MobileNetV2 and timm checkpoints into backbones, also as
MODEL.WEIGHTS of DefaultPredictor and seg_d2's Trainer; reports of missing, unused and mismatched keys."""
import os
import pickle

import pytest
import timm
import torch
import torchvision

import seg_d2
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.engine import DefaultPredictor
from detectron2.modeling import build_model

from seg_d2.engine import Trainer, setup_cfg
from seg_d2.modeling.backbone import MobileNetV2Backbone
from seg_d2.modeling.pretrained import WeightsMismatchError, load_weights, torchvision_resnet_name

REPO = os.path.join(os.path.dirname(__file__), "..", "..")
FAMILIES = ["semantic_fpn_R18", "semantic_unet", "segformer_b0", "mask_rcnn_R18_shapes_scoring",
            "panoptic_seg_d2_R18_unet_head"]


def _model(config, seed, *opts):
    cfg = get_cfg()
    seg_d2.add_seg_d2_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, config))
    cfg.merge_from_list(list(opts))
    torch.manual_seed(seed)
    return build_model(cfg).eval()


def _assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa), [k for k in sa if not torch.equal(sa[k], sb[k])][:5]


@pytest.mark.parametrize("fmt", ["pth", "pkl"])
@pytest.mark.parametrize("family", FAMILIES)
def test_detectron2_checkpoint_loads_into_every_family(family, fmt, tmp_path):
    config = f"configs/builtin/{family}.yaml"
    source = _model(config, seed=0)
    if fmt == "pth":
        DetectionCheckpointer(source, save_dir=str(tmp_path)).save("model")
    else:  # model-zoo style: numpy arrays and the zoo's author tag
        state = {k: v.numpy() for k, v in source.state_dict().items()}
        with open(tmp_path / "model.pkl", "wb") as f:
            pickle.dump({"model": state, "__author__": "Detectron2 Model Zoo"}, f)
    target = _model(config, seed=1)
    report = load_weights(target, str(tmp_path / f"model.{fmt}"))
    assert report.missing == [] and report.unexpected == [] and report.mismatched == []
    assert len(report.loaded) == len(source.state_dict())
    _assert_same_state(source, target)


def test_report_names_missing_unused_and_mismatched(tmp_path):
    config = "configs/builtin/mask_rcnn_R18_shapes.yaml"
    state = _model(config, seed=0).state_dict()
    state.pop("roi_heads.mask_head.predictor.weight")
    state["extra.tensor"] = torch.zeros(2)
    torch.save({"model": state}, tmp_path / "partial.pth")
    target = _model(config, 1, "MODEL.ROI_HEADS.NUM_CLASSES", "5")  # other class count: head shapes differ
    report = load_weights(target, str(tmp_path / "partial.pth"))
    assert "roi_heads.mask_head.predictor.weight" in report.missing
    assert report.unexpected == ["extra.tensor"]
    assert "roi_heads.box_predictor.cls_score.weight" in report.mismatched
    assert "backbone.bottom_up.stem.conv1.weight" in report.loaded
    assert "missing from the file" in report.summary() and "partial.pth" in report.summary()


def _with_batchnorm_statistics(reference):
    """``reference`` in eval mode with non-trivial BatchNorm statistics, so that a wrongly mapped norm shows."""
    torch.manual_seed(0)
    with torch.no_grad():
        for m in reference.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return reference.eval()


@pytest.fixture
def torchvision_resnet18(tmp_path):
    """(a torchvision ResNet-18, the path of its state_dict)."""
    torch.manual_seed(0)
    reference = _with_batchnorm_statistics(torchvision.models.resnet18(weights=None))
    torch.save(reference.state_dict(), tmp_path / "resnet18.pth")
    return reference, str(tmp_path / "resnet18.pth")


def _torchvision_resnet_res5(reference, image):
    with torch.no_grad():
        x = reference.maxpool(reference.relu(reference.bn1(reference.conv1(image))))
        return reference.layer4(reference.layer3(reference.layer2(reference.layer1(x))))


def test_torchvision_resnet_checkpoint_gives_torchvision_features(torchvision_resnet18):
    reference, path = torchvision_resnet18
    model = _model("configs/builtin/semantic_fpn_R18.yaml", 1, "MODEL.RESNETS.NORM", "FrozenBN")
    report = load_weights(model, path)
    assert report.source.endswith("-> backbone.bottom_up")
    assert report.mismatched == [] and {k for k in report.missing if k.startswith("backbone.bottom_up.")} == set()
    assert {k.split(".")[0] for k in report.missing} == {"backbone", "sem_seg_head"}  # FPN and head: not in the file
    assert set(report.unexpected) == {"fc.weight", "fc.bias"} | {k for k in reference.state_dict() if "num_batches" in k}

    image = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        features = model.backbone.bottom_up(image)["res5"]
    torch.testing.assert_close(features, _torchvision_resnet_res5(reference, image), atol=1e-5, rtol=1e-5)


def _assert_holds_torchvision_resnet(bottom_up, reference):
    state = bottom_up.state_dict()
    loaded = {torchvision_resnet_name(k): v for k, v in reference.state_dict().items()
              if "num_batches" not in k and not k.startswith("fc.")}  # FrozenBN counts nothing; no classifier
    assert loaded.keys() <= state.keys()
    assert all(torch.equal(state[k], v) for k, v in loaded.items()), [k for k, v in loaded.items()
                                                                      if not torch.equal(state[k], v)][:5]


def test_model_weights_naming_a_torchvision_resnet_load_in_predictor_and_trainer(torchvision_resnet18, tmp_path):
    reference, path = torchvision_resnet18
    cfg = setup_cfg(os.path.join(REPO, "configs/builtin/semantic_fpn_R18.yaml"), [
        "MODEL.WEIGHTS", path, "MODEL.RESNETS.NORM", "FrozenBN", "SEG_D2.NUM_THREADS", "1",
        "OUTPUT_DIR", str(tmp_path / "out")])
    predictor = DefaultPredictor(cfg)
    _assert_holds_torchvision_resnet(predictor.model.backbone.bottom_up, reference)
    image = torch.rand(1, 3, 64, 96)
    with torch.no_grad():  # the predictor's model folds its norms into the convs: equal to float32 rounding
        features = predictor.model.backbone.bottom_up(image)["res5"]
    torch.testing.assert_close(features, _torchvision_resnet_res5(reference, image), atol=1e-5, rtol=1e-5)

    trainer = Trainer(cfg)  # seg_d2's checkpointer, also the one of tools/train_net.py --eval-only
    trainer.resume_or_load(resume=False)
    _assert_holds_torchvision_resnet(trainer.model.backbone.bottom_up, reference)


def test_model_weights_naming_a_torchvision_mobilenet_v2_load_in_predictor(tmp_path):
    torch.manual_seed(0)
    reference = _with_batchnorm_statistics(torchvision.models.mobilenet_v2(weights=None))
    torch.save(reference.state_dict(), tmp_path / "mobilenet_v2.pth")
    cfg = setup_cfg(os.path.join(REPO, "configs/timm/mask_rcnn_mobilenet_v2_fpn_shapes.yaml"), [
        "MODEL.WEIGHTS", str(tmp_path / "mobilenet_v2.pth"), "OUTPUT_DIR", str(tmp_path / "out")])
    bottom_up = DefaultPredictor(cfg).model.backbone.bottom_up
    state = bottom_up.state_dict()
    assert all(torch.equal(state[f"features.{k}"], v) for k, v in reference.features.state_dict().items())
    image = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(bottom_up(image)["res5"], reference.features(image), atol=1e-4, rtol=1e-4)


def test_model_weights_matching_nothing_is_an_error_naming_the_file(tmp_path):
    torch.save({"decoder.weight": torch.zeros(3)}, tmp_path / "other.pth")
    cfg = setup_cfg(os.path.join(REPO, "configs/builtin/semantic_unet.yaml"), [
        "MODEL.WEIGHTS", str(tmp_path / "other.pth"), "SEG_D2.NUM_THREADS", "1", "OUTPUT_DIR", str(tmp_path / "out")])
    message = rf"{tmp_path / 'other.pth'}: no tensor of the file fits the model"
    with pytest.raises(WeightsMismatchError, match=message):
        DefaultPredictor(cfg)
    with pytest.raises(WeightsMismatchError, match=message):
        Trainer(cfg).resume_or_load(resume=False)


def test_torchvision_names_renamed():
    assert torchvision_resnet_name("layer3.1.bn2.running_var") == "res4.1.conv2.norm.running_var"
    assert torchvision_resnet_name("layer1.0.downsample.1.weight") == "res2.0.shortcut.norm.weight"
    assert torchvision_resnet_name("bn1.bias") == "stem.conv1.norm.bias"
    assert torchvision_resnet_name("fc.weight") == "fc.weight"


def test_timm_checkpoint_into_a_timm_backbone_model(tmp_path):
    torch.manual_seed(0)
    reference = timm.create_model("resnet18d", pretrained=False)
    torch.save(reference.state_dict(), tmp_path / "resnet18d.pth")
    model = _model("configs/timm/panoptic_fpn_resnet18d_shapes.yaml", 1)
    report = load_weights(model, str(tmp_path / "resnet18d.pth"))
    assert report.source.endswith("-> backbone.bottom_up.body")
    assert not [k for k in report.missing if k.startswith("backbone.bottom_up.body.")]
    assert report.unexpected == ["fc.bias", "fc.weight"]
    body = model.backbone.bottom_up.body.state_dict()
    assert torch.equal(body["layer3.1.conv2.weight"], reference.state_dict()["layer3.1.conv2.weight"])


def test_torchvision_mobilenet_v2_checkpoint(tmp_path):
    torch.manual_seed(0)
    reference = torchvision.models.mobilenet_v2(weights=None).eval()
    torch.save(reference.state_dict(), tmp_path / "mobilenet_v2.pth")
    backbone = MobileNetV2Backbone(weights=str(tmp_path / "mobilenet_v2.pth")).eval()
    assert backbone.weights_report.missing == [] and backbone.weights_report.unexpected == [
        "classifier.1.bias", "classifier.1.weight"]
    image = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        features = backbone(image)
        expected = reference.features(image)
    assert [f.shape[1] for f in features.values()] == [24, 32, 96, 1280]
    assert [64 // f.shape[2] for f in features.values()] == [4, 8, 16, 32]
    assert torch.equal(features["res5"], expected)


def test_mobilenet_freeze_at():
    backbone = MobileNetV2Backbone(freeze_at=2)
    frozen = {int(n.split(".")[1]) for n, p in backbone.named_parameters() if not p.requires_grad}
    assert frozen == {0, 1, 2, 3}


def test_file_that_fits_nothing_is_an_error(tmp_path):
    torch.save({"decoder.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="other.pth"):
        load_weights(_model("configs/builtin/semantic_unet.yaml", 0), str(tmp_path / "other.pth"))
