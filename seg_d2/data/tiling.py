"""Tiles of large images: the window grid shared by tiled training data and sliding-window inference, and
datasets derived from another by cutting its images into tiles or to one region (a spatial split).

A derived record is its source image's record restricted to a "window" (x0, y0, x1, y1) of the source
pixels: ``file_name`` stays the source file (the mappers read only the window, see
:mod:`seg_d2.data.image_io`), ``height`` / ``width`` are the window's, instance annotations are cropped to
it (exact RLE; boxes recomputed), semantic labels are cropped into cached PNGs, and ``source_image_id``
keeps the mapping back to the source image::

    register_tiled_dataset("big_train", "big", tile_size=512, overlap=64, drop_empty=True,
                           exclude=Window.parse("0.5,0.5,1.0,1.0"))          # 3 quadrants, tiled
    register_region_dataset("big_test", "big", Window.parse("0.5,0.5,1.0,1.0"))  # the 4th, whole
"""
import copy
import dataclasses
import logging

import numpy as np
import pycocotools.mask as mask_util
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from ..utils.progress import progress
from .converters import mask_to_rle, segmentation_to_mask, shift_polygons
from .derived import cached_file, source_stamp, write_json_cached
from .image_io import image_size, read_label_map

__all__ = ["Window", "crop_record", "record_size", "register_region_dataset", "register_tiled_dataset", "tile_records",
           "tile_windows"]

logger = logging.getLogger(__name__)


def _starts(length, tile, stride):
    """Window starts along one axis: every ``stride``, the last window flush with the far border."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def tile_windows(height, width, tile_size, overlap):
    """(x0, y0, x1, y1) windows of at most ``tile_size`` pixels a side, neighbours sharing at least
    ``overlap`` pixels, covering the whole image; images smaller than a tile are one window."""
    if tile_size <= 0 or not 0 <= overlap < tile_size:
        raise ValueError(f"need tile_size > 0 and 0 <= overlap < tile_size, got {tile_size}, {overlap}")
    stride = tile_size - overlap
    return [
        (x0, y0, min(x0 + tile_size, width), min(y0 + tile_size, height))
        for y0 in _starts(height, tile_size, stride)
        for x0 in _starts(width, tile_size, stride)
    ]


@dataclasses.dataclass(frozen=True)
class Window:
    """A rectangle (x0, y0, x1, y1) of every image of a dataset; each value is pixels (an int) or a
    fraction of the image's width / height (a float, e.g. 0.5), so one window splits images of any size."""

    bounds: tuple

    @classmethod
    def parse(cls, text):
        """From "x0,y0,x1,y1": integers are pixels, numbers with a decimal point fractions."""
        parts = [p.strip() for p in str(text).split(",")]
        if len(parts) != 4:
            raise ValueError(f"a window is 'x0,y0,x1,y1', got {text!r}")
        try:
            return cls(tuple(float(p) if "." in p else int(p) for p in parts))
        except ValueError:
            raise ValueError(f"a window is 'x0,y0,x1,y1' of numbers, got {text!r}") from None

    def pixels(self, height, width):
        """(x0, y0, x1, y1) in pixels of an image of ``height`` x ``width``, clipped to it."""
        sizes = (width, height, width, height)
        x0, y0, x1, y1 = (round(v * s) if isinstance(v, float) else v for v, s in zip(self.bounds, sizes))
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
        if x1 <= x0 or y1 <= y0:
            raise ValueError(f"window {self.bounds} is empty in a {width}x{height} image")
        return x0, y0, x1, y1


def _overlaps(a, b):
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


# ---------------------------------------------------------------- cropping records
def _xywh(annotation):
    return BoxMode.convert(list(annotation["bbox"]), annotation.get("bbox_mode", BoxMode.XYWH_ABS),
                           BoxMode.XYWH_ABS)


def _local_mask(segmentation, height, width):
    """(mask, x0, y0): the segmentation's mask over a part of the image that holds all of it, at (x0, y0).
    Polygons are rasterised in their own bounding box (the same pixels as in the whole image: the shift
    is a whole number of pixels, and nothing of them is clipped), an RLE over the whole image."""
    if not isinstance(segmentation, list):
        return segmentation_to_mask(segmentation, height, width), 0, 0
    points = np.concatenate([np.asarray(p, float).reshape(-1, 2) for p in segmentation])
    x0, y0 = (max(int(v), 0) for v in np.floor(points.min(axis=0)))
    x1, y1 = min(int(np.ceil(points[:, 0].max())) + 1, width), min(int(np.ceil(points[:, 1].max())) + 1, height)
    if x1 <= x0 or y1 <= y0:
        return np.zeros((0, 0), bool), 0, 0
    return segmentation_to_mask(shift_polygons(segmentation, -x0, -y0), y1 - y0, x1 - x0), x0, y0


def _window_of(local, window):
    """The window's (height, width) mask of a local mask (mask, x0, y0)."""
    mask, lx, ly = local
    x0, y0, x1, y1 = window
    out = np.zeros((y1 - y0, x1 - x0), bool)
    ix0, iy0 = max(x0, lx), max(y0, ly)
    ix1, iy1 = min(x1, lx + mask.shape[1]), min(y1, ly + mask.shape[0])
    if ix1 > ix0 and iy1 > iy0:
        out[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] = mask[iy0 - ly:iy1 - ly, ix0 - lx:ix1 - lx]
    return out


def _crop_annotations(annotations, windows, height, width, min_area):
    """{window index: cropped annotations}: each annotation rasterised once and cropped into every window
    its box meets. A part cut by a window's border smaller than ``min_area`` pixels is left out; whole
    instances are always kept."""
    cropped = {k: [] for k in range(len(windows))}
    for ann in annotations:
        if "keypoints" in ann:
            raise ValueError("tiles of datasets with keypoints are not supported")
        x, y, w, h = _xywh(ann)
        hits = [k for k, window in enumerate(windows) if _overlaps((x, y, x + w, y + h), window)]
        if not hits:
            continue
        if "segmentation" not in ann:
            raise ValueError("tiles need instance masks: an annotation has no 'segmentation'")
        local = _local_mask(ann["segmentation"], height, width)
        whole = int(local[0].sum())
        for k in hits:
            mask = _window_of(local, windows[k])
            area = int(mask.sum())
            if area == 0 or (area < whole and area < min_area):
                continue
            rle = mask_to_rle(mask)
            cropped[k].append({**ann, "segmentation": rle, "bbox": mask_util.toBbox(rle).tolist(),
                               "bbox_mode": BoxMode.XYWH_ABS, "area": area})
    return cropped


def _crop_labels(path, windows):
    """Cached PNG crops of a semantic label map, one per window (the map is read only if one is missing)."""
    loaded = []

    def writer(window):
        def write(out):
            if not loaded:
                loaded.append(read_label_map(path))
            x0, y0, x1, y1 = window
            crop = loaded[0][y0:y1, x0:x1]
            Image.fromarray(crop.astype(np.uint8 if crop.max(initial=0) < 256 else np.uint16)).save(out)
        return write

    stamp = source_stamp(path)
    return [cached_file("label_crops", [stamp, list(window)], ".png", writer(window)) for window in windows]


def _is_empty(annotations, label_path, ignore_label):
    """No instance, and no semantic label but background (0) and ignore."""
    if annotations:
        return False
    if label_path is None:
        return True
    values = np.unique(read_label_map(label_path))
    return bool(np.isin(values, [0, ignore_label]).all())


def record_size(record):
    """(height, width) of a record's image: its own fields, else the image header (Detectron2's
    semantic loaders give none)."""
    if "height" in record and "width" in record:
        return record["height"], record["width"]
    return image_size(record["file_name"])


def crop_record(record, windows, drop_empty=False, min_area=0, ignore_label=255):
    """Records of ``record`` restricted to each of ``windows`` (pixels of the record's own image);
    ``drop_empty`` leaves out windows with nothing labelled (see :func:`_is_empty`)."""
    if "pan_seg_file_name" in record:
        raise ValueError(f"{record['file_name']}: tiles of panoptic-PNG records are not supported "
                         "(register the panoptic set with form=separated)")
    height, width = record_size(record)
    cropped = _crop_annotations(record.get("annotations", []), windows, height, width, min_area)
    labels = _crop_labels(record["sem_seg_file_name"], windows) if "sem_seg_file_name" in record else None
    ox, oy = record.get("window", (0, 0))[:2]  # a record that is already a window of its source image
    out = []
    for k, (x0, y0, x1, y1) in enumerate(windows):
        label_path = labels[k] if labels else None
        if drop_empty and _is_empty(cropped[k], label_path, ignore_label):
            continue
        tile = {key: value for key, value in record.items() if key not in ("annotations", "sem_seg_file_name")}
        tile.update(window=[ox + x0, oy + y0, ox + x1, oy + y1], height=y1 - y0, width=x1 - x0,
                    source_image_id=record.get("source_image_id", record.get("image_id")))
        if "annotations" in record:
            tile["annotations"] = cropped[k]
        if label_path:
            tile["sem_seg_file_name"] = label_path
        out.append(tile)
    return out


def tile_records(records, tile_size, overlap=0, drop_empty=False, region=None, exclude=None, min_area=0,
                 ignore_label=255, desc="tiling"):
    """Every record cut into :func:`tile_windows` tiles, only those inside ``region`` and not touching
    ``exclude`` (:class:`Window` s) when given; tiles get image ids 1..N."""
    tiles = []
    for record in progress(records, desc, unit="image"):
        height, width = record_size(record)
        windows = tile_windows(height, width, tile_size, overlap)
        if region is not None:
            rx0, ry0, rx1, ry1 = region.pixels(height, width)
            windows = [(x0 + rx0, y0 + ry0, x1 + rx0, y1 + ry0) for x0, y0, x1, y1 in
                       tile_windows(ry1 - ry0, rx1 - rx0, tile_size, overlap)]
        if exclude is not None:
            excluded = exclude.pixels(height, width)
            windows = [w for w in windows if not _overlaps(w, excluded)]
        tiles += crop_record(record, windows, drop_empty, min_area, ignore_label)
    for image_id, tile in enumerate(tiles, start=1):
        tile["image_id"] = image_id
    return tiles


# ---------------------------------------------------------------- derived datasets
def _coco_json(records, metadata):
    """COCO instances JSON (cached by content) of records, for COCOEvaluator: their own ground truth."""
    to_dataset_id = {v: k for k, v in metadata.get("thing_dataset_id_to_contiguous_id", {}).items()}
    images, annotations = [], []
    for record in records:
        images.append({"id": record["image_id"], "file_name": record["file_name"], "height": record["height"],
                       "width": record["width"]})
        for ann in record.get("annotations", []):
            annotations.append({"id": len(annotations) + 1, "image_id": record["image_id"],
                                "category_id": to_dataset_id.get(ann["category_id"], ann["category_id"]),
                                "segmentation": ann["segmentation"], "area": ann["area"], "bbox": ann["bbox"],
                                "iscrowd": int(ann.get("iscrowd", 0))})
    names = metadata.get("thing_classes", [])
    categories = [{"id": to_dataset_id.get(k, k), "name": name} for k, name in enumerate(names)]
    return write_json_cached("derived_instances", {"images": images, "annotations": annotations,
                                                   "categories": categories})


def _register_derived(name, source, records, what):
    """Register ``records`` under ``name`` with the source's metadata, made true of the crops."""
    meta = dict(MetadataCatalog.get(source).as_dict())
    for key in ("name", "json_file", "panoptic_json", "panoptic_root", "sem_seg_root"):
        meta.pop(key, None)
    if meta.get("evaluator_type") == "coco_panoptic_seg":
        meta.pop("evaluator_type")  # panoptic quality needs panoptic PNG crops: training only
    if any("annotations" in r for r in records) and "thing_classes" in meta:
        meta["json_file"] = _coco_json(records, meta)
    DatasetCatalog.register(name, lambda: copy.deepcopy(records))
    MetadataCatalog.get(name).set(source_dataset=source, **meta)
    instances = sum(len(r.get("annotations", [])) for r in records)
    logger.info(f"{name}: {what} of {source}: {len(records)} images, {instances} instances")


def _source_records(source):
    if source not in DatasetCatalog.list():
        raise ValueError(f"source dataset {source!r} is not registered (register it first, e.g. earlier in "
                       "DATASETS.REGISTER)")
    return DatasetCatalog.get(source)


def register_tiled_dataset(name, source, tile_size, overlap=0, drop_empty=False, region=None, exclude=None,
                           min_area=0):
    """Register the tiles of every image of dataset ``source`` (see :func:`tile_records`) as ``name``."""
    ignore = MetadataCatalog.get(source).get("ignore_label", 255)
    records = tile_records(_source_records(source), tile_size, overlap, drop_empty, region, exclude, min_area,
                           ignore, desc=f"{name}: tiling {source}")
    if not records:
        raise ValueError(f"{name}: no tile of {source} is left (all empty, excluded or outside the region)")
    _register_derived(name, source, records, f"{tile_size}-pixel tiles (overlap {overlap})")


def register_region_dataset(name, source, region, min_area=0):
    """Register dataset ``source`` restricted to ``region`` (a :class:`Window`) of each image as ``name``:
    one record per image, with its id kept (a held-out area evaluated whole)."""
    if MetadataCatalog.get(source).get("evaluator_type") == "coco_panoptic_seg":
        raise ValueError(f"{name}: a region of the panoptic dataset {source!r} is not supported (panoptic quality "
                         "needs panoptic PNG crops); take the region of its instance or semantic form")
    ignore = MetadataCatalog.get(source).get("ignore_label", 255)
    records = []
    for record in progress(_source_records(source), f"{name}: cropping {source}", unit="image"):
        window = region.pixels(*record_size(record))
        records += crop_record(record, [window], min_area=min_area, ignore_label=ignore)
    _register_derived(name, source, records, f"region {region.bounds}")
