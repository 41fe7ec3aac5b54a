"""Helpers for applying segmentation losses to the ROI mask head."""
import torch


def select_class_channel(pred_mask_logits: torch.Tensor, gt_classes: torch.Tensor) -> torch.Tensor:
    """Each ROI's logits for its own ground-truth class, (R, M, M).

    A class-specific mask head predicts C masks per ROI but only the ground-truth class's mask is
    supervised (as in Detectron2's ``mask_rcnn_loss``); region losses such as Dice must see that channel
    alone, not all C. ``pred_mask_logits``: (R, C, M, M), or (R, 1, M, M) for a class-agnostic head
    (``gt_classes`` is then not used); ``gt_classes``: (R,) integer class indices.
    """
    if pred_mask_logits.dim() != 4:
        raise ValueError(f"pred_mask_logits must be (R, C, M, M), got shape {tuple(pred_mask_logits.shape)}")
    if pred_mask_logits.shape[1] == 1:
        return pred_mask_logits[:, 0]
    if gt_classes.shape != pred_mask_logits.shape[:1]:
        raise ValueError(
            f"gt_classes of shape {tuple(gt_classes.shape)} must have one class per ROI "
            f"({pred_mask_logits.shape[0]})"
        )
    rois = torch.arange(pred_mask_logits.shape[0], device=pred_mask_logits.device)
    return pred_mask_logits[rois, gt_classes.long()]
