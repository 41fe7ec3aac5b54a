"""Input checks shared by the evaluators and ``tools/evaluate.py``.

Every error names the file (or image) and the offending id, so a bad results file is fixed in one go
instead of surfacing as a KeyError deep inside an evaluation engine.
"""
import json
import os
from collections import Counter
from operator import itemgetter


class EvaluationInputError(ValueError):
    """Ground truth or predictions that cannot be evaluated; the message names the file and the id."""


def load_json(path_or_dict):
    """Load a JSON file with a clear error for a missing or malformed file; dicts/lists pass through."""
    if not isinstance(path_or_dict, (str, os.PathLike)):
        return path_or_dict
    try:
        with open(path_or_dict) as f:
            return json.load(f)
    except FileNotFoundError as e:
        raise EvaluationInputError(f"{path_or_dict}: file not found") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EvaluationInputError(f"{path_or_dict}: malformed JSON ({e})") from e


def check_unique(ids, what, source):
    """Raise on the first repeated id."""
    dup = [i for i, n in Counter(ids).items() if n > 1]
    if dup:
        raise EvaluationInputError(f"{source}: duplicate {what} id {dup[0]}")


def require_keys(obj, keys, where):
    missing = [k for k in keys if k not in obj]
    if missing:
        raise EvaluationInputError(f"{where}: missing key(s) {missing}")


def check_segments_info(segments, category_ids, image_id, what):
    """Segment ids must be unique and non-zero (0 is VOID) and use known categories.

    Two entries with one id would claim the same pixels: overlapping segments, which PQ cannot score.
    """
    ids = [s["id"] for s in segments]
    dup = [i for i, n in Counter(ids).items() if n > 1]
    if dup:
        raise EvaluationInputError(
            f"image {image_id}: {what} segment id {dup[0]} is listed twice (overlapping segments)"
        )
    known = set(int(c) for c in category_ids)
    for s in segments:
        if s["id"] <= 0:
            raise EvaluationInputError(f"image {image_id}: {what} segment id {s['id']} is not positive (0 is VOID)")
        if int(s["category_id"]) not in known:
            raise EvaluationInputError(
                f"image {image_id}: {what} segment {s['id']} has category id {s['category_id']} "
                "not in the ground truth"
            )


def check_panoptic_png(id_map, image, path):
    """A PNG must have the size of its image entry (when the entry gives one)."""
    if image and "height" in image and "width" in image:
        if id_map.shape[:2] != (image["height"], image["width"]):
            raise EvaluationInputError(
                f"{path}: PNG is {id_map.shape[1]}x{id_map.shape[0]} but image {image['id']} is "
                f"{image['width']}x{image['height']} (width x height)"
            )


def match_panoptic_annotations(gt, pred, gt_source, pred_source):
    """Pair each ground-truth panoptic annotation with its prediction, checking ids on the way.

    Returns:
        (list[(gt_ann, pred_ann)], {image_id: image}, categories)
    """
    for obj, src in ((gt, gt_source), (pred, pred_source)):
        if not isinstance(obj, dict) or "annotations" not in obj:
            raise EvaluationInputError(f"{src}: not a COCO panoptic JSON (no 'annotations' list)")
    require_keys(gt, ["categories"], gt_source)
    categories = gt["categories"]
    check_unique([c["id"] for c in categories], "category", gt_source)
    images = {im["id"]: im for im in gt.get("images", [])}
    check_unique([im["id"] for im in gt.get("images", [])], "image", gt_source)
    for anns, src in ((gt["annotations"], gt_source), (pred["annotations"], pred_source)):
        for a in anns:
            require_keys(a, ["image_id", "file_name", "segments_info"], f"{src}: annotation")
        check_unique([a["image_id"] for a in anns], "annotation image", src)
    gt_by_image = {a["image_id"]: a for a in gt["annotations"]}
    for a in pred["annotations"]:
        if a["image_id"] not in gt_by_image:
            raise EvaluationInputError(f"{pred_source}: image id {a['image_id']} is not in the ground truth")
    pred_by_image = {a["image_id"]: a for a in pred["annotations"]}
    missing = [i for i in gt_by_image if i not in pred_by_image]
    if missing:
        raise EvaluationInputError(f"{pred_source}: no prediction for ground-truth image id {missing[0]}")
    return [(a, pred_by_image[a["image_id"]]) for a in gt["annotations"]], images, categories


def check_coco_results(results, gt_dataset, source, extra_keys=(), missing_suffix=""):
    """Detections must refer to ground-truth image and category ids and carry the needed fields.

    ``extra_keys`` are further required fields (e.g. "segmentation"). One C-level pass gathers the ids
    and set differences check them; only bad input takes the slow loop that names the first offender.
    """
    if not isinstance(results, list):
        raise EvaluationInputError(f"{source}: a COCO results file must hold a JSON list")
    image_ids = {im["id"] for im in gt_dataset.get("images", [])}
    category_ids = {c["id"] for c in gt_dataset.get("categories", [])}
    keys = ("image_id", "category_id", "score") + tuple(extra_keys)
    try:
        cols = list(zip(*map(itemgetter(*keys), results)))
        bad = bool(cols) and not (set(cols[0]) <= image_ids and set(cols[1]) <= category_ids)
    except (KeyError, TypeError):
        bad = True
    if bad:
        _first_bad_result(results, image_ids, category_ids, keys, source, missing_suffix)


def _first_bad_result(results, image_ids, category_ids, keys, source, missing_suffix):
    """Raise for the first detection that lacks a field or names an unknown image / category id."""
    for k, r in enumerate(results):
        require_keys(r, keys[:3], f"{source}: detection #{k}")
        if r["image_id"] not in image_ids:
            raise EvaluationInputError(f"{source}: detection #{k} has image id {r['image_id']} not in the ground truth")
        if r["category_id"] not in category_ids:
            raise EvaluationInputError(
                f"{source}: detection #{k} has category id {r['category_id']} not in the ground truth"
            )
    for k, r in enumerate(results):
        for key in keys[3:]:
            if key not in r:
                raise EvaluationInputError(f"{source}: detection #{k} has no '{key}'{missing_suffix}")


def check_coco_ground_truth(dataset, source):
    """Unique image/category/annotation ids in a COCO instances ground truth."""
    if not isinstance(dataset, dict):
        raise EvaluationInputError(f"{source}: a COCO ground truth must be a JSON object")
    require_keys(dataset, ["images", "categories"], source)
    check_unique([im["id"] for im in dataset["images"]], "image", source)
    check_unique([c["id"] for c in dataset["categories"]], "category", source)
    check_unique([a["id"] for a in dataset.get("annotations", [])], "annotation", source)
