"""Point prompts on a trained seg_d2 instance (or panoptic) model.

The prompt follows SAM's convention (Kirillov et al., "Segment Anything", 2023): ``point_coords`` is an
(N, 2) array of (x, y) image pixel coordinates and ``point_labels`` an (N,) array with 1 for a positive
point (on the object) and 0 for a negative one (not on it). Unlike SAM, no mask is generated from the
prompt: the prompt *selects* among the model's predicted instances.

Selection rules, in order:

1. Candidates are the predicted instances whose mask contains every positive point and no negative one,
   best ``scores`` first (ties: the smaller mask first, the more specific answer).
2. A candidate whose mask overlaps an already chosen one with IoU > ``duplicate_iou`` is skipped, so the
   candidates are distinct alternatives (e.g. a nucleus, then the cluster it belongs to), not duplicates.
3. If no single instance qualifies but the positive points fall in *different* instances (the user
   clicked several objects), and ``union_fallback`` is on, the answer is the union of, for each positive
   point, the best instance containing it and no negative point; its score is the lowest of theirs.
4. Otherwise :class:`NoMatchingInstance` is raised.

A box prompt (:func:`select_by_box`) selects the instances whose predicted box has IoU >= ``min_box_iou``
with it, best box IoU first, with points (if any) as a further condition and duplicates skipped as above.
"""
import numpy as np
import torch

from detectron2.structures import Boxes, pairwise_iou

__all__ = ["NoMatchingInstance", "predict_from_points", "select_by_box", "select_instances"]


class NoMatchingInstance(LookupError):
    """No predicted instance contains all positive points while excluding the negative ones."""


def _validate_points(point_coords, point_labels, image_size, need_positive=True):
    coords = np.asarray(point_coords, dtype=np.float64)
    labels = np.asarray(point_labels)
    if coords.ndim != 2 or coords.shape[1] != 2 or len(coords) == 0:
        raise ValueError(f"point_coords must have shape (N, 2) with N >= 1 (x, y), got {coords.shape}")
    if labels.shape != (len(coords),):
        raise ValueError(f"point_labels must have shape ({len(coords)},), got {labels.shape}")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"point_labels must be 1 (positive) or 0 (negative), got {np.unique(labels).tolist()}")
    if need_positive and not labels.any():
        raise ValueError("the prompt needs at least one positive point (label 1)")
    h, w = image_size
    xy = np.floor(coords).astype(np.int64)  # the pixel each point falls in
    outside = (xy[:, 0] < 0) | (xy[:, 0] >= w) | (xy[:, 1] < 0) | (xy[:, 1] >= h)
    if outside.any():
        raise ValueError(f"points {coords[outside].tolist()} lie outside the {w}x{h} (width x height) image")
    return xy, labels.astype(bool)


def _iou(a, b):
    return np.logical_and(a, b).sum() / max(np.logical_or(a, b).sum(), 1)


def _distinct(order, masks, scores, max_candidates, duplicate_iou):
    """(mask, score) of the instances in ``order``, each skipped when it overlaps one already chosen with
    IoU > ``duplicate_iou``, at most ``max_candidates``."""
    chosen = []
    for i in order:
        if all(_iou(masks[i], m) <= duplicate_iou for m, _ in chosen):
            chosen.append((masks[i], float(scores[i])))
        if len(chosen) == max_candidates:
            break
    return chosen


def _masks_and_scores(instances, max_candidates):
    if max_candidates < 1:
        raise ValueError(f"max_candidates must be >= 1, got {max_candidates}")
    if not instances.has("pred_masks"):
        raise ValueError("the model predicts no instance masks (pred_masks): use an instance or panoptic model")
    return instances.pred_masks.to("cpu").numpy().astype(bool), instances.scores.to("cpu").numpy().astype(float)


def select_instances(instances, point_coords, point_labels, max_candidates=3, duplicate_iou=0.9,
                     union_fallback=True):
    """(mask, score) pairs, best first, of the ``instances`` (with pred_masks and scores) that answer
    the point prompt; see the module docstring for the rules. Masks are (H, W) bool numpy arrays.

    Raises:
        NoMatchingInstance: when no instance (nor union of instances) satisfies the prompt.
    """
    masks, scores = _masks_and_scores(instances, max_candidates)
    xy, positive = _validate_points(point_coords, point_labels, masks.shape[1:])
    hits = masks[:, xy[:, 1], xy[:, 0]]  # (instances, points): does instance i contain point j?
    clean = ~hits[:, ~positive].any(axis=1)  # contains no negative point

    order = sorted(np.flatnonzero(clean & hits[:, positive].all(axis=1)), key=lambda i: (-scores[i], masks[i].sum()))
    chosen = _distinct(order, masks, scores, max_candidates, duplicate_iou)
    if chosen:
        return chosen
    if union_fallback:
        members = []
        for j in np.flatnonzero(positive):
            containing = np.flatnonzero(clean & hits[:, j])
            if len(containing) == 0:
                break
            members.append(containing[np.argmax(scores[containing])])
        else:
            return [(masks[members].any(axis=0), float(scores[members].min()))]
    raise NoMatchingInstance(
        f"no instance contains all positive points while excluding the negative ones "
        f"({len(masks)} instances predicted; positive points {xy[positive].tolist()}, "
        f"negative points {xy[~positive].tolist()})"
    )


def select_by_box(instances, box, point_coords=None, point_labels=None, max_candidates=3, min_box_iou=0.5,
                  duplicate_iou=0.9):
    """(mask, score) pairs, best box IoU first, of the ``instances`` whose predicted box overlaps the prompt
    ``box`` (x0, y0, x1, y1) with IoU >= ``min_box_iou`` and, with points, whose mask contains every positive
    point and no negative one; near-duplicates skipped. Raises :class:`NoMatchingInstance` when none does."""
    masks, scores = _masks_and_scores(instances, max_candidates)
    prompt = torch.as_tensor(np.asarray(box, dtype=np.float32).reshape(1, 4))
    box_ious = pairwise_iou(Boxes(prompt), instances.pred_boxes.to("cpu"))[0].numpy().astype(float)
    fits = box_ious >= min_box_iou
    if point_coords is not None:
        xy, positive = _validate_points(point_coords, point_labels, masks.shape[1:], need_positive=False)
        hits = masks[:, xy[:, 1], xy[:, 0]]
        fits &= hits[:, positive].all(axis=1) & ~hits[:, ~positive].any(axis=1)
    order = sorted(np.flatnonzero(fits), key=lambda i: (-box_ious[i], -scores[i]))
    chosen = _distinct(order, masks, scores, max_candidates, duplicate_iou)
    if not chosen:
        points = "" if point_coords is None else " and answers the points"
        raise NoMatchingInstance(f"no instance's box overlaps the prompt box {np.asarray(box).tolist()} with IoU >= "
                                 f"{min_box_iou}{points} ({len(masks)} instances predicted)")
    return chosen


def model_outputs(predictor_or_model, image):
    """The outputs of a predictor (callable on an (H, W, C) image) or of a Detectron2 model in eval mode."""
    if isinstance(predictor_or_model, torch.nn.Module):
        # A model in eval mode takes Detectron2's batched inputs; the image must be in its INPUT.FORMAT.
        h, w = image.shape[:2]
        tensor = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)).astype(np.float32))
        with torch.no_grad():
            return predictor_or_model([{"image": tensor, "height": h, "width": w}])[0]
    return predictor_or_model(image)  # e.g. detectron2.engine.DefaultPredictor


def _instances_of(predictor_or_model, image):
    outputs = model_outputs(predictor_or_model, image)
    if "instances" not in outputs:
        raise ValueError(f"the model output has no 'instances' (keys: {sorted(outputs)}): use an instance "
                         f"or panoptic model")
    return outputs["instances"]


def predict_from_points(predictor_or_model, image, point_coords, point_labels, max_candidates=3, **kwargs):
    """Run ``predictor_or_model`` on ``image`` and return the instances that answer the point prompt.

    Args:
        predictor_or_model: a callable taking an (H, W, C) image (e.g. DefaultPredictor, which reads it in
            cfg.INPUT.FORMAT and resizes it), or a Detectron2 model (torch Module, in eval mode) called
            with ``[{"image": CHW tensor, "height": H, "width": W}]``.
        image: (H, W, C) numpy array.
        point_coords: (N, 2) (x, y) pixel coordinates; point_labels: (N,) 1 positive / 0 negative.
        max_candidates: at most this many (mask, score) pairs are returned, best first.
        kwargs: ``duplicate_iou``, ``union_fallback`` of :func:`select_instances`.

    Raises:
        NoMatchingInstance: no instance contains all positive points while excluding the negative ones.
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"image must be (H, W, C), got shape {image.shape}")
    instances = _instances_of(predictor_or_model, image)
    return select_instances(instances, point_coords, point_labels, max_candidates, **kwargs)
