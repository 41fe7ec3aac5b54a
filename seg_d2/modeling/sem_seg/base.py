"""What seg_d2's semantic heads share: SemSegFPNHead's forward contract, with logits already at input
resolution (so the loss sees them as predicted, not bilinearly resampled), the seg_d2 loss, and
build-time checks that name the offending config key."""
import fvcore.nn.weight_init as weight_init
from torch import nn
from torch.nn import functional as F

from detectron2.layers import Conv2d

__all__ = ["FullResolutionSemSegHead", "check_group_norm", "classifier", "head_from_config", "select_features"]


def select_features(input_shape, names, key):
    """The ShapeSpecs of ``names`` (in that order); an unknown name is a ValueError naming ``key``."""
    unknown = [n for n in names if n not in input_shape]
    if unknown:
        raise ValueError(f"{key}: {unknown} not among the backbone's features {sorted(input_shape)}")
    return {n: input_shape[n] for n in names}


def check_group_norm(norm, channels, key):
    """get_norm("GN", c) uses 32 groups; fail at build time with the key instead of inside GroupNorm."""
    if norm == "GN" and channels % 32:
        raise ValueError(f"{key}={channels} must be divisible by 32 with NORM 'GN'")


def classifier(in_channels, num_classes):
    """The 1x1 conv that turns a head's last feature into class logits (MSRA-initialised)."""
    predictor = Conv2d(in_channels, num_classes, kernel_size=1)
    weight_init.c2_msra_fill(predictor)
    return predictor


def head_from_config(cfg, input_shape):
    """Keyword arguments every seg_d2 semantic head takes from ``MODEL.SEM_SEG_HEAD``: ``input_shape``
    restricted to ``IN_FEATURES``, the classes, norm, ignore value and loss."""
    from seg_d2.losses import build_loss

    head = cfg.MODEL.SEM_SEG_HEAD
    return {
        "input_shape": select_features(input_shape, head.IN_FEATURES, "MODEL.SEM_SEG_HEAD.IN_FEATURES"),
        "num_classes": head.NUM_CLASSES,
        "norm": head.NORM,
        "ignore_value": head.IGNORE_VALUE,
        "loss_weight": head.LOSS_WEIGHT,
        "loss": build_loss(
            head.LOSS, mode="multiclass", ignore_index=head.IGNORE_VALUE, cfg_key="MODEL.SEM_SEG_HEAD.LOSS"
        ),
    }


class FullResolutionSemSegHead(nn.Module):
    """Subclasses implement ``layers(features) -> (N, C, H, W)`` logits at the padded input size.

    ``forward(features, targets)`` returns ``(None, {"loss_sem_seg": ...})`` in training and
    ``(logits, {})`` in inference, as SemSegFPNHead does, so heads plug into SemanticSegmentor and
    PanopticFPN. Without a ``loss`` (plain-Python construction) it is cross-entropy over the
    non-ignored pixels, i.e. SemSegFPNHead's loss.
    """

    def __init__(self, *, ignore_value=-1, loss_weight=1.0, loss=None):
        super().__init__()
        self.ignore_value = ignore_value
        self.loss_weight = loss_weight
        self.loss = loss if loss is not None else nn.CrossEntropyLoss(ignore_index=ignore_value)

    def forward(self, features, targets=None):
        logits = self.layers(features)
        if self.training:
            # float32: https://github.com/pytorch/pytorch/issues/48163 (as in SemSegFPNHead)
            return None, {"loss_sem_seg": self.loss(logits.float(), targets) * self.loss_weight}
        return logits, {}

    def layers(self, features):
        raise NotImplementedError

    def upsample_to_input(self, x):
        """Bilinear upsampling of logits at ``self.output_stride`` to the (padded) input size."""
        return F.interpolate(x, scale_factor=self.output_stride, mode="bilinear", align_corners=False)
