"""Register COCO-format datasets by path, with eager validation and clear errors.

Detectron2's loaders run lazily and fail obscurely (a KeyError deep in a data-loader worker) on a
duplicate id, a flat polygon list or a missing file; here the JSON and the images are checked when the
dataset is registered, every error names the file and the offending id, and degenerate boxes (which
Detectron2 silently drops in training) are counted in a warning.

Also home to the metadata builders and loaders that :mod:`seg_d2.data.builtin` shares.
"""
import json
import logging
import os

import numpy as np
import pycocotools.mask as mask_util
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.coco import load_coco_json

from ..utils.progress import progress
from .coco_checks import check_bbox, check_category_names, check_segmentation
from .converters import few, mask_to_rle, read_json, rgb_to_ids
from .derived import cached_file, source_stamp, write_json_cached
from .image_io import ImageReadError, image_size, read_bands

__all__ = [
    "CHECK_IMAGES",
    "IGNORE_LABEL",
    "box_defect",
    "check_image_files",
    "checked_image_size",
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

IGNORE_LABEL = 255  # semantic label of void pixels, as in Detectron2's COCO panoptic and ADE20k sets
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
CHECK_IMAGES = ("none", "header", "decode")


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


def checked_image_size(path, check_images):
    """(height, width) of an image: from its header, or by decoding every pixel ("decode")."""
    return read_bands(path).shape[:2] if check_images == "decode" else image_size(path)


def check_image_files(images, image_root, source, check_images="header", name=None):
    """Every image of ``images`` ({image id: COCO image}) exists under ``image_root`` and, unless
    ``check_images`` is "none", opens as an image of the size the annotations give ("decode": decodes
    every pixel, which also finds truncated files). Errors name ``source``, the image id and the file."""
    if check_images not in CHECK_IMAGES:
        raise ValueError(f"DATASETS.CHECK_IMAGES must be one of {CHECK_IMAGES}, got {check_images!r}")
    items = images.items()
    if check_images != "none":
        items = progress(items, f"{name or os.path.basename(source)}: checking images", len(images), "image")
    for image_id, image in items:
        where = f"{source}: image id {image_id!r}"
        file_name = os.path.join(image_root, image["file_name"])
        if not os.path.isfile(file_name):
            raise FileNotFoundError(f"{where}: file not found: {file_name}")
        if check_images == "none":
            continue
        try:
            height, width = checked_image_size(file_name, check_images)
        except ImageReadError as e:
            raise ImageReadError(f"{where}: {e}") from None
        if (height, width) != (image["height"], image["width"]):
            raise ValueError(f"{where}: {file_name} is {width}x{height} (WxH), the annotations say "
                             f"{image['width']}x{image['height']}")


def _check_categories(data, path):
    categories = _index(data["categories"], path, "category")
    for category_id, category in categories.items():
        _require_keys(category, ("name",), path, f"category id {category_id!r}")
    check_category_names(data["categories"], path)
    return categories


def _check_reference(value, known, path, what, kind):
    if value not in known:
        raise ValueError(f"{path}: {what} refers to unknown {kind} id {value!r}")


# Boxes that Detectron2's training clips to the image, dropping those left empty: silently, so counted here.
_BOX_DEFECTS = {
    "zero-area": "have a zero width or height",
    "outside": "lie entirely outside their image",
    "past the border": "reach more than 1 pixel past their image's border (clipped in training)",
}


def box_defect(bbox, height, width):
    """What is wrong with an [x, y, w, h] box in an image of ``height`` x ``width``: "zero-area",
    "outside", "past the border" (by more than 1 pixel, beyond rounding) or None."""
    x, y, w, h = bbox
    if w <= 0 or h <= 0:
        return "zero-area"
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        return "outside"
    if x < -1 or y < -1 or x + w > width + 1 or y + h > height + 1:
        return "past the border"
    return None


def _report_box_defects(defects, source):
    """One warning with the count (and the first ids) of each kind of degenerate box."""
    if defects:
        parts = [f"{len(ids)} {_BOX_DEFECTS[kind]} (annotation ids {few(map(str, ids))})" for kind, ids in
                 defects.items()]
        logger.warning(f"{source}: degenerate boxes: " + "; ".join(parts))


def _check_annotations(data, images, categories, json_file):
    """Ids, references, boxes and segmentations (polygon nesting, RLE sizes) of every annotation."""
    defects = {}
    for ann_id, ann in _index(data["annotations"], json_file, "annotation").items():
        what = f"annotation id {ann_id!r}"
        _require_keys(ann, ("image_id", "category_id", "bbox"), json_file, what)
        _check_reference(ann["image_id"], images, json_file, what, "image")
        _check_reference(ann["category_id"], categories, json_file, what, "category")
        image = images[ann["image_id"]]
        check_bbox(ann["bbox"], f"{json_file}: {what}")
        if "segmentation" in ann:
            check_segmentation(ann["segmentation"], f"{json_file}: {what}", image["height"], image["width"])
        defect = box_defect(ann["bbox"], image["height"], image["width"])
        if defect:
            defects.setdefault(defect, []).append(ann_id)
    _report_box_defects(defects, json_file)


def _read_coco(json_file, image_root):
    """(parsed JSON, images by id, categories by id) of a COCO-style file, its top level checked."""
    _require_dir(image_root, "Image root")
    data = read_json(json_file, ("images", "annotations", "categories"))
    images = _index(data["images"], json_file, "image")
    for image_id, image in images.items():
        _require_keys(image, ("file_name", "height", "width"), json_file, f"image id {image_id!r}")
    return data, images, _check_categories(data, json_file)


def _validate_instances(json_file, image_root, check_images="header", name=None):
    """Checks a COCO instances JSON and its images; returns (categories by id, the parsed JSON)."""
    data, images, categories = _read_coco(json_file, image_root)
    _check_annotations(data, images, categories, json_file)
    check_image_files(images, image_root, json_file, check_images, name)
    return categories, data


def _validate_panoptic(panoptic_json, image_root, panoptic_root, check_images="header", name=None):
    """Checks a COCO panoptic JSON, its images and PNGs; returns (categories by id, the parsed JSON)."""
    _require_dir(panoptic_root, "Panoptic root")
    data, images, categories = _read_coco(panoptic_json, image_root)
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
    check_image_files(images, image_root, panoptic_json, check_images, name)
    return categories, data


# ---------------------------------------------------------------- registration
def _without_categories(data, drop):
    """COCO ``data`` without the categories named in ``drop`` and their annotations."""
    kept = {c["id"] for c in data["categories"] if c["name"] not in drop}
    return {**data, "categories": [c for c in data["categories"] if c["id"] in kept],
            "annotations": [a for a in data["annotations"] if a["category_id"] in kept]}


def register_coco_instances_dataset(name, json_file, image_root, metadata=None, drop_categories=(),
                                    check_images="header"):
    """Register a COCO instances dataset (evaluator_type "coco") after validating it: ids and
    references, category names, boxes, segmentations (nesting, RLE sizes), images (see
    :func:`check_image_files`); degenerate boxes are counted in a warning.

    Args:
        drop_categories: category names to leave out, with their annotations (e.g. labelme's
            ``"_background_"``). The rest get contiguous ids in category id order.
        metadata: extra metadata, set after (and overriding) the derived one.
        check_images: "header" (default), "decode" or "none" (see :func:`check_image_files`).
    """
    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    categories, data = _validate_instances(json_file, image_root, check_images, name)
    drop = {drop_categories} if isinstance(drop_categories, str) else set(drop_categories)
    unknown = sorted(drop - {c["name"] for c in categories.values()})
    if unknown:
        raise ValueError(f"{json_file}: drop_categories names unknown categories {unknown}")
    kept = [c for c in categories.values() if c["name"] not in drop]
    meta = instances_metadata(kept)
    id_map = meta["thing_dataset_id_to_contiguous_id"]
    DatasetCatalog.register(name, lambda: load_coco_instances(json_file, image_root, id_map))
    # COCOEvaluator scores against json_file: with categories dropped, a copy without them (named by its
    # content, so a changed file is never scored against a stale copy).
    meta["json_file"] = write_json_cached("coco_instances", _without_categories(data, drop)) if drop else json_file
    MetadataCatalog.get(name).set(
        image_root=image_root, evaluator_type="coco", **{**meta, **(metadata or {})}
    )


def _separated_labels(present, segments, stuff_labels):
    """Lookup table segment id -> separated semantic label: things 0, stuff 1..S, void 255."""
    table = np.full(max([0, *present.tolist(), *(s["id"] for s in segments)]) + 1, IGNORE_LABEL, np.uint8)
    for segment in segments:
        table[segment["id"]] = stuff_labels.get(segment["category_id"], 0)
    return table


def _panoptic_ids(png, image, segments, panoptic_json):
    """Segment ids of one panoptic PNG, checked against its image's size and its segments_info."""
    ids = rgb_to_ids(np.asarray(Image.open(png).convert("RGB")))
    if ids.shape != (image["height"], image["width"]):
        raise ValueError(f"{panoptic_json}: {png} is {ids.shape[1]}x{ids.shape[0]} (WxH), image id "
                         f"{image['id']!r} is {image['width']}x{image['height']}")
    present = np.unique(ids)
    unknown = sorted(set(present.tolist()) - {s["id"] for s in segments} - {0})
    if unknown:
        raise ValueError(f"{panoptic_json}: {png} holds segment id(s) {unknown[:10]} that the segments_info of "
                         f"image id {image['id']!r} does not list")
    return ids, present


def _separated_files(name, panoptic_json, data, panoptic_root, categories):
    """Derives Panoptic FPN's "separated" training form of a panoptic set: a COCO instances JSON of the
    thing segments (RLE) and one semantic PNG per image (things 0, stuff 1..S, void 255), cached.
    Returns (instances JSON path, {image id: semantic PNG path})."""
    images = {image["id"]: image for image in data["images"]}
    stuff = sorted(c["id"] for c in categories.values() if not c["isthing"])
    stuff_labels = {category_id: k for k, category_id in enumerate(stuff, start=1)}
    instances, semantic, unused = [], {}, 0
    for ann in progress(data["annotations"], f"{name}: reading panoptic PNGs", unit="image"):
        png, image = os.path.join(panoptic_root, ann["file_name"]), images[ann["image_id"]]
        segments = ann["segments_info"]
        ids, present = _panoptic_ids(png, image, segments, panoptic_json)
        unused += len({s["id"] for s in segments} - set(present.tolist()))

        def write_semantic(path, ids=ids, present=present, segments=segments):
            Image.fromarray(_separated_labels(present, segments, stuff_labels)[ids]).save(path)

        parts = [source_stamp(png), stuff_labels, [(s["id"], s["category_id"]) for s in segments]]
        semantic[ann["image_id"]] = cached_file("panoptic_semantic", parts, ".png", write_semantic)
        things = [s for s in segments if categories[s["category_id"]]["isthing"] and s["id"] in present]
        for segment in things:
            rle = mask_to_rle(ids == segment["id"])
            instances.append({"id": len(instances) + 1, "image_id": ann["image_id"], "category_id":
                              segment["category_id"], "segmentation": rle, "iscrowd": int(segment.get("iscrowd", 0)),
                              "area": int(mask_util.area(rle)), "bbox": mask_util.toBbox(rle).tolist()})
    if unused:
        logger.warning(f"{name}: {unused} segment(s) listed in segments_info have no pixel in their PNG")
    thing_categories = [c for c in categories.values() if c["isthing"]]
    json_file = write_json_cached("panoptic_instances", {
        "images": data["images"], "annotations": instances, "categories": thing_categories})
    return json_file, semantic


def _load_separated(json_file, image_root, id_map, semantic):
    dicts = load_coco_instances(json_file, image_root, id_map)
    for record in dicts:
        record["sem_seg_file_name"] = semantic[record["image_id"]]
    return dicts


def register_coco_panoptic_dataset(
    name, panoptic_json, image_root, panoptic_root, metadata=None, instances_json=None, form="standard",
    check_images="header",
):
    """Register a COCO panoptic dataset (evaluator_type "coco_panoptic_seg") after validating it.

    Categories must carry "isthing". ``form``: "standard" (Detectron2's: ``pan_seg_file_name`` and
    ``segments_info``; ``instances_json``, optional, is set as ``json_file`` for COCOEvaluator) or
    "separated", what Panoptic FPN trains on: instance annotations of the thing segments and semantic
    labels (0 things, 1..S stuff), both derived from the PNGs (which are checked against the JSON:
    size, segment ids) and cached; COCO AP and semantic metrics are then scored against those.
    ``metadata``: extra metadata, overriding the derived one.
    """
    if form not in ("standard", "separated"):
        raise ValueError(f"form must be 'standard' or 'separated', got {form!r}")
    panoptic_json, image_root = os.fspath(panoptic_json), os.fspath(image_root)
    panoptic_root = os.fspath(panoptic_root)
    categories, data = _validate_panoptic(panoptic_json, image_root, panoptic_root, check_images, name)
    common = {"image_root": image_root, "panoptic_root": panoptic_root, "panoptic_json": panoptic_json,
              "evaluator_type": "coco_panoptic_seg", "ignore_label": IGNORE_LABEL, "label_divisor": 1000}
    if form == "standard":
        meta = panoptic_standard_metadata(list(categories.values()))
        DatasetCatalog.register(name, lambda: load_coco_panoptic(panoptic_json, image_root, panoptic_root, meta))
        if instances_json is not None:
            meta["json_file"] = os.fspath(instances_json)
    else:
        meta = panoptic_separated_metadata(list(categories.values()))
        json_file, semantic = _separated_files(name, panoptic_json, data, panoptic_root, categories)
        id_map = meta["thing_dataset_id_to_contiguous_id"]
        DatasetCatalog.register(name, lambda: _load_separated(json_file, image_root, id_map, semantic))
        meta["json_file"] = json_file
    MetadataCatalog.get(name).set(**{**common, **meta, **(metadata or {})})
