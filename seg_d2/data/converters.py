"""Converters between the label formats users bring and the COCO forms seg_d2 trains on (tools/convert.py).

Lossless where the target format can hold the source:

- instance rasters -> COCO RLE: exact. -> COCO polygons: exact, holes included
  (:mod:`seg_d2.data.exact_polygons`: outlines along pixel borders, holes joined by cancelling bridges),
  for pycocotools and Detectron2's rasterisers; Detectron2's crop augmentation keeps only the outer
  outline of a polygon with a hole, so train such data with RLE (the default here) when it has holes;
- COCO -> semantic label PNGs: each class's pixels exact where instances do not overlap (instance identity
  is not kept; where they overlap the smaller instance is painted on top, counted in the report);
- COCO instances + stuff -> COCO panoptic: exact where segments do not overlap (same rule as above);
- labelme -> COCO: polygons and rectangles exact; circles become 64-gons; point and line shapes have
  no area and are reported, not converted;
- YOLO-seg <-> COCO: polygons exact (coordinates written with full float precision); an instance of
  several polygons becomes several YOLO lines (YOLO has one polygon per object), RLE masks become
  exact polygons as above;
- flat polygons -> nested: exact.
"""
import json
import logging
import math
import os

import cv2
import numpy as np
import pycocotools.mask as mask_util
import scipy.ndimage as ndi
from PIL import Image

from .exact_polygons import mask_to_polygons
from .image_io import image_size, read_label_map

__all__ = [
    "IMAGE_EXTENSIONS",
    "coco_to_panoptic",
    "coco_to_semantic",
    "coco_to_yolo",
    "few",
    "ids_to_rgb",
    "instance_rasters_to_coco",
    "labelme_to_coco",
    "mask_to_rle",
    "nest_flat_polygons",
    "pair_by_stem",
    "read_json",
    "rgb_to_ids",
    "segmentation_to_mask",
    "segmentation_to_rle",
    "shift_polygons",
    "yolo_to_coco",
]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".npy")
CIRCLE_VERTICES = 64


# ---------------------------------------------------------------- files
def _files_by_stem(folder, extensions, ignore=()):
    """{path relative to ``folder`` without extension: path} of the files with ``extensions``, recursively,
    but for the top-level file names in ``ignore``."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"folder not found: {folder}")
    found = {}
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            stem, ext = os.path.splitext(name)
            if name.startswith(".") or ext.lower() not in extensions or (root == folder and name in ignore):
                continue
            key = os.path.relpath(os.path.join(root, stem), folder)
            if key in found:
                raise ValueError(f"{folder}: two files for {key!r}: {os.path.basename(found[key])} and {name}")
            found[key] = os.path.join(root, name)
    return found


def few(names, n=5):
    names = sorted(names)
    return ", ".join(names[:n]) + (f" (and {len(names) - n} more)" if len(names) > n else "")


def pair_by_stem(image_folder, other_folder, what, extensions=IMAGE_EXTENSIONS, ignore=()):
    """[(stem, image path, other path)] matched by file name without extension (and sub-folder); an image
    without its ``what`` file, or the reverse, is an error naming them."""
    images = _files_by_stem(image_folder, IMAGE_EXTENSIONS)
    others = _files_by_stem(other_folder, extensions, ignore)
    if not images:
        raise ValueError(f"{image_folder}: no image files ({', '.join(IMAGE_EXTENSIONS)})")
    lonely = set(images) - set(others)
    if lonely:
        raise ValueError(f"{other_folder}: no {what} for {len(lonely)} image(s) of {image_folder}: {few(lonely)}")
    orphans = set(others) - set(images)
    if orphans:
        raise ValueError(f"{image_folder}: no image for {len(orphans)} {what} file(s) of {other_folder}: {few(orphans)}")
    return [(stem, images[stem], others[stem]) for stem in sorted(images)]


def read_json(path, keys=()):
    """The JSON object at ``path``, which must hold a list under each of ``keys``; errors name the file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Annotation file not found: {path}")
    with open(path, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: not a JSON text file (byte {e.start} is not UTF-8)") from None
    if keys and not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object at the top level, got {type(data).__name__}")
    for key in keys:
        if not isinstance(data.get(key), list):
            raise ValueError(f"{path}: expected a list under '{key}'")
    return data


# ---------------------------------------------------------------- masks <-> COCO segmentations
def mask_to_rle(mask):
    """COCO compressed RLE (JSON-ready) of a boolean (H, W) mask."""
    rle = mask_util.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _rle_of_crop(crop, top, left, height, width):
    """Compressed RLE of a mask that is all False outside ``crop`` at (top, left): O(pixels of the crop),
    not O(image), so an image with thousands of instances encodes in one pass over each."""
    cols, rows = np.nonzero(crop.T)  # column-major order, as COCO RLE
    positions = (cols + left) * height + (rows + top)
    if positions.size == 0:
        return mask_to_rle(np.zeros((height, width), bool))
    breaks = np.flatnonzero(np.diff(positions) != 1)
    starts = np.concatenate([[positions[0]], positions[breaks + 1]])
    ends = np.concatenate([positions[breaks] + 1, [positions[-1] + 1]])
    counts = np.empty(2 * len(starts) + 1, np.int64)
    counts[0] = starts[0]
    counts[1:-1:2] = ends - starts
    counts[2:-1:2] = starts[1:] - ends[:-1]
    counts[-1] = height * width - ends[-1]
    rle = mask_util.frPyObjects({"size": [height, width], "counts": counts.tolist()}, height, width)
    return {"size": [height, width], "counts": rle["counts"].decode("ascii")}


def shift_polygons(polygons, dx, dy):
    """COCO polygons moved by (dx, dy) pixels."""
    return [(np.asarray(p, float).reshape(-1, 2) + (dx, dy)).ravel().tolist() for p in polygons]


def segmentation_to_rle(segmentation, height, width):
    """Compressed RLE of a COCO segmentation: polygons, compressed (str or bytes) or uncompressed RLE."""
    if isinstance(segmentation, list):
        if not segmentation:
            return mask_util.encode(np.zeros((height, width), np.uint8, order="F"))
        return mask_util.merge(mask_util.frPyObjects(segmentation, height, width))
    if isinstance(segmentation["counts"], list):
        return mask_util.frPyObjects(segmentation, height, width)
    if isinstance(segmentation["counts"], str):
        return dict(segmentation, counts=segmentation["counts"].encode("ascii"))
    return segmentation


def segmentation_to_mask(segmentation, height, width):
    """Boolean (H, W) mask of a COCO segmentation (see :func:`segmentation_to_rle`)."""
    return mask_util.decode(segmentation_to_rle(segmentation, height, width)).astype(bool)


def _bbox(rle):
    return [float(v) for v in mask_util.toBbox(rle)]


def _annotation(ann_id, image_id, category_id, segmentation, rle_for_area):
    return {
        "id": ann_id, "image_id": image_id, "category_id": category_id, "segmentation": segmentation,
        "area": int(mask_util.area(rle_for_area)), "bbox": _bbox(rle_for_area), "iscrowd": 0,
    }


# ---------------------------------------------------------------- instance rasters -> COCO
def raster_instances(labels, polygons=False):
    """[(instance id, segmentation, compressed RLE)] of an instance raster (0 = background; every id is
    one instance, however small or in however many parts); RLE segmentations, or exact polygons."""
    height, width = labels.shape
    if labels.size and labels.min() < 0:
        raise ValueError(f"negative instance ids ({labels.min()}); 0 is background, instances are > 0")
    out = []
    for index, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        crop = labels[box] == index
        rle = _rle_of_crop(crop, box[0].start, box[1].start, height, width)
        segmentation = shift_polygons(mask_to_polygons(crop), box[1].start, box[0].start) if polygons else rle
        out.append((index, segmentation, rle))
    return out


def instance_rasters_to_coco(image_folder, raster_folder, category="object", polygons=False, progress=None):
    """COCO instances of images and their instance rasters (PNG / TIFF / NPY, matched by stem).

    ``file_name`` is relative to ``image_folder``; one category (id 1) named ``category``. ``progress``:
    optional wrapper of the pair iterator (a progress bar)."""
    pairs = pair_by_stem(image_folder, raster_folder, "instance raster", (".png", ".tif", ".tiff", ".npy"))
    images, annotations = [], []
    for image_id, (_, image_path, raster_path) in enumerate(progress(pairs) if progress else pairs, start=1):
        height, width = image_size(image_path)
        labels = read_label_map(raster_path)
        if labels.shape != (height, width):
            raise ValueError(f"{raster_path}: raster is {labels.shape[1]}x{labels.shape[0]} (WxH), its image "
                             f"{image_path} is {width}x{height}")
        images.append({"id": image_id, "file_name": os.path.relpath(image_path, image_folder),
                       "height": height, "width": width})
        for _, segmentation, rle in raster_instances(labels, polygons):
            annotations.append(_annotation(len(annotations) + 1, image_id, 1, segmentation, rle))
    return {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": category}]}


# ---------------------------------------------------------------- COCO -> semantic / panoptic
def _annotations_by_image(coco):
    by_image = {image["id"]: [] for image in coco["images"]}
    for ann in coco["annotations"]:
        if ann.get("image_id") not in by_image:
            raise ValueError(f"annotation id {ann.get('id')!r} refers to unknown image id {ann.get('image_id')!r}")
        by_image[ann["image_id"]].append(ann)
    return by_image


def _paint(canvas, masks_values):
    """Paints (mask, value) pairs largest first, so a smaller object stays visible on a larger one; returns
    the number of pixels painted over."""
    overlapped = 0
    painted = np.zeros(canvas.shape, bool)
    for mask, value in sorted(masks_values, key=lambda mv: -np.count_nonzero(mv[0])):
        overlapped += int(np.count_nonzero(painted & mask))
        canvas[mask] = value
        painted |= mask
    return overlapped


def _png_name(file_name):
    return os.path.splitext(file_name)[0] + ".png"


def _save_labels(labels, path, max_value):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    if max_value < 256:
        Image.fromarray(labels.astype(np.uint8)).save(path)
    else:
        cv2.imwrite(path, labels.astype(np.uint16))


def coco_to_semantic(coco, out_folder, background="background", drop=(), crowd_ignore=True, ignore_label=255):
    """Semantic label PNGs (one per image, named as the image with ``.png``) of COCO instances.

    Label 0 is ``background`` (pixels of no instance), then each category in id order (1..K);
    categories named in ``drop`` are left out (their pixels stay background); crowd regions get
    ``ignore_label`` when ``crowd_ignore``. Returns the class names (index = label value).
    """
    categories = sorted((c for c in coco["categories"] if c["name"] not in set(drop)), key=lambda c: c["id"])
    label_of = {c["id"]: k for k, c in enumerate(categories, start=1)}
    classes = [background] + [c["name"] for c in categories]
    if len(classes) > ignore_label:
        raise ValueError(f"{len(classes)} classes do not fit below the ignore label {ignore_label}")
    by_image, overlapped = _annotations_by_image(coco), 0
    for image in coco["images"]:
        labels = np.zeros((image["height"], image["width"]), np.int32)
        anns = [a for a in by_image[image["id"]] if a["category_id"] in label_of]
        pairs = [(segmentation_to_mask(a["segmentation"], image["height"], image["width"]),
                  ignore_label if crowd_ignore and a.get("iscrowd", 0) else label_of[a["category_id"]])
                 for a in anns]
        overlapped += _paint(labels, pairs)
        _save_labels(labels, os.path.join(out_folder, _png_name(image["file_name"])), ignore_label)
    if overlapped:
        logger.warning(f"{overlapped} pixel(s) covered by more than one instance: labelled with the smaller one")
    return classes


def ids_to_rgb(ids):
    """COCO panoptic PNG colours of a segment id map: id = R + 256 G + 256^2 B."""
    ids = np.asarray(ids, np.uint32)
    return np.stack([(ids >> shift) & 255 for shift in (0, 8, 16)], -1).astype(np.uint8)


def rgb_to_ids(rgb):
    """Segment ids of a COCO panoptic PNG's (H, W, 3) colours."""
    rgb = np.asarray(rgb, np.uint32)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def _merge_categories(instances, stuff, background_stuff, drop):
    things = [dict(c, isthing=1) for c in instances["categories"] if c["name"] not in drop]
    stuffs = [dict(c, isthing=0) for c in (stuff["categories"] if stuff else [])]
    clash = {c["id"] for c in things} & {c["id"] for c in stuffs}
    if clash:
        raise ValueError(f"category ids {sorted(clash)} are both thing (instances) and stuff categories")
    categories = things + stuffs
    if background_stuff:
        categories.append({"id": max(c["id"] for c in categories) + 1, "name": background_stuff, "isthing": 0})
    return sorted(categories, key=lambda c: c["id"])


def coco_to_panoptic(instances, out_png_folder, stuff=None, background_stuff=None, drop=()):
    """COCO panoptic JSON (returned) and PNGs (written) of COCO instances plus, optionally, stuff
    annotations in COCO form (same image ids) and/or one stuff class ``background_stuff`` for the pixels
    left unlabelled (else they are void, id 0). Things are painted over stuff, smaller over larger.
    A segment painted over entirely is reported and left out. Thing categories named in ``drop`` are
    left out with their annotations."""
    categories = _merge_categories(instances, stuff, background_stuff, set(drop))
    kept = {c["id"] for c in categories}
    background_id = max(c["id"] for c in categories) if background_stuff else None
    things, stuffs = _annotations_by_image(instances), _annotations_by_image(stuff) if stuff else {}
    annotations, overlapped, hidden = [], 0, []
    for image in instances["images"]:
        height, width = image["height"], image["width"]
        ids = np.zeros((height, width), np.int32)
        anns = stuffs.get(image["id"], []) + [a for a in things[image["id"]] if a["category_id"] in kept]
        masks = [segmentation_to_mask(a["segmentation"], height, width) for a in anns]
        stuff_count = len(stuffs.get(image["id"], []))
        _paint(ids, [(m, k + 1) for k, m in enumerate(masks[:stuff_count])])
        overlapped += _paint(ids, [(m, k + 1) for k, m in enumerate(masks) if k >= stuff_count])
        segments = []
        for k, ann in enumerate(anns):
            segment = ids == k + 1
            if not segment.any():
                hidden.append(ann.get("id"))
                continue
            rle = mask_to_rle(segment)
            segments.append({"id": k + 1, "category_id": ann["category_id"], "iscrowd": int(ann.get("iscrowd", 0)),
                             "area": int(mask_util.area(rle)), "bbox": _bbox(rle)})
        if background_stuff and (ids == 0).any():
            rle = mask_to_rle(ids == 0)
            ids[ids == 0] = len(anns) + 1
            segments.append({"id": len(anns) + 1, "category_id": background_id, "iscrowd": 0,
                             "area": int(mask_util.area(rle)), "bbox": _bbox(rle)})
        png = _png_name(image["file_name"])
        os.makedirs(os.path.dirname(os.path.join(out_png_folder, png)), exist_ok=True)
        Image.fromarray(ids_to_rgb(ids)).save(os.path.join(out_png_folder, png))
        annotations.append({"image_id": image["id"], "file_name": png, "segments_info": segments})
    if overlapped:
        logger.warning(f"{overlapped} pixel(s) covered by more than one thing: given to the smaller one")
    if hidden:
        logger.warning(f"{len(hidden)} annotation(s) entirely covered by others, left out: ids {few(map(str, hidden))}")
    return {"images": instances["images"], "annotations": annotations, "categories": categories}


# ---------------------------------------------------------------- labelme -> COCO
def _labelme_polygons(shape, where):
    """COCO polygons of one labelme shape, or None for shapes without area."""
    points = np.asarray(shape.get("points", []), float)
    kind = shape.get("shape_type") or "polygon"
    if kind == "polygon" and len(points) >= 3:
        return [points.ravel().tolist()]
    if kind == "rectangle" and len(points) == 2:
        (x0, y0), (x1, y1) = points.min(axis=0), points.max(axis=0)
        return [[x0, y0, x1, y0, x1, y1, x0, y1]]
    if kind == "circle" and len(points) == 2:
        (cx, cy), edge = points
        radius = math.hypot(*(edge - (cx, cy)))
        angles = np.linspace(0, 2 * np.pi, CIRCLE_VERTICES, endpoint=False)
        return [np.stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)], -1).ravel().tolist()]
    if kind in ("polygon", "rectangle", "circle"):
        raise ValueError(f"{where}: a {kind} with {len(points)} point(s)")
    return None


def labelme_to_coco(json_files, image_root, classes=None):
    """COCO instances of labelme JSON files. Shapes sharing a label and a ``group_id`` are one instance;
    ``classes`` (names) fixes the category order (ids 1..K), else the labels found, sorted."""
    records, skipped = [], {}
    for path in json_files:
        data = read_json(path)
        image_path = os.path.normpath(os.path.join(os.path.dirname(path), data.get("imagePath") or ""))
        if not os.path.isfile(image_path):
            raise FileNotFoundError(f"{path}: its imagePath {data.get('imagePath')!r} is not a file ({image_path})")
        groups = {}
        for k, shape in enumerate(data.get("shapes", [])):
            polygons = _labelme_polygons(shape, f"{path}: shape #{k} ({shape.get('label')!r})")
            if polygons is None:
                skipped[shape.get("shape_type")] = skipped.get(shape.get("shape_type"), 0) + 1
                continue
            group = shape.get("group_id")
            key = (shape["label"], group if group is not None else ("shape", k))
            groups.setdefault(key, []).extend(polygons)
        records.append((path, image_path, data, groups))
    names = list(classes) if classes else sorted({label for *_, groups in records for label, _ in groups})
    category_id = {name: k for k, name in enumerate(names, start=1)}
    images, annotations = [], []
    for image_id, (path, image_path, data, groups) in enumerate(records, start=1):
        height, width = image_size(image_path)
        if (data.get("imageHeight"), data.get("imageWidth")) not in ((None, None), (height, width)):
            raise ValueError(f"{path}: imageHeight/imageWidth {data['imageHeight']}x{data['imageWidth']} but "
                             f"{image_path} is {height}x{width}")
        images.append({"id": image_id, "file_name": os.path.relpath(image_path, image_root),
                       "height": height, "width": width})
        for (label, _), polygons in groups.items():
            if label not in category_id:
                raise ValueError(f"{path}: label {label!r} is not one of the classes {names}")
            rle = mask_util.merge(mask_util.frPyObjects(polygons, height, width))
            annotations.append(_annotation(len(annotations) + 1, image_id, category_id[label], polygons, rle))
    if skipped:
        logger.warning("labelme shapes without area, not converted: " + ", ".join(f"{n} {k}" for k, n in skipped.items()))
    return {"images": images, "annotations": annotations,
            "categories": [{"id": i, "name": n} for n, i in category_id.items()]}


# ---------------------------------------------------------------- YOLO-seg <-> COCO
def _yolo_polygon(values, width, height):
    xy = np.asarray(values, float).reshape(-1, 2) * (width, height)
    return xy.ravel().tolist()


def _yolo_line_polygon(tokens, width, height, where):
    values = [float(v) for v in tokens[1:]]
    if len(values) == 4:  # a detection line: centre x, y, width, height -> its rectangle
        cx, cy, w, h = values
        values = [cx - w / 2, cy - h / 2, cx + w / 2, cy - h / 2, cx + w / 2, cy + h / 2, cx - w / 2, cy + h / 2]
    if len(values) < 6 or len(values) % 2:
        raise ValueError(f"{where}: {len(values)} coordinates; a YOLO-seg polygon has x y pairs, at least 3")
    return _yolo_polygon(values, width, height)


def yolo_to_coco(label_folder, image_folder, names):
    """COCO instances of YOLO-seg label files (``class x1 y1 x2 y2 ...``, coordinates in 0..1 of the image
    size; a 4-number line is a box) matched to images by stem; class k becomes category id k + 1.
    A ``names.txt`` or ``classes.txt`` at the top of ``label_folder`` is not a label file."""
    pairs = pair_by_stem(image_folder, label_folder, "YOLO label", (".txt",), ignore=("names.txt", "classes.txt"))
    images, annotations = [], []
    for image_id, (_, image_path, label_path) in enumerate(pairs, start=1):
        height, width = image_size(image_path)
        images.append({"id": image_id, "file_name": os.path.relpath(image_path, image_folder),
                       "height": height, "width": width})
        with open(label_path) as f:
            lines = [(n, line.split()) for n, line in enumerate(f, start=1) if line.strip()]
        for n, tokens in lines:
            where = f"{label_path}: line {n}"
            if not tokens[0].isdigit() or int(tokens[0]) >= len(names):
                raise ValueError(f"{where}: class {tokens[0]!r} is not an index into the {len(names)} class names")
            polygon = _yolo_line_polygon(tokens, width, height, where)
            rle = mask_util.merge(mask_util.frPyObjects([polygon], height, width))
            annotations.append(_annotation(len(annotations) + 1, image_id, int(tokens[0]) + 1, [polygon], rle))
    return {"images": images, "annotations": annotations,
            "categories": [{"id": k + 1, "name": name} for k, name in enumerate(names)]}


def coco_to_yolo(coco, out_folder):
    """YOLO-seg label files (one per image, ``<image stem>.txt``) and ``names.txt`` of COCO instances;
    classes are the categories in id order (index = YOLO class). Returns the class names."""
    categories = sorted(coco["categories"], key=lambda c: c["id"])
    index = {c["id"]: k for k, c in enumerate(categories)}
    by_image, split = _annotations_by_image(coco), 0
    for image in coco["images"]:
        height, width = image["height"], image["width"]
        lines = []
        for ann in by_image[image["id"]]:
            polygons = ann["segmentation"]
            if isinstance(polygons, dict):
                polygons = mask_to_polygons(segmentation_to_mask(polygons, height, width))
            split += len(polygons) > 1
            for polygon in polygons:
                xy = (np.asarray(polygon, float).reshape(-1, 2) / (width, height)).ravel()
                lines.append(" ".join([str(index[ann["category_id"]])] + [repr(float(v)) for v in xy]))
        path = os.path.join(out_folder, os.path.splitext(image["file_name"])[0] + ".txt")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write("".join(line + "\n" for line in lines))
    with open(os.path.join(out_folder, "names.txt"), "w") as f:
        f.write("".join(c["name"] + "\n" for c in categories))
    if split:
        logger.warning(f"{split} instance(s) of several polygons became one YOLO line per polygon")
    return [c["name"] for c in categories]


# ---------------------------------------------------------------- flat polygons
def nest_flat_polygons(coco):
    """COCO whose flat polygon lists ([x1, y1, ...], a common export bug) are nested ([[x1, y1, ...]]);
    returns (the fixed data, ids of the annotations fixed)."""
    fixed = []
    for ann in coco["annotations"]:
        segmentation = ann.get("segmentation")
        if isinstance(segmentation, list) and segmentation and not isinstance(segmentation[0], list):
            ann["segmentation"] = [segmentation]
            fixed.append(ann.get("id"))
    return coco, fixed
