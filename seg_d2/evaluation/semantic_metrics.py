"""Semantic segmentation metrics: IoU, Dice, accuracy, frequency-weighted IoU and Boundary IoU.

From label maps or label PNGs; :class:`~seg_d2.evaluation.sem_seg_evaluator.SemSegMetricsEvaluator` is
the Detectron2 evaluator on them. Nothing here imports torch or Detectron2.

Boundary IoU (Cheng et al., "Boundary IoU: Improving Object-Centric Image Segmentation Evaluation",
CVPR 2021) scores only the band of each class region within d pixels of its contour, with
d = dilation_ratio (0.02 in the paper) x image diagonal; it punishes sloppy edges that region IoU
barely notices. A pixel is in the band when some pixel within Chebyshev distance d carries another
label or lies outside the image (the paper's repeated 3x3 erosion). Ignored pixels are left out of
every count, but still separate regions.

Classes absent from both prediction and ground truth get NaN and stay out of the means. A class that is
only predicted (no ground-truth pixel) is the ``predicted_only`` convention, echoed in every result as
``predicted_only_IoU`` (the score such a class gets):

- ``"zero"`` (default): it scores IoU, Dice and Boundary IoU 0 and counts in the means, as in mmseg and
  torchmetrics, and as Detectron2's SemSegEvaluator counts it in its mIoU (its per-class IoU shows NaN
  for that class all the same: its mIoU divides by the classes present in either map);
- ``"nan"``: it gets NaN and stays out of the means (means over the classes in the ground truth), as
  Detectron2's per-class IoU table shows it.
"""
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from .validation import EvaluationInputError


@dataclass
class SemSegStats:
    """Dataset sums: confusion matrix [gt, pred] and per-class boundary-band counts."""

    confusion: np.ndarray
    boundary_inter: np.ndarray
    boundary_gt: np.ndarray
    boundary_pred: np.ndarray

    @classmethod
    def zeros(cls, num_classes):
        z = np.zeros(num_classes, np.int64)
        return cls(np.zeros((num_classes, num_classes), np.int64), z.copy(), z.copy(), z.copy())

    def __iadd__(self, other):
        self.confusion += other.confusion
        self.boundary_inter += other.boundary_inter
        self.boundary_gt += other.boundary_gt
        self.boundary_pred += other.boundary_pred
        return self


def boundary_band(labels, d):
    """Pixels within Chebyshev distance ``d`` of another label or of the image border."""
    size = 2 * d + 1
    lo = ndimage.minimum_filter(labels, size=size, mode="constant", cval=-1)
    hi = ndimage.maximum_filter(labels, size=size, mode="constant", cval=-1)
    return (lo != labels) | (hi != labels)


def dilation_pixels(shape, ratio):
    """The paper's d: ratio x image diagonal, rounded, at least 1 pixel."""
    return max(1, int(round(ratio * np.hypot(*shape[:2]))))


def sem_seg_image_stats(gt, pred, num_classes, ignore_label=255, dilation_ratio=0.02, source="image"):
    """Stats of one image. ``gt``, ``pred``: (H, W) int label maps; ``source`` is named in errors."""
    gt, pred = np.asarray(gt, np.int64), np.asarray(pred, np.int64)
    if gt.shape != pred.shape:
        raise EvaluationInputError(f"{source}: prediction is {pred.shape[::-1]} but ground truth is {gt.shape[::-1]}")
    valid = gt != ignore_label
    for name, m in (("ground truth", gt[valid]), ("prediction", pred)):
        bad = m[(m < 0) | (m >= num_classes)]
        if bad.size:
            raise EvaluationInputError(f"{source}: {name} has label {int(bad[0])} outside [0, {num_classes})")
    g, p = gt[valid], pred[valid]
    confusion = np.bincount(g * num_classes + p, minlength=num_classes**2).reshape(num_classes, num_classes)

    d = dilation_pixels(gt.shape, dilation_ratio)
    gt_band = boundary_band(gt, d) & valid
    pred_band = boundary_band(pred, d) & valid
    both = gt_band & pred_band & (gt == pred)
    return SemSegStats(
        confusion,
        np.bincount(gt[both], minlength=num_classes),
        np.bincount(gt[gt_band], minlength=num_classes),
        np.bincount(pred[pred_band], minlength=num_classes),
    )


def _ratio(num, den):
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _nanmean(x):
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else float("nan")


PREDICTED_ONLY = {"zero": 0.0, "nan": float("nan")}  # convention -> the score of a class only predicted


def check_predicted_only(predicted_only):
    if predicted_only not in PREDICTED_ONLY:
        raise ValueError(f"predicted_only must be one of {sorted(PREDICTED_ONLY)}, got {predicted_only!r}")


def sem_seg_metrics(stats, class_names, predicted_only="zero"):
    """Metrics in percent: mIoU, mDice, fwIoU, mACC, pACC, mBIoU, per class IoU-/Dice-/ACC-/BIoU-<name>,
    and ``predicted_only_IoU``, the score of a class only predicted (``predicted_only``: see the module)."""
    check_predicted_only(predicted_only)
    tp = np.diag(stats.confusion).astype(np.float64)
    pos_gt = stats.confusion.sum(1).astype(np.float64)
    pos_pred = stats.confusion.sum(0).astype(np.float64)
    per_class = {
        "IoU": _ratio(tp, pos_gt + pos_pred - tp),
        "Dice": _ratio(2 * tp, pos_gt + pos_pred),
        "ACC": _ratio(tp, pos_gt),
        "BIoU": _ratio(stats.boundary_inter, stats.boundary_gt + stats.boundary_pred - stats.boundary_inter),
    }
    only_predicted = (pos_gt == 0) & (pos_pred > 0)
    for key in ("IoU", "Dice", "BIoU"):
        per_class[key][only_predicted] = PREDICTED_ONLY[predicted_only]
    total = pos_gt.sum()
    present = pos_gt > 0
    res = {
        "mIoU": 100 * _nanmean(per_class["IoU"]),
        "mDice": 100 * _nanmean(per_class["Dice"]),
        "fwIoU": 100 * float(np.sum(pos_gt[present] / total * per_class["IoU"][present])) if total else float("nan"),
        "mACC": 100 * _nanmean(per_class["ACC"]),
        "pACC": 100 * float(tp.sum() / total) if total else float("nan"),
        "mBIoU": 100 * _nanmean(per_class["BIoU"]),
    }
    for key, values in per_class.items():
        for name, v in zip(class_names, values):
            res[f"{key}-{name}"] = 100 * float(v)
    res["predicted_only_IoU"] = PREDICTED_ONLY[predicted_only]
    return res


def read_label_png(path, expected_shape=None):
    """A label PNG as an int64 array; errors name the file."""
    try:
        with Image.open(path) as img:
            labels = np.asarray(img, dtype=np.int64)
    except (OSError, ValueError) as e:
        raise EvaluationInputError(f"{path}: cannot read label PNG ({e})") from e
    if labels.ndim != 2:
        raise EvaluationInputError(f"{path}: a label PNG must have one channel, got shape {labels.shape}")
    if expected_shape is not None and labels.shape != tuple(expected_shape):
        raise EvaluationInputError(
            f"{path}: PNG is {labels.shape[1]}x{labels.shape[0]}, expected {expected_shape[1]}x{expected_shape[0]}"
        )
    return labels


def evaluate_sem_seg_files(pairs, num_classes, class_names=None, ignore_label=255, dilation_ratio=0.02,
                           predicted_only="zero"):
    """Metrics over (gt PNG, pred PNG) path pairs; see :func:`sem_seg_metrics`."""
    stats = SemSegStats.zeros(num_classes)
    for gt_path, pred_path in pairs:
        gt = read_label_png(gt_path)
        pred = read_label_png(pred_path, gt.shape)
        stats += sem_seg_image_stats(gt, pred, num_classes, ignore_label, dilation_ratio, source=pred_path)
    return sem_seg_metrics(stats, class_names or [str(i) for i in range(num_classes)], predicted_only)
