"""Pixel-wise cross-entropy losses: softmax CE (multi-class) and sigmoid BCE (binary, multi-label)."""
from typing import Optional, Sequence

import torch
from torch.nn import functional as F

from .base import SEG_LOSS_REGISTRY, SegBatch, SegLoss, check_range, safe_div, weighted_mean


def _class_weights(weights: Optional[torch.Tensor], channels: int, like: torch.Tensor):
    """(C,) class weights in ``like``'s dtype, or None; checked against the logits' channel count."""
    if weights is None:
        return None
    if weights.numel() != channels:
        raise ValueError(f"class_weights has {weights.numel()} entries but the logits have {channels} channels")
    return weights.to(like)


class _PixelCE(SegLoss):
    """Shared options: per-class weights (a non-persistent buffer, so checkpoints are unchanged)."""

    def __init__(self, mode, ignore_index=None, class_weights: Sequence[float] = ()):
        super().__init__(mode, ignore_index)
        for w in class_weights:
            check_range("class_weights", w, 0.0)
        weights = torch.tensor(class_weights, dtype=torch.float32) if len(class_weights) else None
        self.register_buffer("class_weights", weights, persistent=False)

    def sigmoid_ce(self, batch: SegBatch, label_smoothing=0.0, pos_weight=None):
        """Mean per-channel BCE; class weights scale each channel like torch's ``BCEWithLogitsLoss(weight=)``."""
        target = batch.target
        if label_smoothing:
            target = target * (1 - label_smoothing) + label_smoothing / 2
        loss = F.binary_cross_entropy_with_logits(batch.logits, target, pos_weight=pos_weight, reduction="none")
        weights = _class_weights(self.class_weights, loss.shape[1], loss)
        if weights is not None:
            loss = loss * weights.view(-1, 1)
        return weighted_mean(loss, batch.weight)


@SEG_LOSS_REGISTRY.register()
class CrossEntropyLoss(_PixelCE):
    """Softmax cross-entropy in multi-class mode (sigmoid BCE in binary/multi-label modes).

    Matches ``F.cross_entropy(weight=class_weights, label_smoothing=..., ignore_index=...)`` with
    ``reduction="mean"``: the loss is normalised by the summed class weight of the non-ignored pixels.
    Label smoothing mixes the one-hot target with the uniform distribution (ε/C per class; ε/2 for a
    sigmoid channel).
    """

    cfg_node = "CE"

    def __init__(self, mode, ignore_index=None, class_weights=(), label_smoothing=0.0):
        super().__init__(mode, ignore_index, class_weights)
        self.label_smoothing = check_range("label_smoothing", label_smoothing, 0.0, 1.0)

    def compute(self, batch):
        if batch.labels is None:
            return self.sigmoid_ce(batch, self.label_smoothing)
        weights = _class_weights(self.class_weights, batch.logits.shape[1], batch.logits)
        # torch's fused kernel; ignored pixels carry label 0 and weight 0
        loss = F.cross_entropy(
            batch.logits, batch.labels, weight=weights, label_smoothing=self.label_smoothing, reduction="none"
        )
        norm = batch.weight.squeeze(1)
        if weights is not None:
            norm = norm * weights[batch.labels]
        return safe_div((loss * batch.weight.squeeze(1)).sum(), norm.sum())


@SEG_LOSS_REGISTRY.register()
class BCELoss(_PixelCE):
    """Sigmoid binary cross-entropy per channel (multi-class mode: one-vs-all on one-hot targets),
    averaged over non-ignored pixels. ``pos_weight`` > 1 favours recall of the foreground."""

    cfg_node = "BCE"

    def __init__(self, mode, ignore_index=None, pos_weight=1.0, class_weights=()):
        super().__init__(mode, ignore_index, class_weights)
        self.pos_weight = check_range("pos_weight", pos_weight, 0.0)

    def compute(self, batch):
        pos_weight = None if self.pos_weight == 1.0 else batch.logits.new_tensor(self.pos_weight)
        return self.sigmoid_ce(batch, pos_weight=pos_weight)
