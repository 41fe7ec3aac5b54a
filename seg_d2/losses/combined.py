"""Weighted sum of losses, e.g. BCE + 0.5·Dice, times an overall weight."""
from typing import Dict, Sequence, Tuple

import torch
from torch import nn

from .base import SegLoss, check_range


class CombinedLoss(nn.Module):
    """``weight · Σ_i w_i · loss_i(logits, target, pixel_weight)``; what :func:`build_loss` returns."""

    def __init__(self, terms: Sequence[Tuple[SegLoss, float]], weight: float = 1.0):
        super().__init__()
        if not terms:
            raise ValueError("CombinedLoss needs at least one (loss, weight) term")
        self.losses = nn.ModuleList(loss for loss, _ in terms)
        self.term_weights = [check_range("term weight", w, 0.0) for _, w in terms]
        self.weight = check_range("weight", weight, 0.0)
        names = [type(loss).__name__ for loss in self.losses]
        if len(set(names)) != len(names):
            raise ValueError(f"each loss may appear once in a combination, got {names}")

    def terms(self, logits, target, weight=None) -> Dict[str, torch.Tensor]:
        """Each term's contribution (overall and term weights applied), by loss class name: for logging."""
        return {
            type(loss).__name__: self.weight * w * loss(logits, target, weight)
            for loss, w in zip(self.losses, self.term_weights)
        }

    def forward(self, logits, target, weight=None):
        return sum(self.terms(logits, target, weight).values())

    def extra_repr(self):
        return f"weight={self.weight}, term_weights={self.term_weights}"
