"""What every COCO engine is given: a checked ground truth and checked results, the same for each engine.

The engines disagree on inputs COCO leaves loose (NaN scores, float ids, 4-number polygons, RLE sizes, ...)
and pycocotools' COCOeval scores a match to ground-truth annotation id 0 as no match (its match arrays
use 0 for "unmatched": cocodataset/cocoapi#664, pytorch/vision#1530). So seg_d2 checks every record
against :mod:`seg_d2.data.coco_checks` (an error names the file and the id) and evaluates as if
annotation ids were unique and non-zero: ids are renumbered 1..N internally when one is 0, with an
:class:`AnnotationIdZeroWarning` naming the file.

The checks are columnar: one C-level pass per field (types, id sets, finite values, RLE sizes) clears
well-formed input; anything it cannot clear goes through the record checks one by one, which define
what is accepted and word the error. A results file is first decoded against a typed schema (msgspec,
no dict per detection); when that and the columnar pass clear it, an engine that reads files natively
(hotcoco, ultrafast) is handed the path and parses it itself, faster than from Python dicts.
"""
import os
import warnings
from itertools import chain
from operator import attrgetter, countOf, itemgetter
from typing import Annotated, NamedTuple, Union

import msgspec
import numpy as np
from pycocotools import mask as mask_util

from seg_d2.data.coco_checks import (
    check_area,
    check_bbox,
    check_category_names,
    check_id,
    check_score,
    check_segmentation,
)

from .validation import EvaluationInputError, as_input_error, check_unique, load_json, read_bytes, require_keys

_INT = frozenset((int,))
_NUMBER = frozenset((int, float))
_COUNTS = frozenset((str, bytes))  # compressed RLE: as in JSON, or pycocotools' own in-memory bytes


class AnnotationIdZeroWarning(UserWarning):
    """The ground truth has annotation id 0, which pycocotools' COCOeval itself would score differently."""


def _only(values, types):
    return set(map(type, values)) <= types


def _finite(values):
    """Numbers, all finite (one C-level pass each)."""
    values = list(values)
    return _only(values, _NUMBER) and bool(np.isfinite(np.fromiter(values, np.float64, len(values))).all())


def _size(image):
    size = [image.get("height"), image.get("width")]
    return size if _only(size, _INT) and min(size) > 0 else None


class _Index:
    """The ground truth's image ids, category ids and image sizes ([height, width]; None unless positive ints)."""

    def __init__(self, dataset):
        self.image_ids = {im["id"] for im in dataset["images"]}
        self.category_ids = {c["id"] for c in dataset["categories"]}
        self.sizes = {im["id"]: _size(im) for im in dataset["images"]}

    def known(self, image_ids, category_ids):
        return (_only(image_ids, _INT) and _only(category_ids, _INT)
                and set(image_ids) <= self.image_ids and set(category_ids) <= self.category_ids)


def _boxes_clear(boxes):
    """Every box four finite numbers with width and height >= 0."""
    if not (_only(boxes, frozenset((list, tuple))) and set(map(len, boxes)) == {4}
            and _finite(chain.from_iterable(boxes))):
        return False
    return bool((np.asarray(boxes, dtype=np.float64)[:, 2:] >= 0).all())


def _masks_clear(image_ids, masks, index, allow_empty):
    """RLE dicts with string counts and their image's integer size, or lists of polygons (each an even
    number, at least 6, of finite numbers; an empty list only when ``allow_empty``)."""
    if _only(masks, frozenset((dict,))):
        return _rles_clear(image_ids, masks, index)
    is_rle = [type(m) is dict for m in masks]
    rles = [m for m, r in zip(masks, is_rle) if r]
    polygons = [m for m, r in zip(masks, is_rle) if not r]
    return _rles_clear([i for i, r in zip(image_ids, is_rle) if r], rles, index) and _polygons_clear(
        polygons, allow_empty)


def _rles_clear(image_ids, rles, index):
    try:
        sizes = list(map(itemgetter("size"), rles))
        counts = list(map(itemgetter("counts"), rles))
    except (KeyError, TypeError):
        return False
    return (_only(counts, _COUNTS) and _only(chain.from_iterable(sizes), _INT)
            and sizes == list(map(index.sizes.__getitem__, image_ids)))


def _polygons_clear(polygons, allow_empty):
    if not polygons:
        return True
    if not _only(polygons, frozenset((list,))) or not (allow_empty or min(map(len, polygons))):
        return False
    rings = list(chain.from_iterable(polygons))
    if not _only(rings, frozenset((list,))):
        return False
    lengths = np.fromiter(map(len, rings), np.int64, len(rings))
    return bool((lengths >= 6).all() and (lengths % 2 == 0).all()) and _finite(chain.from_iterable(rings))


def _geometry_columns(records):
    """Each record's "bbox" and "segmentation", msgspec.UNSET where it has none."""
    unset = msgspec.UNSET
    return [r.get("bbox", unset) for r in records], [r.get("segmentation", unset) for r in records]


def _geometry_clear(image_ids, boxes, masks, index, iou_type, is_results):
    """Boxes and masks that are given are well formed; the one ``iou_type`` scores is given for all; for
    results' mask AP, boxes are given for all or none."""
    unset = msgspec.UNSET
    given_boxes = [b for b in boxes if b is not unset]
    with_mask = [m is not unset for m in masks]
    n = len(boxes)
    if iou_type == "bbox" and len(given_boxes) < n or iou_type == "segm" and not all(with_mask):
        return False
    if is_results and iou_type == "segm" and 0 < len(given_boxes) < n:
        return False
    if given_boxes and not _boxes_clear(given_boxes):
        return False
    if iou_type == "segm" and not all(map(index.sizes.__getitem__, set(image_ids))):
        return False
    mask_ids = [i for i, w in zip(image_ids, with_mask) if w]
    return _masks_clear(mask_ids, [m for m in masks if m is not unset], index, allow_empty=is_results)


# ---------------------------------------------------------------------------------------------- ground truth
def ground_truth(gt, iou_type, source=None):
    """The ground truth (a JSON path, a dict or a COCO API object) checked for ``iou_type``, as a dict
    every engine reads alike. Messages name ``source``, else the path, else "ground truth"."""
    source = source or (os.fspath(gt) if isinstance(gt, (str, os.PathLike)) else "ground truth")
    dataset = gt.dataset if hasattr(gt, "dataset") else load_json(gt)
    with as_input_error():
        check_ground_truth(dataset, source, iou_type)
    return _engine_ready(dataset, source)


def check_ground_truth(dataset, source, iou_type):
    """Unique integer ids; string category names; annotations on known images and categories, each with a
    finite area, a box for ``bbox``, a non-empty mask for ``segm`` (on an image with a height and width),
    any box or mask they have well formed, an RLE the size of its image."""
    if not isinstance(dataset, dict):
        raise EvaluationInputError(f"{source}: a COCO ground truth must be a JSON object")
    require_keys(dataset, ["images", "categories"], source)
    for key, what in (("images", "image"), ("categories", "category")):
        for record in dataset[key]:
            check_id(record.get("id"), what, f"{source}: {key}")
        check_unique([r["id"] for r in dataset[key]], what, source)
    check_category_names(dataset["categories"], source)
    annotations = dataset.get("annotations", [])
    index = _Index(dataset)
    if not _annotations_clear(annotations, index, iou_type):
        for a in annotations:
            check_id(a.get("id"), "annotation", f"{source}: annotations")
            _check_annotation(a, index, f"{source}: annotation id {a['id']}", iou_type)
    check_unique([a["id"] for a in annotations], "annotation", source)


def _annotations_clear(annotations, index, iou_type):
    if not annotations:
        return True
    try:
        ids, image_ids, category_ids, areas = zip(*map(itemgetter("id", "image_id", "category_id", "area"), annotations))
    except (KeyError, TypeError):
        return False
    if not (_only(ids, _INT) and min(ids) >= 0 and index.known(image_ids, category_ids) and _finite(areas)
            and min(areas) >= 0):
        return False
    return _geometry_clear(image_ids, *_geometry_columns(annotations), index, iou_type, is_results=False)


def _check_annotation(a, index, where, iou_type):
    require_keys(a, ["image_id", "category_id", "area"], where)
    _check_ids(a, index, where)
    check_area(a["area"], where)
    _check_geometry(a, index, where, iou_type)
    if iou_type == "segm" and a["segmentation"] == []:
        raise EvaluationInputError(f"{where}: empty 'segmentation' (no polygon): nothing to score for mask AP")


def _check_ids(record, index, where):
    check_id(record["image_id"], "image", where)
    check_id(record["category_id"], "category", where)
    if record["image_id"] not in index.image_ids:
        raise EvaluationInputError(f"{where}: image id {record['image_id']} is not in the ground truth's images")
    if record["category_id"] not in index.category_ids:
        raise EvaluationInputError(
            f"{where}: category id {record['category_id']} is not in the ground truth's categories")


def _check_geometry(record, index, where, iou_type):
    """The record's box and mask, where it has them or ``iou_type`` needs them."""
    key = "bbox" if iou_type == "bbox" else "segmentation"
    if key not in record:
        raise EvaluationInputError(f"{where}: no '{key}' for {iou_type} AP")
    if "bbox" in record:
        check_bbox(record["bbox"], where)
    if "segmentation" in record:
        size = index.sizes[record["image_id"]]
        if iou_type == "segm" and size is None:
            raise EvaluationInputError(
                f"{where}: image id {record['image_id']} needs an integer 'height' and 'width' for mask AP")
        check_segmentation(record["segmentation"], where, *(size or (None, None)))


def _engine_ready(dataset, source):
    """``dataset``, or a copy whose annotations have ids 1..N (when one is 0) and ``iscrowd`` (0 where
    missing, Detectron2's load_coco_json default; pycocotools' evaluate() needs the key)."""
    annotations = dataset.get("annotations", [])
    renumber = bool(annotations) and min(map(itemgetter("id"), annotations)) == 0
    fill_crowd = not all("iscrowd" in a for a in annotations)
    if not (renumber or fill_crowd):
        return dataset
    if renumber:
        warnings.warn(
            f"{source}: ground-truth annotation id 0. seg_d2 evaluates as if annotation ids were unique and "
            "non-zero (renumbered internally), as hotcoco and ultrafast do; pycocotools' COCOeval itself counts "
            "a detection matched to annotation id 0 as a false positive, so it would score this file lower",
            AnnotationIdZeroWarning)
    fixed = [{"iscrowd": 0, **a, **({"id": k + 1} if renumber else {})} for k, a in enumerate(annotations)]
    return {**dataset, "annotations": fixed}


# ---------------------------------------------------------------------------------------------- results
_Count = Annotated[int, msgspec.Meta(ge=0)]
_Extent = Annotated[float, msgspec.Meta(ge=0)]


class _RLE(msgspec.Struct, gc=False):
    size: Annotated[list[_Count], msgspec.Meta(min_length=2, max_length=2)]
    counts: str


_Box = tuple[float, float, _Extent, _Extent]


class _MaskDetection(msgspec.Struct, gc=False):
    """A mask AP results record as most files hold it. The typed records are no looser than the record
    checks (strict JSON has no NaN or inf; an int is neither a float nor a bool; box width and height
    >= 0; RLE counts a string, its size two integers), so what passes here passes them too (tests pin
    that); a file these schemas refuse is parsed generically and checked record by record."""

    image_id: int
    category_id: int
    score: float
    segmentation: _RLE
    bbox: Union[_Box, msgspec.UnsetType] = msgspec.UNSET


class _BoxDetection(msgspec.Struct, gc=False):
    """A box AP results record as most files hold it: a box and no mask."""

    image_id: int
    category_id: int
    score: float
    bbox: _Box
    segmentation: msgspec.UnsetType = msgspec.UNSET  # present: the generic path checks the mask


# The fields the iou type needs are required by its schema, so no pass over the records counts them.
_DETECTIONS = {"segm": msgspec.json.Decoder(list[_MaskDetection]), "bbox": msgspec.json.Decoder(list[_BoxDetection])}
FILE_READERS = ("hotcoco", "ultrafast")  # engines whose loadRes parses a results file in native code


class ResultsFile(NamedTuple):
    """A results file the checks cleared as it is; ``boxed``: every detection has a box."""

    path: str
    boxed: bool


def results_for_engine(results, dataset, source, iou_type, engine, drop_bbox_for_segm=False):
    """``results`` (a list or the path of a JSON list) checked against ``dataset``, as the engine reads them:
    a :class:`ResultsFile` when the engine reads files natively (FILE_READERS) and the typed pass clears
    the file (they parse it faster than Python builds dicts); else a list with polygons as RLE, without
    boxes (``drop_bbox_for_segm``), and copied where the engine writes into detections."""
    if isinstance(results, (str, os.PathLike)):
        source = os.fspath(results)
        boxed = _typed_file_clear(source, _Index(dataset), iou_type) if engine in FILE_READERS else None
        if boxed is not None and not drop_bbox_for_segm:
            return ResultsFile(source, boxed)
        results = load_json(source)
    with as_input_error():
        check_results(results, dataset, source, iou_type)
    if engine != "hotcoco":
        # pycocotools' / ultrafast's loadRes write id/area/iscrowd into each detection: work on copies.
        # hotcoco's reads them without writing (tests/evaluation pin that), so only edited ones are copied.
        results = list(map(dict, results))
    if iou_type == "segm":
        results = _segm_results(results, dataset, drop_bbox_for_segm)
    return results


def _typed_file_clear(path, index, iou_type):
    """Whether every detection has a box, when ``path`` holds a non-empty list that the schema takes, with
    known ids, the boxes or masks ``iou_type`` needs (for mask AP, boxes on all or none; no masks in box
    results) and RLE sizes equal to their images'; else None, and the generic path decides."""
    try:
        detections = _DETECTIONS[iou_type].decode(read_bytes(path))
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
        return None
    image_ids = list(map(attrgetter("image_id"), detections))
    if not (detections and set(image_ids) <= index.image_ids
            and set(map(attrgetter("category_id"), detections)) <= index.category_ids):
        return None
    if iou_type == "bbox":
        return True
    boxes_missing = countOf(map(attrgetter("bbox"), detections), msgspec.UNSET)
    clear = boxes_missing in (0, len(detections)) and list(
        map(attrgetter("segmentation.size"), detections)) == list(map(index.sizes.__getitem__, image_ids))
    return not boxes_missing if clear else None


def check_results(results, dataset, source, iou_type):
    """Detections refer to ground-truth image and category ids and are well formed (coco_checks): a finite
    score, a box for box AP, a mask for mask AP, and for mask AP a box on all or on none of them (the
    first detection decides in pycocotools whether areas come from boxes or masks)."""
    if not isinstance(results, list):
        raise EvaluationInputError(f"{source}: a COCO results file must hold a JSON list")
    index = _Index(dataset)
    try:
        columns = list(zip(*map(itemgetter("image_id", "category_id", "score"), results))) or [(), (), ()]
    except (KeyError, TypeError):
        columns = None
    if columns is None or not _results_clear(*columns, *_geometry_columns(results), index, iou_type):
        _check_result_ids(results, index, source)
        for k, r in enumerate(results):
            check_score(r["score"], f"{source}: detection #{k}")
            _check_geometry(r, index, f"{source}: detection #{k}", iou_type)
        _check_box_presence(results, source, iou_type)


def _results_clear(image_ids, category_ids, scores, boxes, masks, index, iou_type):
    """The columnar pass over detections; ``boxes``/``masks`` have msgspec.UNSET where a detection has none."""
    return (not image_ids) or (index.known(image_ids, category_ids) and _finite(scores) and _geometry_clear(
        image_ids, boxes, masks, index, iou_type, is_results=True))


def _check_result_ids(results, index, source):
    """Ids first, for every detection: a wrong id usually means a wrong file, the first thing to know."""
    for k, r in enumerate(results):
        where = f"{source}: detection #{k}"
        require_keys(r, ["image_id", "category_id", "score"], where)
        _check_ids(r, index, where)


def _check_box_presence(results, source, iou_type):
    if iou_type != "segm":
        return
    with_box = ["bbox" in r for r in results]
    if any(with_box) and not all(with_box):
        k = with_box.index(not with_box[0])
        raise EvaluationInputError(
            f"{source}: detection #{k} {'has' if with_box[k] else 'has no'} 'bbox' but detection #0 "
            f"{'has' if with_box[0] else 'has none'}: give every detection a box or none (pycocotools takes "
            "every mask AP area from the boxes or every one from the masks, as the first detection decides)")


def _segm_results(results, dataset, drop_bbox):
    """``results`` with polygons as RLE and (``drop_bbox``) without boxes; edited detections are copies."""
    if not drop_bbox and not any(isinstance(r["segmentation"], list) for r in results):
        return results
    sizes = {im["id"]: (im["height"], im["width"]) for im in dataset["images"] if "height" in im}
    out = []
    for r in results:
        if drop_bbox and "bbox" in r:
            r = {k: v for k, v in r.items() if k != "bbox"}
        if isinstance(r["segmentation"], list):
            r = {**r, "segmentation": _polygons_to_rle(r["segmentation"], *sizes[r["image_id"]])}
        out.append(r)
    return out


def _polygons_to_rle(polygons, h, w):
    """Polygon masks -> RLE, as pycocotools' annToRLE would (its loadRes cannot take polygons alone)."""
    rle = mask_util.merge(mask_util.frPyObjects(polygons, h, w)) if polygons else (
        mask_util.encode(np.zeros((h, w, 1), np.uint8, order="F"))[0])
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
