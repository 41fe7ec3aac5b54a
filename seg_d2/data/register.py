"""Register COCO-format datasets by path, with eager validation and clear errors.

Detectron2's loaders run lazily and fail obscurely (a KeyError deep in a data-loader worker) on a
duplicate id or a missing file; here the JSON is checked when the dataset is registered and every
error names the file and the offending id.

Also home to the metadata builders and loaders that :mod:`seg_d2.data.builtin` shares.
"""
import json
import logging
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.coco import load_coco_json

__all__ = [
    "register_coco_instances_dataset",
    "register_coco_panoptic_dataset",
    "instances_metadata",
    "panoptic_standard_metadata",
    "panoptic_separated_metadata",
    "semantic_metadata",
    "load_coco_instances",
    "load_coco_panoptic",
]

logger = logging.getLogger(__name__)

# Detectron2's colour for the single "things" class of the separated semantic task.
_SEPARATED_THINGS_COLOR = [82, 18, 128]


# ---------------------------------------------------------------- metadata from COCO categories
def _by_id(categories):
    return sorted(categories, key=lambda c: c["id"])


def _colors(categories):
    """Colours only when every category has one (else Detectron2's Visualizer picks its own)."""
    if all("color" in c for c in categories):
        return [list(c["color"]) for c in categories]
    return None


def _with_colors(meta, key, categories):
    colors = _colors(categories)
    if colors is not None:
        meta[key] = colors
    return meta


def instances_metadata(categories):
    """Metadata of an instance dataset: contiguous ids follow category id order."""
    things = _by_id(categories)
    meta = {
        "thing_classes": [c["name"] for c in things],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(things)},
    }
    return _with_colors(meta, "thing_colors", things)


def panoptic_standard_metadata(categories):
    """Detectron2's "standard" panoptic metadata: one contiguous range over things and stuff."""
    cats = _by_id(categories)
    meta = {
        "thing_classes": [c["name"] for c in cats],
        "stuff_classes": [c["name"] for c in cats],
        "thing_dataset_id_to_contiguous_id": {
            c["id"]: i for i, c in enumerate(cats) if c["isthing"]
        },
        "stuff_dataset_id_to_contiguous_id": {
            c["id"]: i for i, c in enumerate(cats) if not c["isthing"]
        },
    }
    _with_colors(meta, "thing_colors", cats)
    return _with_colors(meta, "stuff_colors", cats)


def panoptic_separated_metadata(categories):
    """Panoptic FPN's "separated" metadata: things as instances; semantic 0 = things, 1..S stuff."""
    meta = instances_metadata([c for c in categories if c["isthing"]])
    stuff = _by_id([c for c in categories if not c["isthing"]])
    meta["stuff_classes"] = ["things"] + [c["name"] for c in stuff]
    stuff_ids = {c["id"]: i + 1 for i, c in enumerate(stuff)}
    meta["stuff_dataset_id_to_contiguous_id"] = {0: 0, **stuff_ids}
    colors = _colors(stuff)
    if colors is not None:
        meta["stuff_colors"] = [_SEPARATED_THINGS_COLOR] + colors
    return meta


def semantic_metadata(categories):
    """Semantic metadata over all classes (things and stuff), contiguous in category id order."""
    cats = _by_id(categories)
    meta = {
        "stuff_classes": [c["name"] for c in cats],
        "stuff_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(cats)},
    }
    return _with_colors(meta, "stuff_colors", cats)


# ---------------------------------------------------------------- loaders
def load_coco_instances(json_file, image_root, id_map):
    """Detectron2 dicts from a COCO instances JSON; annotations of categories not in ``id_map`` are
    dropped, the others get contiguous ids ``id_map[category_id]``."""
    dicts = load_coco_json(json_file, image_root)  # no dataset name: raw category ids, no metadata
    for record in dicts:
        record["annotations"] = [
            dict(ann, category_id=id_map[ann["category_id"]])
            for ann in record["annotations"]
            if ann["category_id"] in id_map
        ]
    return dicts


def load_coco_panoptic(panoptic_json, image_root, panoptic_root, metadata):
    """Detectron2 "standard" panoptic dicts. Unlike Detectron2's loader, image file names are taken
    from the JSON's "images" (Detectron2 assumes ``.jpg``)."""
    with open(panoptic_json) as f:
        data = json.load(f)
    images = {image["id"]: image for image in data["images"]}
    things = metadata["thing_dataset_id_to_contiguous_id"]
    stuff = metadata["stuff_dataset_id_to_contiguous_id"]
    dicts = []
    for ann in sorted(data["annotations"], key=lambda a: a["image_id"]):
        image = images[ann["image_id"]]
        segments = []
        for seg in ann["segments_info"]:
            isthing = seg["category_id"] in things
            category_id = (things if isthing else stuff)[seg["category_id"]]
            segments.append(dict(seg, category_id=category_id, isthing=isthing))
        dicts.append(
            {
                "file_name": os.path.join(image_root, image["file_name"]),
                "image_id": image["id"],
                "height": image["height"],
                "width": image["width"],
                "pan_seg_file_name": os.path.join(panoptic_root, ann["file_name"]),
                "segments_info": segments,
            }
        )
    return dicts


# ---------------------------------------------------------------- validation
def _read_json(path, keys):
    """The parsed JSON object at ``path``, which must hold a list under each of ``keys``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Annotation file not found: {path}")
    with open(path) as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            where = f"line {e.lineno}, column {e.colno}"
            raise ValueError(f"{path}: malformed JSON at {where}: {e.msg}") from None
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ValueError(f"{path}: expected a JSON object at the top level, got {kind}")
    for key in keys:
        if not isinstance(data.get(key), list):
            raise ValueError(f"{path}: expected a list under '{key}'")
    return data


def _index(items, path, kind, key="id", where=""):
    """``{item[key]: item}``; an item without the key, or a repeated one, is an error."""
    index = {}
    for position, item in enumerate(items):
        if not isinstance(item, dict) or key not in item:
            raise ValueError(f"{path}: {kind} #{position}{where} has no '{key}'")
        if item[key] in index:
            raise ValueError(f"{path}: duplicate {kind} {key} {item[key]!r}{where}")
        index[item[key]] = item
    return index


def _require_keys(item, keys, path, what):
    missing = [k for k in keys if k not in item]
    if missing:
        raise ValueError(f"{path}: {what} lacks {', '.join(map(repr, missing))}")


def _require_dir(path, what):
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{what} not found (or not a directory): {path}")


def _check_images(images, image_root, path):
    for image_id, image in images.items():
        _require_keys(image, ("file_name", "height", "width"), path, f"image id {image_id!r}")
        file_name = os.path.join(image_root, image["file_name"])
        if not os.path.isfile(file_name):
            raise FileNotFoundError(f"{path}: image id {image_id!r}: file not found: {file_name}")


def _check_categories(data, path):
    categories = _index(data["categories"], path, "category")
    for category_id, category in categories.items():
        _require_keys(category, ("name",), path, f"category id {category_id!r}")
    return categories


def _check_reference(value, known, path, what, kind):
    if value not in known:
        raise ValueError(f"{path}: {what} refers to unknown {kind} id {value!r}")


def _validate_instances(json_file, image_root):
    """Checks a COCO instances JSON and its images; returns its categories by id."""
    _require_dir(image_root, "Image root")
    data = _read_json(json_file, ("images", "annotations", "categories"))
    images = _index(data["images"], json_file, "image")
    categories = _check_categories(data, json_file)
    for ann_id, ann in _index(data["annotations"], json_file, "annotation").items():
        what = f"annotation id {ann_id!r}"
        _require_keys(ann, ("image_id", "category_id", "bbox"), json_file, what)
        _check_reference(ann["image_id"], images, json_file, what, "image")
        _check_reference(ann["category_id"], categories, json_file, what, "category")
    _check_images(images, image_root, json_file)
    return categories


def _validate_panoptic(panoptic_json, image_root, panoptic_root):
    """Checks a COCO panoptic JSON, its images and PNGs; returns its categories by id."""
    _require_dir(image_root, "Image root")
    _require_dir(panoptic_root, "Panoptic root")
    data = _read_json(panoptic_json, ("images", "annotations", "categories"))
    images = _index(data["images"], panoptic_json, "image")
    categories = _check_categories(data, panoptic_json)
    for category_id, category in categories.items():
        _require_keys(category, ("isthing",), panoptic_json, f"category id {category_id!r}")
    annotations = _index(data["annotations"], panoptic_json, "annotation", key="image_id")
    for image_id, ann in annotations.items():
        what = f"annotation of image id {image_id!r}"
        _require_keys(ann, ("file_name", "segments_info"), panoptic_json, what)
        _check_reference(image_id, images, panoptic_json, what, "image")
        where = f" in image id {image_id!r}"
        segments = _index(ann["segments_info"], panoptic_json, "segment", where=where)
        for segment_id, segment in segments.items():
            seg_what = f"segment id {segment_id!r} of image id {image_id!r}"
            _require_keys(segment, ("category_id",), panoptic_json, seg_what)
            category_id = segment["category_id"]
            _check_reference(category_id, categories, panoptic_json, seg_what, "category")
        png = os.path.join(panoptic_root, ann["file_name"])
        if not os.path.isfile(png):
            raise FileNotFoundError(f"{panoptic_json}: {what}: panoptic PNG not found: {png}")
    _check_images(images, image_root, panoptic_json)
    return categories


# ---------------------------------------------------------------- registration
def register_coco_instances_dataset(name, json_file, image_root, metadata=None, drop_categories=()):
    """Register a COCO instances dataset (evaluator_type "coco") after validating it.

    Args:
        drop_categories: category names to leave out, with their annotations (e.g. labelme's
            ``"_background_"``). The rest get contiguous ids in category id order.
        metadata: extra metadata, set after (and overriding) the derived one.
    """
    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    categories = _validate_instances(json_file, image_root)
    drop = {drop_categories} if isinstance(drop_categories, str) else set(drop_categories)
    unknown = sorted(drop - {c["name"] for c in categories.values()})
    if unknown:
        raise ValueError(f"{json_file}: drop_categories names unknown categories {unknown}")
    kept = [c for c in categories.values() if c["name"] not in drop]
    meta = instances_metadata(kept)
    id_map = meta["thing_dataset_id_to_contiguous_id"]
    DatasetCatalog.register(name, lambda: load_coco_instances(json_file, image_root, id_map))
    if len(kept) == len(categories):
        # COCOEvaluator scores against this file; with categories dropped it must instead convert
        # the loaded dicts itself (it does so when json_file is absent), or its class count is off.
        meta["json_file"] = json_file
    MetadataCatalog.get(name).set(
        image_root=image_root, evaluator_type="coco", **{**meta, **(metadata or {})}
    )


def register_coco_panoptic_dataset(
    name, panoptic_json, image_root, panoptic_root, metadata=None, instances_json=None
):
    """Register a COCO panoptic dataset in Detectron2's "standard" form
    (evaluator_type "coco_panoptic_seg") after validating it.

    Categories must carry "isthing". ``instances_json`` (optional) is set as ``json_file`` for
    COCOEvaluator. ``metadata``: extra metadata, overriding the derived one.
    """
    panoptic_json, image_root = os.fspath(panoptic_json), os.fspath(image_root)
    panoptic_root = os.fspath(panoptic_root)
    categories = _validate_panoptic(panoptic_json, image_root, panoptic_root)
    meta = panoptic_standard_metadata(list(categories.values()))
    DatasetCatalog.register(
        name, lambda: load_coco_panoptic(panoptic_json, image_root, panoptic_root, meta)
    )
    if instances_json is not None:
        meta["json_file"] = os.fspath(instances_json)
    MetadataCatalog.get(name).set(
        image_root=image_root,
        panoptic_root=panoptic_root,
        panoptic_json=panoptic_json,
        evaluator_type="coco_panoptic_seg",
        ignore_label=255,
        label_divisor=1000,
        **{**meta, **(metadata or {})},
    )
