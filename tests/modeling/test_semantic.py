"""Semantic models (stock SemSegFPNHead, UNetHead, DeepLabV3PlusASPPHead, UNetSegmentor) built from their
configs/builtin/semantic_*.yaml: training, checkpoints, DefaultPredictor, resolution, ignore label,
grayscale U-Net, build-time config errors."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

import seg_d2  # noqa: F401  (first: makes Detectron2 whole)
import seg_d2.data  # noqa: F401  (registers the built-in datasets)
import seg_d2.modeling  # noqa: F401
from detectron2.engine import DefaultPredictor
from detectron2.modeling import build_model

from seg_d2.engine import setup_cfg
from seg_d2.modeling.backbone import UNet
from seg_d2.modeling.sem_seg import UNetHead

torch.set_num_threads(1)
CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "builtin")
MODELS = ["fpn_R18", "unet_head_R18", "deeplabv3plus_R18", "unet"]
GRAY = ["MODEL.UNET.IN_CHANNELS", "1", "MODEL.PIXEL_MEAN", "[118.0]", "MODEL.PIXEL_STD", "[58.0]"]


def _cfg(name, *opts):
    return setup_cfg(os.path.join(CONFIG_DIR, f"semantic_{name}.yaml"), opts)


@pytest.mark.parametrize("name", MODELS)
def test_trains_with_falling_loss(name, semseg):
    cfg = _cfg(name)
    losses = semseg.train(semseg.model(cfg), cfg, semseg.batch(cfg), iters=10)
    assert all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses


@pytest.mark.parametrize("name", MODELS)
def test_checkpoint_round_trip_and_default_predictor(name, tmp_path, semseg):
    predictor = semseg.checkpoint_round_trip(lambda *opts: _cfg(name, *opts), tmp_path)
    image = np.random.default_rng(0).integers(0, 256, (100, 90, 3), dtype=np.uint8)
    sem_seg = predictor(image)["sem_seg"]
    assert sem_seg.shape == (predictor.cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, 100, 90)
    assert torch.isfinite(sem_seg).all()


def _capture_loss_logits(model):
    """Record (and keep the gradient of) the logits each head passes to its loss."""
    seen = []

    def hook(module, args):
        args[0].retain_grad()
        seen.append(args[0])

    model.sem_seg_head.loss.register_forward_pre_hook(hook)
    return seen


@pytest.mark.parametrize("name", ["unet_head_R18", "unet"])
def test_unet_head_predicts_at_full_resolution(name, semseg):
    cfg = _cfg(name)
    model = semseg.model(cfg).train()
    shapes = []
    model.sem_seg_head.predictor.register_forward_hook(lambda m, i, out: shapes.append(out.shape))
    seen = _capture_loss_logits(model)
    model(semseg.batch(cfg))
    # The predictor itself (no interpolation after it) outputs input-sized logits, which the loss sees.
    assert shapes == [(2, 6, 128, 128)]
    assert seen[0].shape == (2, 6, 128, 128)


def test_stock_head_predicts_at_quarter_resolution(semseg):
    """The contrast that makes the test above meaningful: SemSegFPNHead's predictor is at stride 4."""
    cfg = _cfg("fpn_R18")
    model = semseg.model(cfg).train()
    shapes = []
    model.sem_seg_head.predictor.register_forward_hook(lambda m, i, out: shapes.append(out.shape))
    model(semseg.batch(cfg))
    assert shapes == [(2, 6, 32, 32)]


@pytest.mark.parametrize("name", ["unet_head_R18", "deeplabv3plus_R18", "unet"])
def test_ignored_pixels_get_no_gradient(name, semseg):
    cfg = _cfg(name)
    model = semseg.model(cfg).train()
    seen = _capture_loss_logits(model)
    batch = semseg.batch(cfg)
    ignored = torch.zeros(128, 128, dtype=torch.bool)
    ignored[:64] = True
    for x in batch:
        x["sem_seg"][ignored] = 255
    model(batch)["loss_sem_seg"].backward()
    grad = seen[0].grad.abs().sum(dim=(0, 1))
    assert grad[ignored].max() == 0
    assert (grad[~ignored] > 0).all()


def test_unet_backbone_with_one_channel_and_plain_python_head():
    unet = UNet(1, depth=2, base_channels=8, norm="", out_features=["enc1", "enc2", "enc3", "dec1"])
    features = unet(torch.rand(2, 1, 32, 48))
    assert {k: tuple(v.shape) for k, v in features.items()} == {
        "enc1": (2, 8, 32, 48), "enc2": (2, 16, 16, 24), "enc3": (2, 32, 8, 12), "dec1": (2, 8, 32, 48)
    }
    # UNetHead decoding the encoder levels itself (skips at strides 2 and 1) is a U-Net too.
    enc = {k: v for k, v in unet.output_shape().items() if k.startswith("enc")}
    head = UNetHead(enc, num_classes=3, decoder_channels=[16, 8]).eval()
    logits, _ = head({k: features[k] for k in enc})
    assert logits.shape == (2, 3, 32, 48)
    with pytest.raises(ValueError, match="input channels"):
        unet(torch.rand(2, 3, 32, 48))


def test_grayscale_unet_segmentor_trains_and_predicts_from_bgr(semseg):
    cfg = _cfg("unet", *GRAY)  # INPUT.FORMAT stays BGR: the model turns 3-channel images to luma
    model = semseg.model(cfg)
    losses = semseg.train(model, cfg, semseg.batch(cfg), iters=4)
    assert all(np.isfinite(losses))
    gray_batch = semseg.batch(_cfg("unet", *GRAY, "INPUT.FORMAT", "L"))  # images stored grayscale
    assert gray_batch[0]["image"].shape == (1, 128, 128)
    assert torch.isfinite(model(gray_batch)["loss_sem_seg"])

    # Both paths must see the same gray values: the model's luma vs PIL's "L" (read_image's).
    rgb = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    bgr = torch.as_tensor(rgb[:, :, ::-1].copy()).permute(2, 0, 1)
    gray = torch.as_tensor(np.asarray(Image.fromarray(rgb).convert("L")), dtype=torch.float32)
    assert (model._to_gray(bgr)[0] - gray).abs().max() <= 1.0

    predictor = DefaultPredictor(cfg)
    assert predictor(rgb[:, :, ::-1])["sem_seg"].shape == (6, 64, 64)


@pytest.mark.parametrize(
    "name, opts, key",
    [
        ("unet", ["MODEL.UNET.DEPTH", "0"], "MODEL.UNET.DEPTH"),
        ("unet", ["MODEL.UNET.OUT_FEATURES", "['dec9']"], "MODEL.UNET.OUT_FEATURES"),
        ("unet", ["MODEL.PIXEL_MEAN", "[118.0]", "MODEL.PIXEL_STD", "[58.0]"], "MODEL.PIXEL_MEAN"),
        ("unet_head_R18", ["MODEL.SEM_SEG_HEAD.IN_FEATURES", "['p2', 'p9']"],
         "MODEL.SEM_SEG_HEAD.IN_FEATURES"),
        ("unet_head_R18", ["MODEL.SEM_SEG_HEAD.UNET_DECODER_CHANNELS", "[64, 32]"],
         "MODEL.SEM_SEG_HEAD.UNET_DECODER_CHANNELS"),
        ("deeplabv3plus_R18", ["MODEL.SEM_SEG_HEAD.ASPP_RATES", "[]"], "MODEL.SEM_SEG_HEAD.ASPP_RATES"),
        ("deeplabv3plus_R18", ["MODEL.SEM_SEG_HEAD.LOW_LEVEL_FEATURE", "res9"],
         "MODEL.SEM_SEG_HEAD.LOW_LEVEL_FEATURE"),
        ("deeplabv3plus_R18", ["MODEL.SEM_SEG_HEAD.NORM", "GN"], "MODEL.SEM_SEG_HEAD.LOW_LEVEL_CHANNELS"),
    ],
)
def test_bad_config_raises_naming_the_key(name, opts, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        build_model(_cfg(name, *opts))
