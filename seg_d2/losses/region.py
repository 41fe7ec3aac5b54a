"""Region (overlap) losses on soft predictions: Dice, IoU/Jaccard, Tversky and Focal-Tversky.

All four compare soft true/false positives and false negatives per class:
    TP = Σ w·p·t,   FP = Σ w·p·(1-t),   FN = Σ w·(1-p)·t
summed over the pixels of each image (``per_image=True``) or of the whole batch, then averaged over
classes (and images). ``smooth`` is added to numerator and denominator, so an empty target (no
foreground) still has a finite loss whose gradient pushes the prediction towards empty; ``eps``
bounds the denominator away from 0 when ``smooth`` is 0.
"""
import torch

from .base import SEG_LOSS_REGISTRY, SegLoss, check_range, safe_pow


class RegionLoss(SegLoss):
    def __init__(self, mode, ignore_index=None, smooth=1.0, eps=1e-7, log_loss=False, per_image=False):
        super().__init__(mode, ignore_index)
        self.smooth = check_range("smooth", smooth, 0.0)
        self.eps = check_range("eps", eps, 0.0, 1.0)
        self.log_loss = bool(log_loss)
        self.per_image = bool(per_image)

    def compute(self, batch):
        probs = batch.probs()
        w_t = batch.weight * batch.target
        dims = (2,) if self.per_image else (0, 2)
        tp = (probs * w_t).sum(dims)
        fp = (probs * batch.weight).sum(dims) - tp
        fn = w_t.sum(dims) - tp
        return self.loss_from_index(self.index(tp, fp, fn)).mean()

    def index(self, tp, fp, fn):
        """Overlap index in [0, 1] (1 = perfect) per class (and image)."""
        raise NotImplementedError

    def ratio(self, num, den):
        return (num + self.smooth) / (den + self.smooth).clamp_min(self.eps)

    def loss_from_index(self, index):
        # log_loss: -log(index) has larger gradients when the overlap is poor (smp's log_loss).
        return -index.clamp_min(self.eps).log() if self.log_loss else 1 - index


@SEG_LOSS_REGISTRY.register()
class DiceLoss(RegionLoss):
    """Soft Dice loss (Milletari et al. 2016, V-Net): 1 - (2·TP + s) / (2·TP + FP + FN + s),
    i.e. 1 - (2|A∩B| + s) / (|A| + |B| + s)."""

    cfg_node = "DICE"

    def index(self, tp, fp, fn):
        return self.ratio(2 * tp, 2 * tp + fp + fn)


@SEG_LOSS_REGISTRY.register()
class IoULoss(RegionLoss):
    """Soft IoU / Jaccard loss (Rahman & Wang 2016): 1 - (|A∩B| + s) / (|A∪B| + s)."""

    cfg_node = "IOU"

    def index(self, tp, fp, fn):
        return self.ratio(tp, tp + fp + fn)


@SEG_LOSS_REGISTRY.register()
class TverskyLoss(RegionLoss):
    """Tversky loss (Salehi et al. 2017): 1 - (TP + s) / (TP + α·FP + β·FN + s).

    α = β = 0.5 is Dice, α = β = 1 is IoU; β > α penalises false negatives more (higher recall).
    """

    cfg_node = "TVERSKY"

    def __init__(
        self, mode, ignore_index=None, alpha=0.3, beta=0.7, smooth=1.0, eps=1e-7, log_loss=False, per_image=False
    ):
        super().__init__(mode, ignore_index, smooth, eps, log_loss, per_image)
        self.alpha = check_range("alpha", alpha, 0.0, 1.0)
        self.beta = check_range("beta", beta, 0.0, 1.0)

    def index(self, tp, fp, fn):
        return self.ratio(tp, tp + self.alpha * fp + self.beta * fn)


@SEG_LOSS_REGISTRY.register()
class FocalTverskyLoss(TverskyLoss):
    """Focal Tversky loss (Abraham & Khan 2019): (1 - Tversky index)^γ.

    ``gamma`` is the exponent itself: the paper's best setting, 1/γ' with γ' = 4/3, is γ = 0.75;
    γ < 1 raises the loss of classes/ROIs that are already fairly well segmented less than of poor ones.
    """

    cfg_node = "FOCAL_TVERSKY"

    def __init__(
        self, mode, ignore_index=None, alpha=0.3, beta=0.7, gamma=0.75, smooth=1.0, eps=1e-7, per_image=False
    ):
        super().__init__(mode, ignore_index, alpha, beta, smooth, eps, per_image=per_image)
        self.gamma = check_range("gamma", gamma, 0.0)

    def loss_from_index(self, index):
        return safe_pow(1 - index, self.gamma, self.eps)
