"""Datasets of folders: images + semantic label maps, images + instance rasters (matched by file stem).

    register_sem_seg_dataset("roads_train", "img/train", "labels/train", classes="classes.json")
    register_instance_rasters_dataset("cells_train", "img", "masks", category="nucleus")

Registration reads every label map (with a progress bar): sizes against the images, ids against the class
list. Instance rasters become a COCO instances JSON (exact RLE, every instance however small, cached in
:mod:`seg_d2.data.derived`), registered as a COCO dataset.
"""
import copy
import json
import logging
import os

import numpy as np

from detectron2.data import DatasetCatalog, MetadataCatalog

from ..utils.progress import progress
from .converters import instance_rasters_to_coco, pair_by_stem, read_json
from .derived import cached_file, source_stamp
from .image_io import read_label_map
from .register import IGNORE_LABEL, checked_image_size, register_coco_instances_dataset

__all__ = ["LABEL_EXTENSIONS", "load_classes", "register_instance_rasters_dataset", "register_sem_seg_dataset"]

logger = logging.getLogger(__name__)

LABEL_EXTENSIONS = (".png", ".tif", ".tiff", ".npy")


def load_classes(classes, ignore_label=IGNORE_LABEL):
    """(class names or None, ignore label) from a list of names, or a JSON file holding a list of names or
    {"classes": [...], "ignore_label": N} (as tools/convert.py coco-to-semantic writes)."""
    if classes is None or isinstance(classes, (list, tuple)):
        return (list(classes) if classes is not None else None), ignore_label
    data = read_json(os.fspath(classes))
    if isinstance(data, dict):
        data, ignore_label = data.get("classes"), data.get("ignore_label", ignore_label)
    if not (isinstance(data, list) and data and all(isinstance(name, str) for name in data)):
        raise ValueError(f"{classes}: expected a list of class names, or {{\"classes\": [names], \"ignore_label\": N}}")
    return data, int(ignore_label)


def _label_values(labels):
    """The distinct ids of a label map (bincount for small unsigned ids: no sort of every pixel)."""
    if labels.dtype in (np.uint8, np.uint16):
        return np.flatnonzero(np.bincount(labels.ravel()))
    return np.unique(labels)


def _check_labels(labels, path, classes, ignore_label):
    """Largest id other than ``ignore_label``; an id outside the class list is an error naming the file."""
    values = _label_values(labels)
    values = values[values != ignore_label]
    if values.size and values.min() < 0:
        raise ValueError(f"{path}: negative label id {values.min()}")
    if classes is not None and values.size and values.max() >= len(classes):
        raise ValueError(f"{path}: label id {values.max()} but {len(classes)} classes (ids 0..{len(classes) - 1}, "
                         f"ignore {ignore_label})")
    return int(values.max()) if values.size else -1


def register_sem_seg_dataset(name, image_folder, label_folder, classes=None, ignore_label=IGNORE_LABEL,
                             check_images="header"):
    """Register images and their semantic label maps (PNG 8/16-bit or palette, TIFF, NPY; value = class
    index, ``ignore_label`` = not scored), matched by file stem, as a "sem_seg" dataset.

    ``classes``: class names (index = label value), or a JSON file of them (see :func:`load_classes`); None
    names them "0".."K-1" from the largest id found, with a warning (a class absent from this split would
    then be missing: pass the names). Every label map is read: its size must be its image's, its ids below
    the number of classes. ``check_images``: "header" / "decode" (every pixel) / "none" (sizes from labels).
    """
    image_folder, label_folder = os.fspath(image_folder), os.fspath(label_folder)
    classes, ignore_label = load_classes(classes, ignore_label)
    pairs = pair_by_stem(image_folder, label_folder, "label map", LABEL_EXTENSIONS)
    records, largest = [], -1
    for stem, image_path, label_path in progress(pairs, f"{name}: checking label maps", unit="image"):
        labels = read_label_map(label_path)
        if check_images == "none":
            height, width = labels.shape
        else:
            height, width = checked_image_size(image_path, check_images)
        if labels.shape != (height, width):
            raise ValueError(f"{label_path}: label map is {labels.shape[1]}x{labels.shape[0]} (WxH), its image "
                             f"{image_path} is {width}x{height}")
        largest = max(largest, _check_labels(labels, label_path, classes, ignore_label))
        records.append({"file_name": image_path, "sem_seg_file_name": label_path, "height": height,
                        "width": width, "image_id": stem})
    if classes is None:
        classes = [str(k) for k in range(largest + 1)]
        logger.warning(f"{name}: no class names given; {len(classes)} classes named 0..{largest} from the largest "
                       f"label id in {label_folder}")
    DatasetCatalog.register(name, lambda: copy.deepcopy(records))
    MetadataCatalog.get(name).set(stuff_classes=classes, ignore_label=ignore_label, evaluator_type="sem_seg",
                                  image_root=image_folder, sem_seg_root=label_folder)


def register_instance_rasters_dataset(name, image_folder, raster_folder, category="object", check_images="header"):
    """Register images and their instance rasters (PNG / TIFF / NPY of ids, 0 = background, matched by
    stem) as a COCO instances dataset of one category: every id is one instance, however small (exact
    RLE). The COCO JSON is derived once per content of the folders (cached)."""
    image_folder, raster_folder = os.fspath(image_folder), os.fspath(raster_folder)
    pairs = pair_by_stem(image_folder, raster_folder, "instance raster", LABEL_EXTENSIONS)
    parts = [category, [(source_stamp(image), source_stamp(raster)) for _, image, raster in pairs]]

    def write(path):
        coco = instance_rasters_to_coco(image_folder, raster_folder, category,
                                        progress=lambda p: progress(p, f"{name}: reading rasters", unit="image"))
        with open(path, "w") as f:
            json.dump(coco, f)

    json_file = cached_file("instance_rasters", parts, ".json", write)
    register_coco_instances_dataset(name, json_file, image_folder, check_images=check_images)
    MetadataCatalog.get(name).set(raster_root=raster_folder)
