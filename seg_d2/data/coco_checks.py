"""Structural checks of COCO-format records, shared by dataset registration and evaluation.

One definition of what a well-formed COCO id, category, box, area, segmentation and detection score is,
so that a file that registers also evaluates, and every engine sees the same input. Every error names
the file and the id. Only numbers JSON can hold count as numbers: a bool is not one (``True`` would
silently become 1).
"""
import math
from numbers import Integral, Real

__all__ = [
    "COCOFormatError",
    "check_area",
    "check_bbox",
    "check_category_names",
    "check_id",
    "check_score",
    "check_segmentation",
]


class COCOFormatError(ValueError):
    """A COCO record that cannot be used as it is; the message names the file and the id."""


_JSON_NUMBERS = frozenset((int, float))


def _is_number(value):
    return isinstance(value, Real) and not isinstance(value, bool)


def _all_numbers(values):
    """Every value a number; the type set is one C-level pass, the isinstance loop only for non-JSON types."""
    return set(map(type, values)) <= _JSON_NUMBERS or all(map(_is_number, values))


def _all_finite(values):
    """Every value (all numbers) finite; one sum first, since NaN and inf propagate through it."""
    return math.isfinite(sum(values)) or all(map(math.isfinite, values))


def check_id(value, what, where):
    """An image, category or annotation id is an integer >= 0 (engines disagree on 1.0, "1" or -1)."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 0:
        raise COCOFormatError(f"{where}: {what} id {value!r} is not an integer >= 0")


def check_category_names(categories, source):
    """Every category has a string "name" (a number there would silently become another class name)."""
    for category in categories:
        name = category.get("name")
        if not isinstance(name, str):
            raise COCOFormatError(
                f"{source}: category id {category.get('id')!r} has name {name!r}; category names must be strings"
            )


def check_score(score, where):
    """A detection score is a finite real number (NaN would sort differently in every engine)."""
    if not _is_number(score) or not math.isfinite(score):
        raise COCOFormatError(f"{where}: score {score!r} is not a finite number")


def check_bbox(bbox, where):
    """A box is [x, y, width, height]: four finite numbers, width and height not negative."""
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not _all_numbers(bbox) or not _all_finite(bbox):
        raise COCOFormatError(f"{where}: 'bbox' {bbox!r} is not four finite numbers [x, y, width, height]")
    if bbox[2] < 0 or bbox[3] < 0:
        raise COCOFormatError(f"{where}: 'bbox' {list(bbox)} has a negative width or height")


def check_area(area, where):
    """An annotation's "area" (COCOeval's small/medium/large ranges read it) is a finite number >= 0."""
    if not _is_number(area) or not math.isfinite(area) or area < 0:
        raise COCOFormatError(f"{where}: 'area' {area!r} is not a finite number >= 0")


def _check_polygons(polygons, where):
    if polygons and _is_number(polygons[0]):
        raise COCOFormatError(
            f"{where}: 'segmentation' is a flat list of numbers; COCO polygons are a list of polygons, "
            f"[[x1, y1, x2, y2, ...], ...] (tools/convert.py flat-polygons nests them)"
        )
    for k, polygon in enumerate(polygons):
        if not isinstance(polygon, list) or not _all_numbers(polygon) or not _all_finite(polygon):
            raise COCOFormatError(f"{where}: polygon #{k} is not a list of finite numbers")
        if len(polygon) % 2 or len(polygon) < 6:
            # pycocotools reads a 4-number "polygon" as a box; others as a polygon: no agreed meaning
            raise COCOFormatError(
                f"{where}: polygon #{k} has {len(polygon)} coordinates; a polygon needs an even number, at least 6"
            )


def _check_rle(rle, height, width, where):
    if "counts" not in rle or "size" not in rle:
        raise COCOFormatError(f"{where}: an RLE 'segmentation' needs 'counts' and 'size'")
    size, counts = rle["size"], rle["counts"]
    if not isinstance(size, (list, tuple)) or len(size) != 2 or not all(
            isinstance(v, Integral) and not isinstance(v, bool) and v >= 0 for v in size):
        raise COCOFormatError(f"{where}: RLE size {size!r} is not two integers [height, width]")
    if height is not None and list(size) != [height, width]:
        raise COCOFormatError(
            f"{where}: RLE size {list(size)} (height, width) differs from its image's [{height}, {width}]"
        )
    if isinstance(counts, list):  # uncompressed RLE: its runs must cover the image exactly
        if not all(isinstance(c, Integral) and not isinstance(c, bool) and c >= 0 for c in counts):
            raise COCOFormatError(f"{where}: uncompressed RLE counts must be integers >= 0")
        if sum(counts) != size[0] * size[1]:
            raise COCOFormatError(
                f"{where}: uncompressed RLE counts add up to {sum(counts)} pixels, not {size[0]} x {size[1]}"
            )
    elif not isinstance(counts, (str, bytes)):  # bytes: pycocotools' own in-memory RLE
        raise COCOFormatError(f"{where}: RLE counts must be a string or a list of integers, got {type(counts).__name__}")


def check_segmentation(segmentation, where, height=None, width=None):
    """A "segmentation" is a list of polygons or an RLE dict whose size is its image's (when given)."""
    if isinstance(segmentation, list):
        _check_polygons(segmentation, where)
    elif isinstance(segmentation, dict):
        _check_rle(segmentation, height, width, where)
    else:
        raise COCOFormatError(
            f"{where}: 'segmentation' must be a list of polygons or an RLE dict, got {type(segmentation).__name__}"
        )
