"""Structural checks of COCO-format records, shared by dataset registration and evaluation.

One definition of what a well-formed COCO category, segmentation and detection is, so that a file that
registers also evaluates, and every engine sees the same input. Every error names the file and the id.
"""
import math
from numbers import Real

__all__ = [
    "COCOFormatError",
    "check_category_names",
    "check_score",
    "check_segmentation",
]


class COCOFormatError(ValueError):
    """A COCO record that cannot be used as it is; the message names the file and the id."""


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
    if isinstance(score, bool) or not isinstance(score, Real) or not math.isfinite(score):
        raise COCOFormatError(f"{where}: score {score!r} is not a finite number")


def _check_polygons(polygons, where):
    if polygons and all(isinstance(v, Real) for v in polygons):
        raise COCOFormatError(
            f"{where}: 'segmentation' is a flat list of numbers; COCO polygons are a list of polygons, "
            f"[[x1, y1, x2, y2, ...], ...] (tools/convert.py flat-polygons nests them)"
        )
    for k, polygon in enumerate(polygons):
        if not isinstance(polygon, list) or not all(isinstance(v, Real) for v in polygon):
            raise COCOFormatError(f"{where}: polygon #{k} is not a list of numbers")
        if len(polygon) % 2 or len(polygon) < 6:
            raise COCOFormatError(
                f"{where}: polygon #{k} has {len(polygon)} coordinates; a polygon needs an even number, at least 6"
            )


def _check_rle(rle, height, width, where):
    if "counts" not in rle or "size" not in rle:
        raise COCOFormatError(f"{where}: an RLE 'segmentation' needs 'counts' and 'size'")
    if height is not None and list(rle["size"]) != [height, width]:
        raise COCOFormatError(
            f"{where}: RLE size {list(rle['size'])} (height, width) differs from its image's [{height}, {width}]"
        )


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
