"""Input checks shared by the evaluators and ``tools/evaluate.py``.

Every error names the file (or image) and the offending id, so a bad results file is fixed in one go
instead of surfacing as a KeyError deep inside an evaluation engine. COCO instances inputs are checked in
:mod:`seg_d2.evaluation.coco_inputs`, on the record checks of :mod:`seg_d2.data.coco_checks`.
"""
import contextlib
import gc
import json
import os
from collections import Counter

import msgspec

from seg_d2.data.coco_checks import COCOFormatError


class EvaluationInputError(COCOFormatError):
    """Ground truth or predictions that cannot be evaluated; the message names the file and the id."""


@contextlib.contextmanager
def as_input_error():
    """Re-raise the record checks' COCOFormatError as EvaluationInputError, the one error evaluation raises."""
    try:
        yield
    except EvaluationInputError:
        raise
    except COCOFormatError as e:
        raise EvaluationInputError(str(e)) from e


@contextlib.contextmanager
def gc_paused():
    """Parsing and checking create a container per JSON object; with a large heap (torch, Detectron2
    imported) the full collections they trigger cost more than the work itself, and none is garbage."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def read_bytes(path):
    """A file's bytes; a missing one is an EvaluationInputError naming it."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError as e:
        raise EvaluationInputError(f"{path}: file not found") from e


def load_json(path_or_dict):
    """Load a JSON file with a clear error for a missing or malformed file; dicts/lists pass through.

    msgspec parses (3-4x Python's json here, bench/bench_evaluation.py); what it refuses goes to Python's
    json: its NaN/Infinity tokens and numbers beyond 64 bits, which the checks then name, and its error
    messages for really malformed files (msgspec raises a bare UnicodeDecodeError on invalid UTF-8).
    """
    if not isinstance(path_or_dict, (str, os.PathLike)):
        return path_or_dict
    data = read_bytes(path_or_dict)
    with gc_paused():
        try:
            return msgspec.json.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
            pass
        try:
            return json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise EvaluationInputError(f"{path_or_dict}: malformed JSON ({e})") from e


def check_unique(ids, what, source):
    """Raise on the first repeated id."""
    if len(set(ids)) == len(ids):
        return
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
