"""Focal loss (Lin et al. 2017, RetinaNet): cross-entropy down-weighted by (1 - p_t)^γ on easy pixels."""
from torch.nn import functional as F

from .base import SEG_LOSS_REGISTRY, SegLoss, check_range, safe_pow, weighted_mean


@SEG_LOSS_REGISTRY.register()
class FocalLoss(SegLoss):
    """FL = -α_t (1 - p_t)^γ log(p_t), averaged over non-ignored pixels.

    Binary / multi-label (sigmoid): α_t = α on foreground, 1 - α on background (Lin 2017 eq. 5);
    ``alpha=None`` disables the balancing. Multi-class (softmax): p_t is the target class's
    probability; α_t = α for every pixel (each pixel's target is its positive class), so α only scales.
    γ = 0 with α = None is plain (B)CE.
    """

    cfg_node = "FOCAL"

    def __init__(self, mode, ignore_index=None, alpha=0.25, gamma=2.0):
        super().__init__(mode, ignore_index)
        self.alpha = None if alpha is None else check_range("alpha", alpha, 0.0, 1.0)
        self.gamma = check_range("gamma", gamma, 0.0)

    def compute(self, batch):
        if batch.labels is None:
            ce = F.binary_cross_entropy_with_logits(batch.logits, batch.target, reduction="none")
            p = batch.logits.sigmoid()
            p_t = p * batch.target + (1 - p) * (1 - batch.target)
            alpha_t = None if self.alpha is None else self.alpha * batch.target + (1 - self.alpha) * (1 - batch.target)
        else:
            log_p_t = (batch.logits.log_softmax(1) * batch.target).sum(1, keepdim=True)
            ce, p_t = -log_p_t, log_p_t.exp()
            alpha_t = self.alpha
        loss = ce * safe_pow(1 - p_t, self.gamma, 1e-6) if self.gamma else ce
        if alpha_t is not None:
            loss = alpha_t * loss
        return weighted_mean(loss, batch.weight)
