"""Lovász losses (Berman et al. 2018): a convex surrogate that optimises the Jaccard index (IoU) directly.

The loss is the Lovász extension of the Jaccard loss evaluated at a vector of per-pixel errors:
sort the errors in decreasing order and weight each by the increment of the Jaccard loss it causes.
Multi-class mode uses the Lovász-Softmax (errors |t - p| on softmax probabilities); binary and
multi-label modes use the Lovász hinge (errors 1 - logit·sign(t), with a ReLU) per channel.
Pixel weights only select pixels here (weight > 0 = kept): the surrogate has no per-pixel weighting.
"""
import torch
from torch.nn import functional as F

from .base import SEG_LOSS_REGISTRY, SegLoss, check_choice, safe_div


def lovasz_grad(gt_sorted):
    """Increments of the Jaccard loss along each row of ``gt_sorted`` (R, P), {0, 1} ground truth
    ordered by decreasing error (Berman 2018, Algorithm 1)."""
    gts = gt_sorted.sum(1, keepdim=True)
    intersection = gts - gt_sorted.cumsum(1)
    union = gts + (1 - gt_sorted).cumsum(1)  # >= 1 everywhere, so no division by zero
    jaccard = 1 - intersection / union
    return torch.cat([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], 1)


def lovasz_rows(errors, gt, valid):
    """Lovász extension of the Jaccard loss for each row of (R, P) errors; invalid pixels are sorted
    last with a zero error, where they cannot change the increments of the valid ones."""
    errors = errors.masked_fill(~valid, float("-inf"))
    errors_sorted, order = errors.sort(1, descending=True)
    return (F.relu(errors_sorted) * lovasz_grad(gt.gather(1, order))).sum(1)


@SEG_LOSS_REGISTRY.register()
class LovaszLoss(SegLoss):
    """Lovász-Softmax (multi-class) / Lovász hinge (binary, multi-label).

    per_image: one Jaccard surrogate per image and class, averaged (Berman's ``per_image``);
    otherwise one per class over the whole batch. classes (multi-class only): "present" averages over
    the classes present in the target (of the image, with per_image), "all" over every class.
    """

    cfg_node = "LOVASZ"

    def __init__(self, mode, ignore_index=None, per_image=False, classes="present"):
        super().__init__(mode, ignore_index)
        self.per_image = bool(per_image)
        self.classes = check_choice("classes", classes, ("present", "all"))

    def compute(self, batch):
        valid = (batch.weight > 0).expand_as(batch.logits)
        target = batch.target * valid  # pixels ignored by a zero weight must not count as ground truth
        if batch.labels is None:
            errors = 1 - batch.logits * (2 * target - 1)
        else:
            errors = (target - batch.probs()).abs()
        if self.per_image:
            rows = [x.flatten(0, 1) for x in (errors, target, valid)]
        else:
            rows = [x.transpose(0, 1).flatten(1) for x in (errors, target, valid)]
        losses = lovasz_rows(*rows)
        if batch.labels is None or self.classes == "all":
            return losses.mean()
        present = (rows[1].sum(1) > 0).to(losses.dtype)
        return safe_div((losses * present).sum(), present.sum())
