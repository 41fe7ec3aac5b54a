"""Mask Scoring R-CNN's MaskIoU head (Huang et al., CVPR 2019): regress the IoU of each predicted mask
with its ground truth, and rescore detections by it at inference."""
from typing import List

import fvcore.nn.weight_init as weight_init
import torch
from torch import nn
from torch.nn import functional as F

from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, cat, get_norm
from detectron2.structures import Instances

from seg_d2.losses import select_class_channel

from .mask_head import mask_targets

__all__ = ["MaskIoUHead", "mask_iou_targets"]


def mask_iou_targets(mask_logits: torch.Tensor, gt_masks: torch.Tensor) -> torch.Tensor:
    """IoU (R,) of each binarised predicted mask (sigmoid > 0.5) with its ground-truth mask target.

    Both are the ROI's M×M masks, i.e. the ground truth is cropped to the proposal box (Mask R-CNN's
    mask target), not the paper's full-object area in the union; an empty union gives IoU 0.
    """
    pred = mask_logits > 0  # sigmoid(x) > 0.5
    gt = gt_masks > 0.5
    inter = (pred & gt).flatten(1).sum(1)
    union = (pred | gt).flatten(1).sum(1)
    return inter.float() / union.clamp(min=1).float()


def _class_column(pred: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """(R, C or 1) predictions -> (R,) value of each ROI's class."""
    return select_class_channel(pred[:, :, None, None], classes)[:, 0, 0]


class MaskIoUHead(nn.Module):
    """Predicts, per ROI and class, the IoU of the mask head's prediction with the ground truth.

    Input: the ROI features the mask head sees (e.g. 14×14) concatenated with the ROI class's predicted
    mask probabilities max-pooled to that size (28×28 -> 14×14). Layers: convs (the last one with
    stride 2), FCs, then a linear layer to one IoU per class. Training: L2 loss on the ROI's class
    against :func:`mask_iou_targets`, on foreground ROIs. Inference: ``scores *= predicted IoU``.
    """

    @configurable
    def __init__(
        self,
        input_shape: ShapeSpec,
        *,
        num_classes: int,
        conv_dims: List[int],
        fc_dims: List[int],
        conv_norm: str = "",
        loss_weight: float = 1.0,
    ):
        """
        Args:
            input_shape: shape of the shared ROI features (the predicted mask adds one channel).
            num_classes: number of IoU outputs, 1 for a class-agnostic mask head.
            conv_dims: output channels of each 3×3 conv (>= 1 convs; the last one halves the size).
            fc_dims: output size of each FC layer before the IoU predictor.
            conv_norm: normalisation of the convs (see :func:`detectron2.layers.get_norm`).
            loss_weight: multiplier of the L2 loss.
        """
        super().__init__()
        if not conv_dims:
            raise ValueError("MaskIoUHead needs at least one conv (MODEL.ROI_MASKIOU_HEAD.NUM_CONV >= 1)")
        self.loss_weight = loss_weight
        channels = input_shape.channels + 1
        self.convs = nn.Sequential()
        for k, dim in enumerate(conv_dims):
            stride = 2 if k == len(conv_dims) - 1 else 1
            conv = Conv2d(channels, dim, 3, stride=stride, padding=1, bias=not conv_norm,
                          norm=get_norm(conv_norm, dim), activation=nn.ReLU())
            weight_init.c2_msra_fill(conv)
            self.convs.add_module(f"maskiou_fcn{k + 1}", conv)
            channels = dim
        size = (input_shape.height + 1) // 2 * ((input_shape.width + 1) // 2)
        self.fcs = nn.Sequential()
        features = channels * size
        for k, dim in enumerate(fc_dims):
            fc = nn.Linear(features, dim)
            weight_init.c2_xavier_fill(fc)
            self.fcs.add_module(f"maskiou_fc{k + 1}", nn.Sequential(fc, nn.ReLU()))
            features = dim
        self.predictor = nn.Linear(features, num_classes)
        nn.init.normal_(self.predictor.weight, std=0.01)
        nn.init.constant_(self.predictor.bias, 0)

    @classmethod
    def from_config(cls, cfg, input_shape):
        head = cfg.MODEL.ROI_MASKIOU_HEAD
        return {
            "input_shape": input_shape,
            "num_classes": 1 if cfg.MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK else cfg.MODEL.ROI_HEADS.NUM_CLASSES,
            "conv_dims": [head.CONV_DIM] * head.NUM_CONV,
            "fc_dims": [head.FC_DIM] * head.NUM_FC,
            "conv_norm": head.NORM,
            "loss_weight": head.LOSS_WEIGHT,
        }

    def layers(self, features: torch.Tensor, mask_probs: torch.Tensor) -> torch.Tensor:
        """(R, C_in, S, S) ROI features, (R, M, M) mask probabilities -> (R, num_classes) IoUs."""
        # The paper's 2×2 max pool for M = 2S; adaptive so other mask/feature sizes line up too. Both sizes
        # are fixed by the poolers: ints, so that a trace (ONNX export) records a plain MaxPool.
        mask_size, roi_size = int(mask_probs.shape[-1]), int(features.shape[-1])
        mask = mask_probs[:, None].to(features.dtype)
        if mask_size % roi_size == 0:  # the same bins as the adaptive pool, exportable to ONNX
            mask = F.max_pool2d(mask, mask_size // roi_size)
        else:
            mask = F.adaptive_max_pool2d(mask, features.shape[-2:])
        x = self.convs(torch.cat([features, mask], dim=1))
        return self.predictor(self.fcs(x.flatten(1)))

    def forward(self, features: torch.Tensor, mask_logits: torch.Tensor, instances: List[Instances]):
        """
        Args:
            features: the mask head's ROI features (R, C_in, S, S).
            mask_logits: the mask head's logits (R, C or 1, M, M); detach them in training, so that
                the MaskIoU loss does not train the mask predictor.
            instances: foreground proposals in training, detections (``pred_classes``) in inference.

        Returns:
            {"loss_maskiou": scalar} in training; in inference, ``instances`` with ``scores``
            multiplied by the predicted mask IoU, which is also kept as ``pred_mask_ious``.
        """
        field = "gt_classes" if self.training else "pred_classes"
        classes = cat([x.get(field) for x in instances])
        mask_logits = select_class_channel(mask_logits, classes)
        pred_ious = _class_column(self.layers(features, mask_logits.sigmoid()), classes)
        if self.training:
            return {"loss_maskiou": self.losses(pred_ious, mask_logits, instances)}
        self.inference(pred_ious, instances)
        return instances

    def losses(self, pred_ious, mask_logits, instances):
        if len(pred_ious) == 0:
            return pred_ious.sum() * 0
        target = mask_iou_targets(mask_logits, mask_targets(instances, mask_logits.size(-1))[1].to(mask_logits.device))
        return F.mse_loss(pred_ious.float(), target) * self.loss_weight

    @staticmethod
    def inference(pred_ious, instances):
        # A regressed IoU may leave [0, 1]; a negative factor would flip the ranking.
        pred_ious = pred_ious.detach().clamp(0, 1).to(instances[0].scores.dtype)
        for ious, x in zip(pred_ious.split([len(x) for x in instances]), instances):
            x.pred_mask_ious = ious
            x.scores = x.scores * ious
