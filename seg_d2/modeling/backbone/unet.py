"""U-Net (Ronneberger et al., 2015, "U-Net: Convolutional Networks for Biomedical Image Segmentation")
as a Detectron2 backbone, and the conv blocks that seg_d2's U-Net semantic head shares with it.

Unlike the paper, convolutions are padded ("same"), so every decoder level lines up with its encoder
skip without cropping; inputs must then be divisible by 2**depth (``size_divisibility``).
"""
import fvcore.nn.weight_init as weight_init
import torch
from torch import nn
from torch.nn import functional as F

from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import BACKBONE_REGISTRY, Backbone

__all__ = ["UNet", "UpBlock", "build_unet_backbone", "double_conv"]


def double_conv(in_channels, out_channels, norm=""):
    """Two 3x3 conv + norm + ReLU: the unit of every U-Net level (and of DeepLabV3+'s decoder)."""
    convs = []
    for c_in in (in_channels, out_channels):
        conv = Conv2d(
            c_in, out_channels, kernel_size=3, padding=1, bias=not norm,
            norm=get_norm(norm, out_channels), activation=F.relu,
        )
        weight_init.c2_msra_fill(conv)
        convs.append(conv)
    return nn.Sequential(*convs)


class UpBlock(nn.Module):
    """One U-Net decoder level: learned 2x upsampling, concat with the skip feature, double conv.

    ``bilinear=True`` swaps the 2x2 transposed conv of the paper for bilinear upsampling + 1x1 conv
    (fewer parameters, no checkerboard artefacts). ``skip_channels=0`` makes a level without skip.
    """

    def __init__(self, in_channels, skip_channels, out_channels, *, norm="", bilinear=False):
        super().__init__()
        if bilinear:
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                Conv2d(in_channels, out_channels, kernel_size=1),
            )
        else:
            self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
        self.fuse = double_conv(out_channels + skip_channels, out_channels, norm)

    def forward(self, x, skip=None):
        x = self.up(x)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.fuse(x)


class UNet(Backbone):
    """The classic U-Net encoder-decoder.

    Features: ``enc1`` .. ``enc{depth+1}`` (encoder levels, stride 2**(k-1), width base * 2**(k-1)) and
    ``dec1`` .. ``dec{depth}`` (decoder levels; ``dec1`` is the full-resolution output). Only the
    decoder levels down to the finest requested ``dec*`` are built, so no parameter goes unused.
    """

    def __init__(
        self, in_channels=3, *, depth=4, base_channels=64, norm="BN", bilinear=False,
        out_features=("dec1",),
    ):
        super().__init__()
        if depth < 1:
            raise ValueError(f"U-Net depth (MODEL.UNET.DEPTH) must be >= 1, got {depth}")
        if base_channels < 1 or in_channels < 1:
            raise ValueError(
                "U-Net widths (MODEL.UNET.BASE_CHANNELS, MODEL.UNET.IN_CHANNELS) must be >= 1, "
                f"got {base_channels}, {in_channels}"
            )
        names = [f"enc{k}" for k in range(1, depth + 2)] + [f"dec{k}" for k in range(1, depth + 1)]
        unknown = [f for f in out_features if f not in names]
        if unknown or not out_features:
            raise ValueError(
                f"MODEL.UNET.OUT_FEATURES {list(out_features)}: unknown or empty (depth {depth} "
                f"has {names})"
            )
        self.in_channels = in_channels
        self._depth = depth
        self._out_features = list(out_features)
        widths = [base_channels * 2**k for k in range(depth + 1)]

        self.encoder = nn.ModuleDict({"enc1": double_conv(in_channels, widths[0], norm)})
        for k in range(1, depth + 1):
            self.encoder[f"enc{k + 1}"] = nn.Sequential(
                nn.MaxPool2d(2), double_conv(widths[k - 1], widths[k], norm)
            )
        dec_levels = [int(f[3:]) for f in self._out_features if f.startswith("dec")]
        self.decoder = nn.ModuleDict()
        for k in range(depth, min(dec_levels, default=depth + 1) - 1, -1):
            self.decoder[f"dec{k}"] = UpBlock(
                widths[k], widths[k - 1], widths[k - 1], norm=norm, bilinear=bilinear
            )
        self._out_feature_strides = {f: 2 ** (int(f[3:]) - 1) for f in names}
        self._out_feature_channels = {f: widths[int(f[3:]) - 1] for f in names}

    @property
    def size_divisibility(self):
        return 2**self._depth

    def forward(self, x):
        if x.shape[1] != self.in_channels:
            raise ValueError(f"U-Net built for {self.in_channels} input channels, got {x.shape[1]}")
        if x.shape[-2] % self.size_divisibility or x.shape[-1] % self.size_divisibility:
            raise ValueError(f"U-Net input size {tuple(x.shape[-2:])} not divisible by 2**depth")
        skips = {}
        for name, level in self.encoder.items():
            x = skips[name] = level(x)
        outputs = {f: skips[f] for f in self._out_features if f.startswith("enc")}
        for name, level in self.decoder.items():  # coarse to fine
            x = level(x, skips["enc" + name[3:]])
            if name in self._out_features:
                outputs[name] = x
        return outputs

    def output_shape(self):
        return {
            f: ShapeSpec(channels=self._out_feature_channels[f], stride=self._out_feature_strides[f])
            for f in self._out_features
        }


@BACKBONE_REGISTRY.register()
def build_unet_backbone(cfg, input_shape):
    """U-Net from ``MODEL.UNET.*``; ``MODEL.UNET.IN_CHANNELS`` (not the pixel mean's length) sets its
    input width, so that a 1-channel U-Net can be fed 3-channel images (see ``UNetSegmentor``)."""
    unet = cfg.MODEL.UNET
    return UNet(
        unet.IN_CHANNELS, depth=unet.DEPTH, base_channels=unet.BASE_CHANNELS, norm=unet.NORM,
        bilinear=unet.BILINEAR, out_features=unet.OUT_FEATURES,
    )
