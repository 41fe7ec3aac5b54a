"""Mix Transformer (MiT), the hierarchical encoder of SegFormer (Xie et al., 2021, "SegFormer: Simple and
Efficient Design for Semantic Segmentation with Transformers"), as a Detectron2 backbone.

Four stages at strides 4/8/16/32, each: an overlapping patch embedding (strided conv + LayerNorm), blocks of
efficient self-attention (keys/values from a sequence shrunk by a strided conv) and Mix-FFN (an MLP with a
3x3 depthwise conv, which leaks enough position information that no positional encoding is needed), then a
LayerNorm. Parameter names follow the authors' release (``patch_embed1``, ``block1.0.attn.q``, ``norm1``...),
so a public MiT state_dict loads into it through MODEL.MIT.PRETRAINED.
"""
import torch
from torch import nn
from torch.nn import functional as F

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone

from ..pretrained import LoadReport, load_into, read_state_dict

__all__ = ["MIT_VARIANTS", "EfficientSelfAttention", "MixTransformer", "build_mit_backbone"]

# SegFormer paper, Table 6 (and Appendix): per-stage widths, depths, heads and sequence-reduction ratios.
MIT_VARIANTS = {
    "B0": dict(embed_dims=(32, 64, 160, 256), depths=(2, 2, 2, 2)),
    "B1": dict(embed_dims=(64, 128, 320, 512), depths=(2, 2, 2, 2)),
}
MIT_NUM_HEADS = (1, 2, 5, 8)
MIT_SR_RATIOS = (8, 4, 2, 1)
MIT_MLP_RATIO = 4


def drop_path(x, p, training):
    """Stochastic depth (Huang et al., 2016): drop the whole residual branch per sample."""
    if p == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1 - p)
    return x * keep / (1 - p)


def _tokens_to_map(x, h, w):
    return x.transpose(1, 2).reshape(x.shape[0], -1, h, w)


class OverlapPatchEmbed(nn.Module):
    """A conv whose kernel exceeds its stride (7/4, then 3/2), so neighbouring patches overlap."""

    def __init__(self, in_channels, dim, kernel_size, stride):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size, stride, padding=kernel_size // 2)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        x = self.proj(x)
        h, w = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), h, w


class EfficientSelfAttention(nn.Module):
    """Multi-head attention whose keys/values come from the sequence reduced ``sr_ratio``**2 times by a
    conv with kernel = stride = ``sr_ratio`` and a LayerNorm: O(N^2 / R^2) instead of O(N^2)."""

    def __init__(self, dim, num_heads, sr_ratio):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)

    def reduce(self, x, h, w):
        """The (N, h*w/R^2, C) sequence keys and values are computed from."""
        if self.sr_ratio == 1:
            return x
        return self.norm(self.sr(_tokens_to_map(x, h, w)).flatten(2).transpose(1, 2))

    def split_heads(self, t):
        """(N, L, C) -> (N, heads, L, C / heads)."""
        return t.reshape(t.shape[0], t.shape[1], self.num_heads, -1).transpose(1, 2)

    def forward(self, x, h, w):
        k, v = self.kv(self.reduce(x, h, w)).chunk(2, dim=-1)
        out = F.scaled_dot_product_attention(*map(self.split_heads, (self.q(x), k, v)))
        return self.proj(out.transpose(1, 2).flatten(2))


class DWConv(nn.Module):
    """Depthwise 3x3 conv over the token map (its own module only to keep the authors' key names)."""

    def __init__(self, dim):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x, h, w):
        return self.dwconv(_tokens_to_map(x, h, w)).flatten(2).transpose(1, 2)


class MixFFN(nn.Module):
    """fc -> 3x3 depthwise conv -> GELU -> fc: the conv supplies the positional cue."""

    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DWConv(hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x, h, w):
        return self.fc2(F.gelu(self.dwconv(self.fc1(x), h, w)))


class MiTBlock(nn.Module):
    """Pre-norm transformer block with stochastic depth on both residual branches."""

    def __init__(self, dim, num_heads, sr_ratio, mlp_ratio, drop_path_rate):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = EfficientSelfAttention(dim, num_heads, sr_ratio)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MixFFN(dim, dim * mlp_ratio)
        self.drop_path_rate = drop_path_rate

    def forward(self, x, h, w):
        x = x + drop_path(self.attn(self.norm1(x), h, w), self.drop_path_rate, self.training)
        return x + drop_path(self.mlp(self.norm2(x), h, w), self.drop_path_rate, self.training)


class MixTransformer(Backbone):
    """MiT encoder. Features ``mit1`` .. ``mit4`` at strides 4, 8, 16, 32 with ``embed_dims`` channels."""

    def __init__(
        self, in_channels=3, *, embed_dims, depths, num_heads=MIT_NUM_HEADS, sr_ratios=MIT_SR_RATIOS,
        mlp_ratio=MIT_MLP_RATIO, drop_path_rate=0.0, out_features=("mit1", "mit2", "mit3", "mit4"),
    ):
        super().__init__()
        names = [f"mit{i + 1}" for i in range(4)]
        unknown = [f for f in out_features if f not in names]
        if unknown or not out_features:
            raise ValueError(f"MODEL.MIT.OUT_FEATURES: {list(out_features)} must be a non-empty subset of {names}")
        # Stochastic depth grows linearly over all blocks, from 0 to drop_path_rate.
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self._out_features = list(out_features)
        self._out_feature_channels, self._out_feature_strides = {}, {}
        prev = in_channels
        for i, (dim, depth) in enumerate(zip(embed_dims, depths), start=1):
            first = i == 1
            self.add_module(f"patch_embed{i}", OverlapPatchEmbed(prev, dim, 7 if first else 3, 4 if first else 2))
            block_rates, rates = rates[:depth], rates[depth:]
            self.add_module(f"block{i}", nn.ModuleList(
                MiTBlock(dim, num_heads[i - 1], sr_ratios[i - 1], mlp_ratio, r) for r in block_rates
            ))
            self.add_module(f"norm{i}", nn.LayerNorm(dim, eps=1e-6))
            self._out_feature_channels[f"mit{i}"] = dim
            self._out_feature_strides[f"mit{i}"] = 2 ** (i + 1)
            prev = dim
        # Stages past the last requested feature would be computed for nothing.
        self.num_stages = max(names.index(f) for f in out_features) + 1
        self.apply(_init_weights)

    @property
    def size_divisibility(self):
        return 32

    def forward(self, x):
        outputs = {}
        for i in range(1, self.num_stages + 1):
            x, h, w = getattr(self, f"patch_embed{i}")(x)
            for block in getattr(self, f"block{i}"):
                x = block(x, h, w)
            x = _tokens_to_map(getattr(self, f"norm{i}")(x), h, w)
            if f"mit{i}" in self._out_features:
                outputs[f"mit{i}"] = x
        return outputs

    def output_shape(self):
        return {
            name: ShapeSpec(channels=self._out_feature_channels[name], stride=self._out_feature_strides[name])
            for name in self._out_features
        }

    def load_pretrained(self, path) -> LoadReport:
        """Load an encoder state_dict (``torch.save``, ``.safetensors``; a ``{"state_dict": ...}`` wrapper is
        accepted) with :func:`seg_d2.modeling.pretrained.load_into`; log and return its report.

        Keys of this model missing from the file and mismatched shapes keep their initial values; file
        keys this model lacks (e.g. the authors' ImageNet classifier ``head.*``) are ignored.
        """
        return load_into(self, read_state_dict(path, key="MODEL.MIT.PRETRAINED"), f"MODEL.MIT.PRETRAINED {path}")


def _init_weights(m):
    # As the SegFormer authors: truncated-normal linears, He-style (fan-out) convs, unit LayerNorms.
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, std=(2.0 / fan_out) ** 0.5)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


@BACKBONE_REGISTRY.register()
def build_mit_backbone(cfg, input_shape):
    mit = cfg.MODEL.MIT
    if mit.VARIANT not in MIT_VARIANTS:
        raise ValueError(f"MODEL.MIT.VARIANT {mit.VARIANT!r} must be one of {sorted(MIT_VARIANTS)}")
    if not 0.0 <= mit.DROP_PATH_RATE < 1.0:
        raise ValueError(f"MODEL.MIT.DROP_PATH_RATE {mit.DROP_PATH_RATE} must be in [0, 1)")
    model = MixTransformer(
        input_shape.channels, **MIT_VARIANTS[mit.VARIANT], drop_path_rate=mit.DROP_PATH_RATE,
        out_features=mit.OUT_FEATURES,
    )
    if mit.PRETRAINED:
        model.load_pretrained(mit.PRETRAINED)
    return model
