"""FCNHead, the MiT backbone and SegFormerHead, built from configs/builtin/{semantic_fcn_R18,segformer_b*}.yaml:
training, DefaultPredictor at full resolution, MiT's shapes and size against the SegFormer paper, the
sequence-reduction attention against a hand-computed one, local encoder checkpoints, config errors."""
import logging
import math
import os

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import seg_d2  # noqa: F401  (first: makes Detectron2 whole)
import seg_d2.data  # noqa: F401  (registers the built-in datasets)
import seg_d2.modeling  # noqa: F401
from detectron2.modeling import build_backbone, build_model

from seg_d2.engine import setup_cfg
from seg_d2.modeling.backbone.mit import EfficientSelfAttention

torch.set_num_threads(1)
CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "builtin")
MODELS = ["semantic_fcn_R18", "segformer_b0"]


def _cfg(name, *opts):
    return setup_cfg(os.path.join(CONFIG_DIR, f"{name}.yaml"), opts)


@pytest.mark.parametrize("name", MODELS)
def test_trains_with_falling_loss_on_full_resolution_logits(name, semseg):
    cfg = _cfg(name)
    model = semseg.model(cfg)
    seen = []
    model.sem_seg_head.loss.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape))
    losses = semseg.train(model, cfg, semseg.batch(cfg), iters=8)
    assert all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses
    assert seen[0] == (2, 6, 128, 128)  # the loss sees input-sized logits


@pytest.mark.parametrize("name", MODELS + ["segformer_b1"])
def test_checkpoint_round_trip_and_default_predictor(name, tmp_path, semseg):
    # Unfolded norms: the predictor's outputs must equal the trained model's bit for bit (folding them into the
    # convs, DefaultPredictor's default, is equal to float32 rounding only; tests/modeling/test_fast_inference.py)
    predictor = semseg.checkpoint_round_trip(lambda *opts: _cfg(name, *opts), tmp_path)
    image = np.random.default_rng(0).integers(0, 256, (100, 90, 3), dtype=np.uint8)  # not a multiple of 32
    sem_seg = predictor(image)["sem_seg"]
    assert sem_seg.shape == (6, 100, 90)
    assert torch.isfinite(sem_seg).all()


@pytest.mark.parametrize(
    "variant, channels, params", [("B0", [32, 64, 160, 256], 3.3e6), ("B1", [64, 128, 320, 512], 13.1e6)]
)
def test_mit_shapes_and_size_match_the_paper(variant, channels, params):
    cfg = _cfg("segformer_b0", "MODEL.MIT.VARIANT", variant)
    mit = build_backbone(cfg)
    expected = {f"mit{i + 1}": (c, 4 * 2**i) for i, c in enumerate(channels)}
    assert {k: (s.channels, s.stride) for k, s in mit.output_shape().items()} == expected
    features = mit(torch.rand(1, 3, 64, 96))
    assert {k: tuple(v.shape) for k, v in features.items()} == {
        k: (1, c, 64 // s, 96 // s) for k, (c, s) in expected.items()
    }
    assert abs(sum(p.numel() for p in mit.parameters()) - params) < 0.1 * params


def test_mit_stops_after_the_last_requested_stage():
    mit = build_backbone(_cfg("segformer_b0", "MODEL.MIT.OUT_FEATURES", "['mit2']"))
    assert list(mit(torch.rand(1, 3, 64, 64))) == ["mit2"]
    assert mit.num_stages == 2


def test_sequence_reduction_attention_equals_hand_computed():
    torch.manual_seed(0)
    dim, heads, sr, h, w = 8, 2, 2, 4, 6
    attn = EfficientSelfAttention(dim, heads, sr).eval()
    for p in attn.parameters():  # LayerNorm starts at identity: make its affine part matter too
        torch.nn.init.normal_(p)
    x = torch.randn(1, h * w, dim)

    # K/V input by hand: each non-overlapping sr x sr patch of the token map -> one token, then LayerNorm.
    grid = x[0].reshape(h, w, dim)
    reduced = []
    for i in range(0, h, sr):
        for j in range(0, w, sr):
            patch = grid[i:i + sr, j:j + sr]  # (sr, sr, C)
            reduced.append(torch.einsum("ocyx,yxc->o", attn.sr.weight, patch) + attn.sr.bias)
    reduced = torch.stack(reduced)
    assert reduced.shape == (h * w // sr**2, dim)
    mean, var = reduced.mean(-1, keepdim=True), reduced.var(-1, unbiased=False, keepdim=True)
    reduced = (reduced - mean) / torch.sqrt(var + attn.norm.eps) * attn.norm.weight + attn.norm.bias

    q = x[0] @ attn.q.weight.T + attn.q.bias
    kv = reduced @ attn.kv.weight.T + attn.kv.bias
    k, v = kv[:, :dim], kv[:, dim:]
    d = dim // heads
    out = torch.cat([
        torch.softmax(q[:, s] @ k[:, s].T / math.sqrt(d), dim=-1) @ v[:, s]
        for s in (slice(n * d, (n + 1) * d) for n in range(heads))
    ], dim=1)
    out = out @ attn.proj.weight.T + attn.proj.bias
    with torch.no_grad():
        torch.testing.assert_close(attn(x, h, w)[0], out, rtol=1e-5, atol=1e-5)


def _encoder_state(tmp_path, variant="B0"):
    # another seed than the configs' SEED 0, so a fresh model differs from the saved encoder
    state = build_backbone(_cfg("segformer_b0", "MODEL.MIT.VARIANT", variant, "SEED", 5)).state_dict()
    path = str(tmp_path / "mit.pth")
    torch.save(state, path)
    return state, path


def test_pretrained_encoder_loads_into_a_fresh_model(tmp_path):
    state, path = _encoder_state(tmp_path)
    loaded = build_model(_cfg("segformer_b0", "MODEL.MIT.PRETRAINED", path)).backbone.state_dict()
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    fresh = build_model(_cfg("segformer_b0")).backbone.state_dict()
    assert not torch.equal(fresh["block1.0.attn.q.weight"], state["block1.0.attn.q.weight"])


def test_pretrained_encoder_reports_bad_keys(tmp_path, caplog):
    state, path = _encoder_state(tmp_path)
    del state["norm4.weight"]  # missing
    state["head.weight"] = torch.zeros(1000, 256)  # the authors' ImageNet classifier: unexpected
    state["block4.1.mlp.fc2.bias"] = torch.zeros(3)  # wrong shape
    torch.save(state, path)
    torch.manual_seed(6)
    mit = build_backbone(_cfg("segformer_b0"))
    before = {k: v.clone() for k, v in mit.state_dict().items()}
    with caplog.at_level(logging.WARNING, logger="seg_d2.modeling.pretrained"):  # the shared loader reports
        report = mit.load_pretrained(path)
    assert report.missing == ["norm4.weight"]
    assert report.unexpected == ["head.weight"]
    assert report.mismatched == ["block4.1.mlp.fc2.bias"]
    for key in ("norm4.weight", "head.weight", "block4.1.mlp.fc2.bias"):
        assert key in caplog.text
    after = mit.state_dict()
    for key in ("norm4.weight", "block4.1.mlp.fc2.bias"):  # kept their initial values
        assert torch.equal(after[key], before[key])
    assert torch.equal(after["block1.0.attn.q.weight"], state["block1.0.attn.q.weight"])
    assert not torch.equal(before["block1.0.attn.q.weight"], state["block1.0.attn.q.weight"])


def test_pretrained_encoder_of_another_variant_or_missing_file_fails(tmp_path):
    _, path = _encoder_state(tmp_path, variant="B1")
    with pytest.raises(ValueError, match=r"MODEL\.MIT\.PRETRAINED .*mit\.pth: no tensor of the file fits"):
        build_model(_cfg("segformer_b0", "MODEL.MIT.PRETRAINED", path))
    with pytest.raises(FileNotFoundError, match=r"MODEL\.MIT\.PRETRAINED"):
        build_model(_cfg("segformer_b0", "MODEL.MIT.PRETRAINED", str(tmp_path / "nope.pth")))


@pytest.mark.parametrize(
    "name, opts, key",
    [
        ("segformer_b0", ["MODEL.MIT.VARIANT", "B7"], "MODEL.MIT.VARIANT"),
        ("segformer_b0", ["MODEL.MIT.OUT_FEATURES", "['mit5']"], "MODEL.MIT.OUT_FEATURES"),
        ("segformer_b0", ["MODEL.MIT.DROP_PATH_RATE", "1.0"], "MODEL.MIT.DROP_PATH_RATE"),
        ("segformer_b0", ["MODEL.SEM_SEG_HEAD.IN_FEATURES", "['res5']"], "MODEL.SEM_SEG_HEAD.IN_FEATURES"),
        ("segformer_b0", ["MODEL.SEM_SEG_HEAD.NORM", "GN", "MODEL.SEM_SEG_HEAD.CONVS_DIM", "48"],
         "MODEL.SEM_SEG_HEAD.CONVS_DIM"),
        ("semantic_fcn_R18", ["MODEL.RESNETS.OUT_FEATURES", "['res4', 'res5']",
                              "MODEL.SEM_SEG_HEAD.IN_FEATURES", "['res4', 'res5']"], "MODEL.SEM_SEG_HEAD.IN_FEATURES"),
        ("semantic_fcn_R18", ["MODEL.SEM_SEG_HEAD.NORM", "GN", "MODEL.SEM_SEG_HEAD.FCN_CONV_DIMS", "[48]"],
         "MODEL.SEM_SEG_HEAD.FCN_CONV_DIMS"),
    ],
)
def test_bad_config_raises_naming_the_key(name, opts, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        build_model(_cfg(name, *opts))
