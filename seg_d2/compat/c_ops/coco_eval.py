"""numpy version of the fast COCO evaluation pair in ``detectron2._C``.

:class:`detectron2.evaluation.fast_eval_api.COCOeval_opt` calls
:func:`COCOevalEvaluateImages` in place of ``COCOeval.evaluateImg`` and
:func:`COCOevalAccumulate` in place of ``COCOeval.accumulate``. Both give the compiled ops' values bit
for bit, which are pycocotools' ``COCOeval``'s (same stable sorts, same greedy matching and tie-breaking,
same quirks: a match is recorded as the matched instance's id, so an id of 0 reads as "unmatched") but
for precision: the C++ computes tp / (tp + fp), pycocotools tp / (tp + fp + eps), up to 2 ulp apart.
"""
import datetime
from typing import List, Sequence

import numpy as np

__all__ = ["InstanceAnnotation", "COCOevalEvaluateImages", "COCOevalAccumulate"]


class InstanceAnnotation:
    """One ground-truth or detected instance, reduced to what matching needs."""

    __slots__ = ("id", "score", "area", "is_crowd", "ignore")

    def __init__(self, id: int, score: float, area: float, is_crowd: bool, ignore: bool):
        self.id = int(id)
        self.score = float(score)
        self.area = float(area)
        self.is_crowd = bool(is_crowd)
        self.ignore = bool(ignore)

    def __repr__(self):
        return "InstanceAnnotation(id={}, score={}, area={}, is_crowd={}, ignore={})".format(
            self.id, self.score, self.area, self.is_crowd, self.ignore
        )


class ImageEvaluation:
    """Matching result of one (category, area range, image); ``COCOeval.evaluateImg``'s dict.

    Detections are in score order (truncated to max_det); arrays are indexed [threshold, det].
    """

    __slots__ = ("dt_matches", "dt_ignores", "dt_scores", "gt_ignores")

    def __init__(self, dt_matches, dt_ignores, dt_scores, gt_ignores):
        self.dt_matches = dt_matches  # int64 [T, D]: id of the matched gt, 0 if none
        self.dt_ignores = dt_ignores  # bool [T, D]
        self.dt_scores = dt_scores  # float64 [D]
        self.gt_ignores = gt_ignores  # bool [G]


def _sort_by_score(dts: Sequence[InstanceAnnotation], max_det: int) -> List[InstanceAnnotation]:
    # same key and stable sort as COCOeval.computeIoU, so rows line up with the given ious
    order = np.argsort([-d.score for d in dts], kind="mergesort")
    return [dts[i] for i in order[:max_det]]


def _last_argmax(values: np.ndarray) -> np.ndarray:
    # COCOeval keeps the *last* gt among equal best IoUs (it updates on ``>=``)
    flipped = values[:, ::-1]
    return values.shape[1] - 1 - np.argmax(flipped == flipped.max(axis=1, keepdims=True), axis=1)


def _match(ious, dts, gts, gt_ignores, iou_thresholds):
    """Greedy matching of COCOeval.evaluateImg, vectorised over IoU thresholds.

    For each detection (best score first) COCOeval walks the gts (non-ignored first) and picks
    the last available gt with the largest IoU >= threshold; it only falls back to ignored gts
    when no regular gt qualifies. Non-crowd gts are available until matched.
    """
    num_t, num_g = len(iou_thresholds), len(gts)
    thresholds = np.minimum(np.asarray(iou_thresholds, dtype=np.float64), 1 - 1e-10)[:, None]
    gt_ids = np.array([g.id for g in gts], dtype=np.int64)
    gt_crowd = np.array([g.is_crowd for g in gts], dtype=bool)
    gt_matches = np.zeros((num_t, num_g), dtype=np.int64)
    dt_matches = np.zeros((num_t, len(dts)), dtype=np.int64)
    dt_ignores = np.zeros((num_t, len(dts)), dtype=bool)
    if num_g == 0:
        return dt_matches, dt_ignores
    rows = np.arange(num_t)
    for d, dt in enumerate(dts):
        available = (gt_matches <= 0) | gt_crowd
        candidates = available & (ious[d][None, :] >= thresholds)
        regular = candidates & ~gt_ignores
        chosen = np.where(regular.any(axis=1, keepdims=True), regular, candidates)
        matched = chosen.any(axis=1)
        if not matched.any():
            continue
        best = _last_argmax(np.where(chosen, ious[d][None, :], -np.inf))
        t, g = rows[matched], best[matched]
        dt_matches[t, d] = gt_ids[g]
        dt_ignores[t, d] = gt_ignores[g]
        gt_matches[t, g] = dt.id
    return dt_matches, dt_ignores


def _evaluate_image(area_range, dts, gts, ious, iou_thresholds) -> ImageEvaluation:
    lo, hi = area_range
    ignores = np.array([g.ignore or g.area < lo or g.area > hi for g in gts], dtype=bool)
    gt_order = np.argsort(ignores.astype(np.int64), kind="mergesort")  # ignored gts last
    gts = [gts[i] for i in gt_order]
    gt_ignores = ignores[gt_order]
    ious = ious[:, gt_order]
    dt_matches, dt_ignores = _match(ious, dts, gts, gt_ignores, iou_thresholds)
    # unmatched detections outside the area range are ignored rather than false positives
    outside = np.array([d.area < lo or d.area > hi for d in dts], dtype=bool)
    dt_ignores |= (dt_matches == 0) & outside[None, :]
    scores = np.array([d.score for d in dts], dtype=np.float64)
    return ImageEvaluation(dt_matches, dt_ignores, scores, gt_ignores)


def _as_iou_matrix(ious, num_dt: int, num_gt: int) -> np.ndarray:
    ious = np.asarray(ious, dtype=np.float64)
    if ious.size == 0 and (num_dt == 0 or num_gt == 0):
        return np.zeros((num_dt, num_gt))  # COCOeval passes [] when there is nothing to compare
    if ious.shape != (num_dt, num_gt):
        raise ValueError(
            "IoU matrix has shape {}, expected (detections, gts) = ({}, {}) with detections "
            "sorted by score and truncated to max_det".format(ious.shape, num_dt, num_gt)
        )
    return ious


def COCOevalEvaluateImages(
    area_ranges, max_det, iou_thresholds, ious, gt_instances, dt_instances
) -> List[ImageEvaluation]:
    """Match detections to ground truth for every (image, category, area range).

    Args:
        area_ranges: list of [min_area, max_area].
        max_det: keep at most this many detections per image and category (best scores).
        iou_thresholds: list of IoU thresholds.
        ious: ious[i][c] is the [D, G] IoU matrix of image i, category c, with detections
            sorted by score and truncated to max_det (as ``COCOeval.computeIoU`` returns it),
            or empty when there is nothing to compare.
        gt_instances, dt_instances: [i][c] lists of :class:`InstanceAnnotation`.

    Returns:
        Opaque list for :func:`COCOevalAccumulate`, ordered like ``COCOeval.evalImgs``:
        index ``(c * num_area_ranges + a) * num_images + i``.
    """
    num_images = len(gt_instances)
    if len(dt_instances) != num_images or len(ious) != num_images:
        raise ValueError("gt_instances, dt_instances and ious must have one entry per image")
    num_cats = len(ious[0]) if num_images else 0
    num_areas = len(area_ranges)
    results = [None] * (num_images * num_areas * num_cats)
    for i in range(num_images):
        if not len(gt_instances[i]) == len(dt_instances[i]) == len(ious[i]) == num_cats:
            raise ValueError("image {} does not have one entry per category".format(i))
        for c in range(num_cats):
            gts = list(gt_instances[i][c])
            dts = _sort_by_score(dt_instances[i][c], max_det)
            iou = _as_iou_matrix(ious[i][c], len(dts), len(gts))
            for a, area_range in enumerate(area_ranges):
                results[(c * num_areas + a) * num_images + i] = _evaluate_image(
                    area_range, dts, gts, iou, iou_thresholds
                )
    return results


def _precision_recall(dt_matches, dt_ignores, scores, num_gt, recall_thresholds):
    """COCOeval.accumulate's curve for one (category, area, maxDet): all thresholds at once.

    Returns precision [T, R], recall [T] and scores [T, R].
    """
    order = np.argsort(-scores, kind="mergesort")
    scores = scores[order]
    dt_matches, dt_ignores = dt_matches[:, order], dt_ignores[:, order]
    tp = np.cumsum((dt_matches != 0) & ~dt_ignores, axis=1).astype(dtype=float)
    fp = np.cumsum((dt_matches == 0) & ~dt_ignores, axis=1).astype(dtype=float)
    num_dt = len(scores)
    rc = tp / num_gt
    counted = tp + fp
    pr = np.divide(tp, counted, out=np.zeros_like(tp), where=counted > 0)  # cocoeval.cpp; pycocotools adds eps
    recall = rc[:, -1] if num_dt else np.zeros(len(rc))
    pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]  # monotone envelope from the right
    num_t, num_r = pr.shape[0], len(recall_thresholds)
    precision, score_at = np.zeros((num_t, num_r)), np.zeros((num_t, num_r))
    for t in range(num_t):
        idx = np.searchsorted(rc[t], recall_thresholds, side="left")
        valid = idx < num_dt  # recall levels never reached keep precision 0
        precision[t, valid] = pr[t, idx[valid]]
        score_at[t, valid] = scores[idx[valid]]
    return precision, recall, score_at


def COCOevalAccumulate(params, evalImgs):
    """Build the precision/recall tables of ``COCOeval.accumulate``.

    Args:
        params: the ``COCOeval.Params`` the evaluation ran with (``COCOeval._paramsEval``).
        evalImgs: output of :func:`COCOevalEvaluateImages`.

    Returns:
        dict with "params", "counts" ([T, R, K, A, M]), "date", "precision" [T, R, K, A, M],
        "recall" [T, K, A, M] and "scores" [T, R, K, A, M]; -1 where a setting has no
        non-ignored ground truth.
    """
    recall_thresholds = np.asarray(params.recThrs, dtype=np.float64)
    max_dets = list(params.maxDets)
    T, R = len(params.iouThrs), len(recall_thresholds)
    K = len(params.catIds) if params.useCats == 1 else 1
    A, M, I = len(params.areaRng), len(max_dets), len(params.imgIds)
    if len(evalImgs) != K * A * I:
        raise ValueError(
            "evalImgs has {} entries, params describe {} categories x {} area ranges x {} "
            "images; accumulate with the params evaluate() ran with".format(len(evalImgs), K, A, I)
        )
    precision = -np.ones((T, R, K, A, M))
    recall = -np.ones((T, K, A, M))
    scores = -np.ones((T, R, K, A, M))
    for k in range(K):
        for a in range(A):
            evals = evalImgs[(k * A + a) * I : (k * A + a + 1) * I]
            num_gt = sum(int(np.count_nonzero(~e.gt_ignores)) for e in evals)
            if num_gt == 0:
                continue
            for m, max_det in enumerate(max_dets):
                precision[:, :, k, a, m], recall[:, k, a, m], scores[:, :, k, a, m] = (
                    _precision_recall(
                        np.concatenate([e.dt_matches[:, :max_det] for e in evals], axis=1),
                        np.concatenate([e.dt_ignores[:, :max_det] for e in evals], axis=1),
                        np.concatenate([e.dt_scores[:max_det] for e in evals]),
                        num_gt,
                        recall_thresholds,
                    )
                )
    return {
        "params": params,
        "counts": [T, R, K, A, M],
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S"),
        "precision": precision,
        "recall": recall,
        "scores": scores,
    }
