"""What every segmentation loss shares: the registry, the three modes, input normalisation
(shapes, ignore regions, float32 under autocast) and parameter validation.

Every loss sees its input as a :class:`SegBatch` of flat ``(N, C, P)`` tensors, so each family only
writes its formula once for binary, multi-class and multi-label segmentation.
"""
import math
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from detectron2.utils.registry import Registry

SEG_LOSS_REGISTRY = Registry("SEG_LOSS")
SEG_LOSS_REGISTRY.__doc__ = """
Segmentation losses, selected by class name in ``LOSS.TERMS``. Each is an :class:`SegLoss`
constructed as ``cls(mode=..., ignore_index=..., **params)`` where ``params`` are the lower-cased keys
of its config sub-node ``LOSS.<cls.cfg_node>``.
"""

# binary: one sigmoid channel; multiclass: softmax over C channels, integer labels;
# multilabel: C independent sigmoid channels, a {0, 1} target per channel.
MODES = ("binary", "multiclass", "multilabel")


class LossParamError(ValueError):
    """A bad loss parameter; ``param`` lets build_loss name the config key it came from."""

    def __init__(self, param: str, value, allowed: str):
        self.param = param
        super().__init__(f"{param}={value!r} is invalid; allowed: {allowed}")


def check_range(param, value, low, high=math.inf):
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= high:
        raise LossParamError(param, value, f"a number in [{low}, {high}]")
    return float(value)


def check_choice(param, value, choices):
    if value not in choices:
        raise LossParamError(param, value, ", ".join(map(repr, choices)))
    return value


class SegBatch:
    """One loss input in flat form; P is the number of pixels per image (any trailing shape, flattened).

    logits: (N, C, P), float32 (float64 kept, for gradcheck); binary mode has C = 1.
    weight: (N, 1, P) or (N, C, P), per-pixel weight, 0 = ignored.
    labels: (N, P) int64 class indices (multiclass only; 0 at ignored pixels).
    target: (N, C, P), logits' dtype, 0 at ignored pixels; in multiclass mode the one-hot of
        ``labels``, built on first use (plain CE never needs it).
    """

    def __init__(self, logits, weight, target=None, labels=None):
        self.logits, self.weight, self.labels, self._target = logits, weight, labels, target

    @property
    def target(self):
        if self._target is None:
            onehot = F.one_hot(self.labels, self.logits.shape[1]).permute(0, 2, 1)
            self._target = onehot.to(self.logits.dtype) * (self.weight > 0)
        return self._target

    def probs(self):
        return self.logits.softmax(1) if self.labels is not None else self.logits.sigmoid()


def safe_div(num, den):
    """``num / den`` that is 0 (with a zero gradient) instead of NaN when everything was ignored."""
    return num / den.clamp_min(torch.finfo(den.dtype).tiny)


def weighted_mean(loss, weight):
    """Mean of ``loss`` over non-ignored elements (weight broadcasts over channels)."""
    return safe_div((loss * weight).sum(), weight.expand_as(loss).sum())


def safe_pow(x, gamma, eps):
    """``x ** gamma`` for x >= 0, continued linearly below ``eps``: with gamma < 1 the power's slope is
    infinite at 0 (a perfect prediction), which would turn gradients into inf/NaN."""
    return torch.where(x > eps, x.clamp_min(eps) ** gamma, x * eps ** (gamma - 1))


class SegLoss(nn.Module):
    """Base class: ``forward(logits, target, weight=None)`` -> scalar.

    Shapes (any trailing spatial shape, e.g. (H, W) or (H*W,)):
      binary:     logits (N, *S) or (N, 1, *S); target in [0, 1] of shape (N, *S) or (N, 1, *S)
      multiclass: logits (N, C, *S); target int64 (N, *S), ``ignore_index`` marks ignored pixels
      multilabel: logits (N, C, *S); target in [0, 1] of shape (N, C, *S)
    ``weight``: per-pixel weights of shape (N, *S) (or (N, C, *S) in multilabel mode); 0 ignores a
    pixel. In binary/multilabel modes ``ignore_index`` also marks ignored pixels in the target.
    """

    cfg_node = ""  # name of this loss's parameter sub-node under LOSS (e.g. "DICE")

    def __init__(self, mode: str, ignore_index: Optional[int] = None):
        super().__init__()
        self.mode = check_choice("mode", mode, MODES)
        self.ignore_index = ignore_index

    def forward(self, logits, target, weight=None):
        # Losses in fp16 overflow (exp, log, large sums): compute in float32 whatever autocast says.
        with torch.autocast(device_type=logits.device.type, enabled=False):
            batch = self.prepare(logits, target, weight)
            if batch.logits.numel() == 0:  # e.g. no ROI in the batch: nothing to learn, but keep the graph
                return batch.logits.sum()
            return self.compute(batch)

    def compute(self, batch: SegBatch) -> torch.Tensor:
        raise NotImplementedError

    def prepare(self, logits, target, weight=None) -> SegBatch:
        if logits.dim() < 2:
            raise ValueError(f"logits must have a batch dimension and pixels, got shape {tuple(logits.shape)}")
        dtype = torch.promote_types(logits.dtype, torch.float32)
        if self.mode == "binary" and target.shape != logits.shape:
            if logits.shape[1] != 1 or target.shape != logits.shape[:1] + logits.shape[2:]:
                raise ValueError(
                    f"binary mode: target shape {tuple(target.shape)} does not match logits "
                    f"{tuple(logits.shape)} (expected the same shape, or logits with an extra channel of 1)"
                )
            logits = logits.squeeze(1)
        if self.mode == "binary":
            logits = logits.unsqueeze(1)
            target = target.unsqueeze(1)
        n, c = logits.shape[:2]
        p = math.prod(logits.shape[2:])
        logits = logits.reshape(n, c, p).to(dtype)
        pixel_shape = (n, 1, p)

        if self.mode == "multiclass":
            if target.dtype.is_floating_point or target.dtype == torch.bool:
                raise ValueError(f"multiclass mode: target must hold integer class indices, got {target.dtype}")
            if target.shape[:1] != (n,) or target.numel() != n * p:
                raise ValueError(
                    f"multiclass mode: target shape {tuple(target.shape)} does not match logits "
                    f"{tuple(logits.shape)} (expected (N, *S) class indices)"
                )
            labels = target.reshape(n, p).long()
            valid = self._valid(labels).unsqueeze(1)
            labels = labels.masked_fill(~valid.squeeze(1), 0)
            return SegBatch(logits, self._weight(weight, valid, pixel_shape, dtype), labels=labels)

        if target.shape[:2] != (n, c) or target.numel() != logits.numel():
            raise ValueError(
                f"{self.mode} mode: target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)}"
            )
        target = target.reshape(n, c, p)
        valid = self._valid(target)
        target = target.to(dtype) * valid
        return SegBatch(logits, self._weight(weight, valid, pixel_shape, dtype), target=target)

    def _valid(self, target):
        if self.ignore_index is None:
            return torch.ones_like(target, dtype=torch.bool)
        return target != self.ignore_index

    @staticmethod
    def _weight(weight, valid, pixel_shape, dtype):
        valid = valid.to(dtype)
        if weight is None:
            return valid
        n, _, p = pixel_shape
        if weight.numel() == n * p:
            weight = weight.reshape(pixel_shape)
        elif weight.numel() == valid.numel():
            weight = weight.reshape(valid.shape)
        else:
            raise ValueError(f"weight of shape {tuple(weight.shape)} matches neither the pixels nor the target")
        return weight.to(dtype) * valid

    def extra_repr(self):
        return f"mode={self.mode!r}, ignore_index={self.ignore_index}"
