"""Panoptic Quality (Kirillov et al., "Panoptic Segmentation", CVPR 2019), exact and fast.

The numbers equal panopticapi's ``pq_compute`` (the reference, kept as the test oracle), including its
conventions: a ground-truth segment's area is the ``area`` of its JSON entry when present; a predicted
segment is ignored (neither TP nor FP) when more than half of it lies on VOID pixels or on the crowd
region of its own category; categories with no TP, FP nor FN are left out of the averages.

Where panopticapi loops in Python over every (gt, pred) pair, this module builds one small
intersection matrix per image with a single ``bincount`` over densified segment indices, and matches
with array operations. Images run in parallel in a context-managed thread pool, so repeated
evaluations (one per training eval period) leak no workers.
"""
import contextlib
import functools
import importlib
import os
import queue
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

from .panoptic_png import (  # noqa: F401 - rgb2id re-exported
    png_size,
    read_panoptic_png,
    read_png_rows,
    rgb2id,
    segment_pair_counts,
)
from .validation import (
    EvaluationInputError,
    check_panoptic_png,
    check_segments_info,
    load_json,
    match_panoptic_annotations,
)

VOID = 0
# Panoptic PNGs hold 24-bit ids (R + 256 G + 256^2 B); ids at or above this need the slow mapping path.
_LUT_SIZE = 1 << 24
# free id -> label tables by dtype: uint16 (up to 65533 segments; half the memory, and uint16 labels make the
# pair key without a widening cast) or int32 (more segments)
_FREE_LUTS = {np.uint16: queue.SimpleQueue(), np.int32: queue.SimpleQueue()}
PQ_ENGINES = ("auto", "seg_d2", "hotcoco")


@dataclass
class PQStats:
    """Per-category sums over images: matched IoU, TP, FP, FN (arrays aligned with ``category_ids``)."""

    category_ids: np.ndarray
    iou: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray

    @classmethod
    def zeros(cls, category_ids):
        ids = np.asarray(category_ids, dtype=np.int64)
        n = len(ids)
        return cls(ids, np.zeros(n), np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64))

    def __iadd__(self, other):
        if not np.array_equal(self.category_ids, other.category_ids):
            raise ValueError("PQStats over different category lists cannot be summed")
        self.iou += other.iou
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        return self

    def summarize(self, categories):
        """Reduce to panopticapi's result layout.

        Args:
            categories (list[dict]): with "id" and "isthing"; the averages run over these.
        Returns:
            dict: {"All"|"Things"|"Stuff": {"pq","sq","rq","n"}, "per_class": {cat_id: {"pq","sq","rq"}}}.
            An average over zero categories is NaN (panopticapi divides by zero there).
        """
        index = {int(c): i for i, c in enumerate(self.category_ids)}
        per_class = {}
        for cat in categories:
            i = index[int(cat["id"])]
            iou, tp, fp, fn = float(self.iou[i]), int(self.tp[i]), int(self.fp[i]), int(self.fn[i])
            denom = tp + 0.5 * fp + 0.5 * fn
            if denom == 0:
                per_class[cat["id"]] = {"pq": 0.0, "sq": 0.0, "rq": 0.0, "valid": False}
                continue
            per_class[cat["id"]] = {
                "pq": iou / denom,
                "sq": iou / tp if tp != 0 else 0,
                "rq": tp / denom,
                "valid": True,
            }
        results = {}
        for name, isthing in (("All", None), ("Things", True), ("Stuff", False)):
            rows = [
                per_class[c["id"]]
                for c in categories
                if per_class[c["id"]]["valid"] and (isthing is None or (c.get("isthing", 0) == 1) == isthing)
            ]
            n = len(rows)
            results[name] = {k: (sum(r[k] for r in rows) / n if n else float("nan")) for k in ("pq", "sq", "rq")}
            results[name]["n"] = n
        results["per_class"] = {c: {k: v[k] for k in ("pq", "sq", "rq")} for c, v in per_class.items()}
        return results


@contextlib.contextmanager
def _borrowed_lut(dtype):
    """An all-zero id -> label table, kept for reuse: one per concurrent image, not one per thread or call."""
    free = _FREE_LUTS[dtype]
    try:
        lut = free.get_nowait()
    except queue.Empty:
        lut = np.zeros(_LUT_SIZE, dtype=dtype)
    try:
        yield lut
    finally:
        free.put(lut)


def dense_labels(id_map, segment_ids, ids_fit=False):
    """Label each pixel: 0 = id listed nowhere, 1 = VOID, 2 + i = ``segment_ids[i]`` (ids must be > 0).

    A lookup table is one gather per pixel (no sort). Its "listed nowhere" entries are 0, so it is
    allocated zeroed (untouched pages cost no memory). Ids beyond 24 bits fall back to a binary search.
    Labels are uint16 when they fit (up to 65533 segments), else int32: half the memory traffic of int32,
    and the pair key of :func:`_joint_counts` is then formed without a widening cast.

    Args:
        ids_fit (bool): the caller knows every id is in [0, 2^24) (as :func:`read_panoptic_png` returns
            them); skips the min/max scan of ``id_map``.
    """
    segment_ids = np.asarray(segment_ids, dtype=np.int64)
    dtype = np.uint16 if len(segment_ids) + 2 <= np.iinfo(np.uint16).max else np.int32
    labels = np.arange(2, len(segment_ids) + 2, dtype=dtype)
    if not ids_fit:
        ids_fit = not id_map.size or (
            (id_map.dtype.kind == "u" or int(id_map.min()) >= 0) and int(id_map.max()) < _LUT_SIZE
        )
    if not ids_fit or (segment_ids.size and segment_ids.max() >= _LUT_SIZE):
        order = np.argsort(segment_ids)
        sorted_ids = segment_ids[order]
        pos = np.searchsorted(sorted_ids, id_map).clip(max=max(len(sorted_ids) - 1, 0))
        found = sorted_ids[pos] == id_map if len(sorted_ids) else np.zeros(id_map.shape, bool)
        dense = np.where(found, labels[order][pos] if len(sorted_ids) else 0, 0).astype(dtype)
        dense[id_map == VOID] = 1
        return dense
    with _borrowed_lut(dtype) as lut:
        try:
            lut[VOID] = 1
            lut[segment_ids] = labels
            return lut.take(id_map)
        finally:
            lut[segment_ids] = 0
            lut[VOID] = 0


def compact_labels(labels, num_segments):
    """``labels`` (from :func:`dense_labels`) in the smallest unsigned dtype that holds them, for caching."""
    for dtype in (np.uint8, np.uint16):
        if num_segments + 1 <= np.iinfo(dtype).max:
            return labels.astype(dtype, copy=False)
    return labels


def _joint_counts(gt_labels, pred_labels, rows, cols):
    """(rows, cols) pixel counts of each (gt label, pred label) pair.

    OpenCV's histogram of a uint16 pair key is about 4x faster than ``np.bincount`` of an int64 one; its
    float32 counts are exact below 2^24 pixels, so larger images (or > 65536 pairs) take bincount.
    """
    if rows * cols <= 1 << 16 and 0 < gt_labels.size < 1 << 24:
        key = gt_labels.astype(np.uint16)
        key *= cols
        np.add(key, pred_labels, out=key, casting="unsafe")
        counts = cv2.calcHist([key], [0], None, [rows * cols], [0, rows * cols])
        return counts.reshape(rows, cols).astype(np.int64)
    key = gt_labels * np.intp(cols)
    key += pred_labels
    return np.bincount(key.ravel(), minlength=rows * cols).reshape(rows, cols)


def pq_image_stats(gt_ids, gt_segments, pred_ids, pred_segments, category_ids, image_id=None, ids_fit=False):
    """PQ sums of one image.

    Args:
        gt_ids, pred_ids (ndarray[H, W] int): segment id per pixel (0 = VOID).
        gt_segments, pred_segments (list[dict]): "id", "category_id" (and gt "iscrowd", optional "area").
        category_ids (array-like): the dataset's category ids, in the order of the returned arrays.
        image_id: named in error messages.
        ids_fit (bool): both id maps are known to hold ids in [0, 2^24) (see :func:`dense_labels`).
    Returns:
        PQStats
    """
    check_segments_info(gt_segments, category_ids, image_id, "ground truth")
    gt_labels = dense_labels(gt_ids, [s["id"] for s in gt_segments], ids_fit)
    return pq_label_stats(gt_labels, gt_segments, pred_ids, pred_segments, category_ids, image_id, ids_fit)


def pq_label_stats(gt_labels, gt_segments, pred_ids, pred_segments, category_ids, image_id=None, ids_fit=False):
    """:func:`pq_image_stats` with the ground truth already labelled by :func:`dense_labels` (any int dtype)."""
    check_segments_info(pred_segments, category_ids, image_id, "prediction")
    if gt_labels.shape != pred_ids.shape:
        raise EvaluationInputError(
            f"image {image_id}: prediction is {pred_ids.shape[1]}x{pred_ids.shape[0]} but ground truth is "
            f"{gt_labels.shape[1]}x{gt_labels.shape[0]} (width x height)"
        )
    ng, npred = len(gt_segments), len(pred_segments)
    pred_labels = dense_labels(pred_ids, [s["id"] for s in pred_segments], ids_fit)
    # rows / cols: ids listed nowhere, VOID, then the gt / pred segments
    inter = _joint_counts(gt_labels, pred_labels, ng + 2, npred + 2)
    if inter[:, 0].any():
        unlisted = np.unique(pred_ids[pred_labels == 0]).tolist()
        raise EvaluationInputError(
            f"image {image_id}: prediction segment ids {unlisted[:10]} are in the PNG but not in segments_info"
        )
    return pq_from_counts(inter, gt_segments, pred_segments, category_ids, image_id)


def pq_from_counts(inter, gt_segments, pred_segments, category_ids, image_id=None):
    """PQ sums of one image from its pixel counts of (gt label, pred label) pairs, labelled as by
    :func:`dense_labels` (row / column 0: ids listed nowhere, 1: VOID, 2 + i: the i-th segment)."""
    npred = len(pred_segments)
    pred_area = inter[:, 2:].sum(0)
    if npred and (pred_area == 0).any():
        missing = [pred_segments[i]["id"] for i in np.flatnonzero(pred_area == 0)]
        raise EvaluationInputError(
            f"image {image_id}: prediction segment ids {missing[:10]} are in segments_info but not in the PNG"
        )

    cat_index = {int(c): i for i, c in enumerate(category_ids)}
    n = len(cat_index)
    gt_cat = np.array([cat_index[int(s["category_id"])] for s in gt_segments], dtype=np.int64)
    pred_cat = np.array([cat_index[int(s["category_id"])] for s in pred_segments], dtype=np.int64)
    gt_crowd = np.array([s.get("iscrowd", 0) == 1 for s in gt_segments], dtype=bool)
    gt_area = np.array(
        [s["area"] if "area" in s else inter[i + 2].sum() for i, s in enumerate(gt_segments)], dtype=np.float64
    )
    void_pred = inter[1, 2:]
    pair = inter[2:, 2:]

    union = pred_area[None, :] + gt_area[:, None] - pair - void_pred[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(pair > 0, pair / np.where(union > 0, union, 1), 0.0)
    matched = (iou > 0.5) & (gt_cat[:, None] == pred_cat[None, :]) & ~gt_crowd[:, None]

    stats = PQStats.zeros(category_ids)
    gi, pi = np.nonzero(matched)
    stats.tp += np.bincount(gt_cat[gi], minlength=n)
    stats.iou += np.bincount(gt_cat[gi], weights=iou[gi, pi], minlength=n)
    stats.fn += np.bincount(gt_cat[~matched.any(1) & ~gt_crowd], minlength=n)

    # like panopticapi, the last crowd segment of a category is its crowd region
    crowd_of = np.full(n, -1)
    np.maximum.at(crowd_of, gt_cat[gt_crowd], np.flatnonzero(gt_crowd))
    unmatched = np.flatnonzero(~matched.any(0))
    crowd = crowd_of[pred_cat[unmatched]]
    ignored = void_pred[unmatched].astype(np.float64)
    ignored[crowd >= 0] += pair[crowd[crowd >= 0], unmatched[crowd >= 0]]
    fp = unmatched[ignored / pred_area[unmatched] <= 0.5]
    stats.fp += np.bincount(pred_cat[fp], minlength=n)
    return stats


def _pair_stats(pair, gt_folder, pred_folder, images, category_ids):
    """PQ stats of one (gt_ann, pred_ann) pair read from PNG folders."""
    gt_ann, pred_ann = pair
    gt_path = os.path.join(gt_folder, gt_ann["file_name"])
    pred_path = os.path.join(pred_folder, pred_ann["file_name"])
    image = images.get(gt_ann["image_id"])
    streamed = _streamed_pair_stats(gt_ann, pred_ann, gt_path, pred_path, image, category_ids)
    if streamed is not None:
        return streamed
    gt_ids = read_panoptic_png(gt_path)
    pred_ids = read_panoptic_png(pred_path)
    check_panoptic_png(gt_ids, image, gt_path)
    check_panoptic_png(pred_ids, image or {"width": gt_ids.shape[1], "height": gt_ids.shape[0]}, pred_path)
    return pq_image_stats(
        gt_ids, gt_ann["segments_info"], pred_ids, pred_ann["segments_info"], category_ids, gt_ann["image_id"],
        ids_fit=True,  # read_panoptic_png's ids are 24-bit
    )


def _streamed_pair_stats(gt_ann, pred_ann, gt_path, pred_path, image, category_ids):
    """The pair's PQ stats counted straight from both PNGs' rows (no id maps), or None where the array path
    must run: PNGs the stream reader does not take, sizes that differ, ids listed nowhere (whose error message
    the array path words), segment ids beyond 24 bits."""
    gt_segments, pred_segments = gt_ann["segments_info"], pred_ann["segments_info"]
    image_id = gt_ann["image_id"]
    check_segments_info(gt_segments, category_ids, image_id, "ground truth")
    check_segments_info(pred_segments, category_ids, image_id, "prediction")
    gt_ids, pred_ids = [s["id"] for s in gt_segments], [s["id"] for s in pred_segments]
    if max(gt_ids + pred_ids, default=0) >= _LUT_SIZE:
        return None
    gt_rows, pred_rows = read_png_rows(gt_path), read_png_rows(pred_path)
    if gt_rows is None or pred_rows is None:
        return None
    size = (gt_rows.height, gt_rows.width)
    if size != (pred_rows.height, pred_rows.width) or (image and size != (image.get("height"), image.get("width"))):
        return None
    try:
        inter = segment_pair_counts(gt_rows, pred_rows, gt_ids, pred_ids)
    except ValueError as e:
        raise EvaluationInputError(f"{gt_path} / {pred_path}: corrupt PNG ({e})") from e
    if inter[:, 0].any():
        return None
    return pq_from_counts(inter, gt_segments, pred_segments, category_ids, image_id)


def pq_compute_pairs(pairs, gt_folder, pred_folder, categories, images=None, num_workers=None):
    """Sum PQ stats over matched (gt annotation, pred annotation) pairs, in parallel over images.

    Threads rather than processes: PNG decoding and the per-pixel array work release the GIL, and
    threads start instantly and share the lookup tables.

    Args:
        num_workers (int): threads; default ``os.cpu_count()`` (as panopticapi's processes); 0 or 1 runs in-line.
    Returns:
        PQStats
    """
    category_ids = [c["id"] for c in categories]
    score = functools.partial(
        _pair_stats, gt_folder=gt_folder, pred_folder=pred_folder, images=images or {}, category_ids=category_ids
    )
    num_workers = os.cpu_count() if num_workers is None else num_workers
    total = PQStats.zeros(category_ids)
    with ThreadPoolExecutor(max(1, num_workers)) as pool:
        for stats in pool.map(score, pairs) if num_workers > 1 else map(score, pairs):
            total += stats
    return total


def pq_compute(gt_json, pred_json, gt_folder=None, pred_folder=None, num_workers=None, engine="auto"):
    """PQ from COCO panoptic JSON + PNG folders; same arguments and result layout as panopticapi's.

    Args:
        gt_json, pred_json (str or dict): paths to the JSON files, or their loaded contents.
        gt_folder, pred_folder (str): PNG folders; default: the JSON path without ".json".
        engine (str): "seg_d2" (:mod:`.panoptic_png` decoding, ``num_workers`` threads), "hotcoco" (its
            Rust engine), or "auto": hotcoco when installed. Either way seg_d2
            checks the input first, and any input hotcoco rejects is re-run by seg_d2, whose error names it.
    Returns:
        dict: see :meth:`PQStats.summarize`.
    """
    if engine not in PQ_ENGINES:
        raise ValueError(f"unknown PQ engine {engine!r}; choose from {PQ_ENGINES}")
    gt_folder = gt_folder or _default_folder(gt_json, "ground truth")
    pred_folder = pred_folder or _default_folder(pred_json, "prediction")
    gt, pred = load_json(gt_json), load_json(pred_json)
    pairs, images, categories = match_panoptic_annotations(gt, pred, _name(gt_json), _name(pred_json))
    for folder in (gt_folder, pred_folder):
        if not os.path.isdir(folder):
            raise EvaluationInputError(f"{folder}: PNG folder does not exist")
    stats = None
    if engine != "seg_d2" and _hotcoco_available(engine):
        stats = _try_hotcoco(gt, pred, pairs, images, categories, gt_folder, pred_folder)
    if stats is None:
        stats = pq_compute_pairs(pairs, gt_folder, pred_folder, categories, images, num_workers)
    return stats.summarize(categories)


def _hotcoco_available(engine):
    try:
        importlib.import_module("hotcoco.panoptic")
        return True
    except ImportError:
        if engine == "hotcoco":
            raise
        return False


def _hotcoco_can_take(pairs, images, categories, gt_folder):
    """Run the checks hotcoco does not make (duplicate ids, ground-truth PNG size vs image entry).

    Bad segment lists raise here, with seg_d2's messages; PNGs of the wrong size return False, so that
    seg_d2's engine reports them. hotcoco itself refuses a prediction whose size differs from its ground truth.
    """
    category_ids = [c["id"] for c in categories]
    for gt_ann, pred_ann in pairs:
        image_id = gt_ann["image_id"]
        check_segments_info(gt_ann["segments_info"], category_ids, image_id, "ground truth")
        check_segments_info(pred_ann["segments_info"], category_ids, image_id, "prediction")
        image = images.get(image_id) or {}
        if png_size(os.path.join(gt_folder, gt_ann["file_name"])) != (image.get("height"), image.get("width")):
            return False
    return True


def _try_hotcoco(gt, pred, pairs, images, categories, gt_folder, pred_folder):
    """hotcoco's PQ sums, or None where seg_d2's engine must judge the input."""
    if not _hotcoco_can_take(pairs, images, categories, gt_folder):
        return None
    try:
        return _hotcoco_stats(gt, pred, gt_folder, pred_folder, [c["id"] for c in categories])
    except Exception:  # noqa: BLE001 - whatever hotcoco refuses, seg_d2's engine rejects with a precise message
        return None


def _hotcoco_stats(gt, pred, gt_folder, pred_folder, category_ids):
    """Per-category PQ sums from hotcoco's engine."""
    from hotcoco.panoptic import PanopticEval

    ev = PanopticEval(gt, pred, gt_folder=gt_folder, pred_folder=pred_folder)
    ev.evaluate()
    per_class = ev.results()["per_class"]
    rows = [per_class.get(c, {}) for c in category_ids]
    stats = PQStats.zeros(category_ids)
    stats.iou += [r.get("iou", 0.0) for r in rows]
    for name in ("tp", "fp", "fn"):
        getattr(stats, name)[:] = [r.get(name, 0) for r in rows]
    return stats


def _name(json_or_dict):
    return json_or_dict if isinstance(json_or_dict, (str, os.PathLike)) else "<dict>"


def _default_folder(json_path, what):
    # panopticapi's convention: the PNGs of "x.json" live in the folder "x"
    if not isinstance(json_path, (str, os.PathLike)) or not os.fspath(json_path).endswith(".json"):
        raise EvaluationInputError(f"{what}: give the PNG folder (it cannot be derived from {_name(json_path)})")
    return os.fspath(json_path)[: -len(".json")]
