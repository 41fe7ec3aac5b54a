"""Assisted labelling: prompts read from a file, and masks written as a COCO instances JSON (tools/annotate.py).

Prompt files hold one object per record: the image, its points and/or box, and its category.

- JSON: ``[{"image": "a.png", "points": [[x, y, label], ...], "box": [x0, y0, x1, y1], "category": "cell"}, ...]``
  (or the same list under ``"prompts"``);
- CSV with a header: ``image,points,box,category``, points as ``"x,y,label;x,y,label"`` (tools/predict.py's
  --points syntax), box as ``"x0,y0,x1,y1"``; empty cells are absent.

``image`` is the path relative to the image root, or a file name when only one input has it. Labels: 1 on the
object, 0 off it. The COCO file has image and annotation ids from 1, ``file_name`` relative to the image root
(``DATASETS.REGISTER``'s ``("name", "coco", json, image_root)`` reads it as it is), RLE or exact polygons, and
each mask's ``score`` (SAM's predicted IoU, or the model's score).
"""
import csv
import json
import os
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import pycocotools.mask as mask_util

from seg_d2.data.converters import mask_to_rle
from seg_d2.data.exact_polygons import mask_to_polygons

__all__ = ["CocoBuilder", "ObjectPrompt", "PromptFileError", "match_prompts", "parse_box", "parse_boxes",
           "parse_points", "read_prompts"]


class PromptFileError(ValueError):
    """A prompt file that cannot be read as prompts; the message names the file and the record."""


def parse_points(text):
    """"x,y,label;x,y,label" -> ([[x, y], ...], [label, ...]); ValueError saying what is wrong."""
    coords, labels = [], []
    for item in filter(None, (s.strip() for s in text.split(";"))):
        parts = [p.strip() for p in item.split(",")]
        if len(parts) != 3 or parts[2] not in ("0", "1"):
            raise ValueError(f"{item!r} is not 'x,y,label' with label 1 (on the object) or 0 (off it)")
        try:
            coords.append([float(parts[0]), float(parts[1])])
        except ValueError:
            raise ValueError(f"{item!r}: x and y must be numbers") from None
        labels.append(int(parts[2]))
    if not coords:
        raise ValueError(f"no point in {text!r}")
    return coords, labels


def parse_box(text):
    """"x0,y0,x1,y1" -> [x0, y0, x1, y1]."""
    try:
        box = [float(v) for v in text.split(",")]
    except ValueError:
        box = []
    if len(box) != 4:
        raise ValueError(f"{text!r} is not a box 'x0,y0,x1,y1'")
    return box


def parse_boxes(text):
    """"x0,y0,x1,y1;x0,y0,x1,y1" -> [[x0, y0, x1, y1], ...]; ValueError saying what is wrong."""
    boxes = [parse_box(item) for item in filter(None, (s.strip() for s in text.split(";")))]
    if not boxes:
        raise ValueError(f"no box in {text!r}")
    return boxes


@dataclass(frozen=True)
class ObjectPrompt:
    """One object to segment: ``where`` names its record ("prompts.csv line 3") in messages."""

    image: str
    category: str
    where: str
    point_coords: Optional[Tuple] = None
    point_labels: Optional[Tuple] = None
    box: Optional[Tuple] = None

    @property
    def multimask_output(self):
        """One click is ambiguous (part, object, group): SAM's three candidates, the best kept (SAM's advice)."""
        return self.box is None and len(self.point_coords) == 1

    def as_prompt(self):
        """The keyword arguments of a prompter's ``predict``."""
        return {"point_coords": self.point_coords, "point_labels": self.point_labels, "box": self.box,
                "multimask_output": self.multimask_output}


def _object(record, where, default_category, points, box):
    image = record.get("image")
    if not isinstance(image, str) or not image:
        raise PromptFileError(f"{where}: no 'image' (the image's path relative to the image root, or its file name)")
    if points is None and box is None:
        raise PromptFileError(f"{where}: neither 'points' nor 'box'")
    category = record.get("category") or default_category
    coords, labels = (None, None) if points is None else (tuple(map(tuple, points[0])), tuple(points[1]))
    return ObjectPrompt(image, str(category), where, coords, labels, None if box is None else tuple(box))


def _json_points(value):
    rows = np.asarray(value, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] != 3 or len(rows) == 0 or not np.isin(rows[:, 2], (0, 1)).all():
        raise ValueError(f"'points' must be [[x, y, label], ...] with label 1 or 0, got {value!r}")
    return rows[:, :2].tolist(), rows[:, 2].astype(int).tolist()


def _json_prompts(path, default_category):
    with open(path, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise PromptFileError(f"{path}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    records = data.get("prompts") if isinstance(data, dict) else data
    if not isinstance(records, list):
        raise PromptFileError(f"{path}: expected a list of prompts (or one under 'prompts')")
    prompts = []
    for k, record in enumerate(records):
        where = f"{path} prompt #{k}"
        if not isinstance(record, dict):
            raise PromptFileError(f"{where}: expected an object, got {type(record).__name__}")
        try:
            points = None if record.get("points") is None else _json_points(record["points"])
            box = None if record.get("box") is None else [float(v) for v in record["box"]]
        except (TypeError, ValueError) as e:
            raise PromptFileError(f"{where}: {e}") from None
        prompts.append(_object(record, where, default_category, points, box))
    return prompts


def _csv_prompts(path, default_category):
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "image" not in reader.fieldnames:
            raise PromptFileError(f"{path}: the first line must be a header with 'image' and 'points' and/or 'box' "
                                  f"(and optionally 'category'), got {reader.fieldnames}")
        prompts = []
        for record in reader:
            where = f"{path} line {reader.line_num}"
            try:
                points = parse_points(record["points"]) if (record.get("points") or "").strip() else None
                box = parse_box(record["box"]) if (record.get("box") or "").strip() else None
            except ValueError as e:
                raise PromptFileError(f"{where}: {e}") from None
            prompts.append(_object(record, where, default_category, points, box))
    return prompts


def read_prompts(path, default_category="object"):
    """[ObjectPrompt] of a .json or .csv prompt file (see the module docstring)."""
    if not os.path.isfile(path):
        raise PromptFileError(f"{path}: no such prompt file")
    if path.lower().endswith(".json"):
        return _json_prompts(path, default_category)
    if path.lower().endswith(".csv"):
        return _csv_prompts(path, default_category)
    raise PromptFileError(f"{path}: a prompt file is .json or .csv")


def match_prompts(prompts, paths, image_root):
    """{image path: [ObjectPrompt]} for ``paths``; every prompt must name exactly one of them."""
    by_relative = {os.path.normpath(os.path.relpath(p, image_root)): p for p in paths}
    by_name = {}
    for p in paths:
        by_name.setdefault(os.path.basename(p), []).append(p)
    matched = {p: [] for p in paths}
    for prompt in prompts:
        path = by_relative.get(os.path.normpath(prompt.image))
        if path is None:
            named = by_name.get(os.path.basename(prompt.image), [])
            if len(named) != 1:
                why = "is not among the inputs" if not named else f"names {len(named)} inputs: {named}"
                raise PromptFileError(f"{prompt.where}: image {prompt.image!r} {why} (paths are relative to the "
                                      f"image root {image_root})")
            path = named[0]
        matched[path].append(prompt)
    return matched


class CocoBuilder:
    """A COCO instances JSON built image by image; categories numbered from 1 in the order first seen."""

    def __init__(self, categories=(), polygons=False):
        self.polygons = polygons
        self.images, self.annotations, self.categories = [], [], []
        for name in categories:
            self.category_id(name)

    def category_id(self, name):
        for category in self.categories:
            if category["name"] == name:
                return category["id"]
        self.categories.append({"id": len(self.categories) + 1, "name": name})
        return len(self.categories)

    def add_image(self, file_name, height, width):
        self.images.append({"id": len(self.images) + 1, "file_name": file_name, "height": int(height),
                            "width": int(width)})
        return len(self.images)

    def add(self, image_id, category, mask, score, **fields):
        """Add ``mask`` ((H, W) bool) as an annotation; False (nothing added) for an empty mask."""
        mask = np.asarray(mask, dtype=bool)
        if not mask.any():
            return False
        rle = mask_to_rle(mask)
        segmentation = mask_to_polygons(mask) if self.polygons else rle
        coded = dict(rle, counts=rle["counts"].encode("ascii"))
        self.annotations.append({
            "id": len(self.annotations) + 1, "image_id": image_id, "category_id": self.category_id(category),
            "segmentation": segmentation, "area": int(mask_util.area(coded)),
            "bbox": [float(v) for v in mask_util.toBbox(coded)], "iscrowd": 0, "score": float(score),
            **{k: float(v) for k, v in fields.items()},
        })
        return True

    def coco(self):
        return {"images": self.images, "annotations": self.annotations, "categories": self.categories}

    def write(self, path):
        """Write the JSON atomically (a killed run leaves no half-written file)."""
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        partial = f"{path}.partial"
        with open(partial, "w", encoding="utf-8") as f:
            json.dump(self.coco(), f)
        os.replace(partial, path)
