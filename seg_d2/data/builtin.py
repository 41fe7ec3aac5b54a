"""The built-in "shapes" datasets: synthetic scenes written once to a cache dir, then registered.

Registered names, for each split in ``SPLIT_SIZES`` (train, val):

- ``seg_d2_shapes_{split}``: COCO instances (evaluator_type "coco");
- ``seg_d2_shapes_{split}_panoptic``: Detectron2's "standard" COCO panoptic form, plus the instance
  annotations (evaluator_type "coco_panoptic_seg");
- ``seg_d2_shapes_{split}_panoptic_separated``: what Panoptic FPN trains on: instances + semantic
  labels 0 = things, 1..S = stuff (evaluator_type "coco_panoptic_seg");
- ``seg_d2_shapes_{split}_sem_seg``: semantic labels over all classes (evaluator_type "sem_seg").

Registering touches no file: metadata point into the cache dir, and the files are generated on the
first ``DatasetCatalog.get`` (or :func:`ensure_builtin_data`). The cache dir is
``$SEG_D2_DATA_DIR/<VERSION>``, else ``~/.cache/seg_d2/datasets/<VERSION>``, read at import.
"""
import functools
import json
import os
import shutil
import tempfile

import numpy as np
import pycocotools.mask as mask_util
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.coco import load_sem_seg
from detectron2.data.datasets.coco_panoptic import merge_to_panoptic

from .register import (
    instances_metadata,
    load_coco_instances,
    load_coco_panoptic,
    panoptic_separated_metadata,
    panoptic_standard_metadata,
    semantic_metadata,
)
from .synthetic import CATEGORIES, ID_DIVISOR, generate_scene

__all__ = [
    "VERSION",
    "SPLIT_SIZES",
    "default_root",
    "dataset_paths",
    "write_dataset",
    "ensure_dataset",
    "ensure_builtin_data",
    "register_shapes",
]

# Part of the cache path: bump it whenever the generator's output changes (no stale cache is read).
VERSION = "shapes-v1"
DEFAULT_SEED = 0
SPLIT_SIZES = {"train": 200, "val": 50}
IGNORE_LABEL = 255


def default_root():
    base = os.environ.get("SEG_D2_DATA_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "seg_d2", "datasets"
    )
    return os.path.join(base, VERSION)


def dataset_paths(root, split):
    """Where each form of one split lives under ``root``."""
    return {
        "image_root": os.path.join(root, "images", split),
        "json_file": os.path.join(root, "annotations", f"instances_{split}.json"),
        "panoptic_json": os.path.join(root, "annotations", f"panoptic_{split}.json"),
        "panoptic_root": os.path.join(root, "panoptic", split),
        "sem_seg_root": os.path.join(root, "panoptic_semseg", split),  # separated: 0 = things
        "semantic_root": os.path.join(root, "sem_seg", split),  # all classes
    }


# ---------------------------------------------------------------- writing
def _label_lut(category_to_label):
    """Lookup table: (segment id // ID_DIVISOR) -> label; void (0) -> IGNORE_LABEL."""
    lut = np.full(max(c["id"] for c in CATEGORIES) + 1, IGNORE_LABEL, np.uint8)
    for category_id, label in category_to_label.items():
        if category_id > 0:
            lut[category_id] = label
    return lut


_SEMANTIC_LUT = _label_lut(semantic_metadata(CATEGORIES)["stuff_dataset_id_to_contiguous_id"])
_SEPARATED_LUT = _label_lut(
    {
        **{c["id"]: 0 for c in CATEGORIES if c["isthing"]},
        **panoptic_separated_metadata(CATEGORIES)["stuff_dataset_id_to_contiguous_id"],
    }
)


def _id_to_rgb(segment_map):
    """COCO panoptic PNG encoding: id = R + 256 * G + 256^2 * B."""
    return np.stack([(segment_map >> shift) & 255 for shift in (0, 8, 16)], -1).astype(np.uint8)


def _save_png(array, path):
    Image.fromarray(array).save(path)


def _segment(segment_map, segment_id):
    """RLE (compressed, JSON-ready), area and XYWH bbox of one segment, all from pycocotools."""
    rle = mask_util.encode(np.asfortranarray(segment_map == segment_id, dtype=np.uint8))
    area = int(mask_util.area(rle))
    bbox = [int(v) for v in mask_util.toBbox(rle)]
    rle["counts"] = rle["counts"].decode("ascii")
    return rle, area, bbox


def _write_split(root, split, seeds):
    paths = dataset_paths(root, split)
    for key in ("image_root", "panoptic_root", "sem_seg_root", "semantic_root"):
        os.makedirs(paths[key])
    os.makedirs(os.path.dirname(paths["json_file"]), exist_ok=True)
    images, instances, panoptic = [], [], []
    for image_id, seed in enumerate(seeds, start=1):
        scene = generate_scene(np.random.default_rng(seed))
        file_name = f"{image_id:06d}.png"
        height, width = scene.segment_map.shape
        categories = scene.segment_map // ID_DIVISOR
        _save_png(scene.image, os.path.join(paths["image_root"], file_name))
        _save_png(_id_to_rgb(scene.segment_map), os.path.join(paths["panoptic_root"], file_name))
        _save_png(_SEPARATED_LUT[categories], os.path.join(paths["sem_seg_root"], file_name))
        _save_png(_SEMANTIC_LUT[categories], os.path.join(paths["semantic_root"], file_name))
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})

        segments_info = []
        for segment in scene.segments:
            rle, area, bbox = _segment(scene.segment_map, segment["id"])
            segments_info.append({**segment, "area": area, "bbox": bbox, "iscrowd": 0})
            if CATEGORIES[segment["category_id"] - 1]["isthing"]:
                instances.append(
                    {
                        "id": len(instances) + 1,
                        "image_id": image_id,
                        "category_id": segment["category_id"],
                        "segmentation": rle,
                        "area": area,
                        "bbox": bbox,
                        "iscrowd": 0,
                    }
                )
        panoptic.append(
            {"image_id": image_id, "file_name": file_name, "segments_info": segments_info}
        )

    things = [c for c in CATEGORIES if c["isthing"]]
    for path, annotations, categories in (
        (paths["json_file"], instances, things),
        (paths["panoptic_json"], panoptic, CATEGORIES),
    ):
        with open(path, "w") as f:
            json.dump({"images": images, "annotations": annotations, "categories": categories}, f)


def write_dataset(root, seed=DEFAULT_SEED, split_sizes=SPLIT_SIZES):
    """Generate every split into ``root`` (not atomic: see :func:`ensure_dataset`)."""
    for split_index, (split, size) in enumerate(split_sizes.items()):
        # one independent stream per image: a split's images don't depend on the other split's size
        _write_split(root, split, [[seed, split_index, i] for i in range(size)])
    with open(os.path.join(root, "info.json"), "w") as f:
        json.dump({"version": VERSION, "seed": seed, "split_sizes": split_sizes}, f)


def ensure_dataset(root, seed=DEFAULT_SEED, split_sizes=SPLIT_SIZES):
    """Generate the dataset at ``root`` unless it exists (non-empty); returns ``root``.

    Written to a temporary sibling dir then renamed, so ``root`` is either absent or complete:
    safe against interrupted runs and against concurrent processes (e.g. DDP workers) generating
    at once (the first rename wins, the others discard their copy).
    """
    if os.path.isdir(root) and os.listdir(root):
        return root
    # an absent or empty root: an empty directory is replaced by the rename below (POSIX)
    parent = os.path.dirname(os.path.abspath(root))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(root)}.tmp-", dir=parent)
    try:
        write_dataset(tmp, seed, split_sizes)
        os.rename(tmp, root)
    except OSError:
        if not os.path.isdir(root):  # a real failure, not another process winning the race
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # no-op after a successful rename
    return root


# ---------------------------------------------------------------- registration
def _load(prepare, loader, *args):
    prepare()
    return loader(*args)


def _load_panoptic_standard(json_file, panoptic_json, image_root, panoptic_root, meta):
    return merge_to_panoptic(
        load_coco_instances(json_file, image_root, meta["thing_dataset_id_to_contiguous_id"]),
        load_coco_panoptic(panoptic_json, image_root, panoptic_root, meta),
    )


def _load_panoptic_separated(json_file, image_root, sem_seg_root, id_map):
    return merge_to_panoptic(
        load_coco_instances(json_file, image_root, id_map),
        load_sem_seg(sem_seg_root, image_root, gt_ext="png", image_ext="png"),
    )


def _register(name, prepare, loader, loader_args, metadata):
    DatasetCatalog.register(name, functools.partial(_load, prepare, loader, *loader_args))
    MetadataCatalog.get(name).set(**metadata)


def register_shapes(name="seg_d2_shapes", root=None, seed=DEFAULT_SEED, split_sizes=SPLIT_SIZES):
    """Register the four forms of every split of a shapes dataset generated lazily at ``root``."""
    root = default_root() if root is None else root
    prepare = functools.partial(ensure_dataset, root, seed, split_sizes)
    things = [c for c in CATEGORIES if c["isthing"]]
    for split in split_sizes:
        p = dataset_paths(root, split)
        common = {"image_root": p["image_root"], "ignore_label": IGNORE_LABEL}
        panoptic = {
            **common,
            "json_file": p["json_file"],
            "panoptic_json": p["panoptic_json"],
            "panoptic_root": p["panoptic_root"],
            "evaluator_type": "coco_panoptic_seg",
        }

        meta = instances_metadata(things)
        _register(
            f"{name}_{split}",
            prepare,
            load_coco_instances,
            (p["json_file"], p["image_root"], meta["thing_dataset_id_to_contiguous_id"]),
            {**meta, "image_root": p["image_root"], "json_file": p["json_file"],
             "evaluator_type": "coco"},
        )

        meta = panoptic_standard_metadata(CATEGORIES)
        _register(
            f"{name}_{split}_panoptic",
            prepare,
            _load_panoptic_standard,
            (p["json_file"], p["panoptic_json"], p["image_root"], p["panoptic_root"], meta),
            {**meta, **panoptic, "label_divisor": ID_DIVISOR},
        )

        meta = panoptic_separated_metadata(CATEGORIES)
        _register(
            f"{name}_{split}_panoptic_separated",
            prepare,
            _load_panoptic_separated,
            (p["json_file"], p["image_root"], p["sem_seg_root"],
             meta["thing_dataset_id_to_contiguous_id"]),
            {**meta, **panoptic, "sem_seg_root": p["sem_seg_root"]},
        )

        meta = semantic_metadata(CATEGORIES)
        _register(
            f"{name}_{split}_sem_seg",
            prepare,
            load_sem_seg,
            (p["semantic_root"], p["image_root"], "png", "png"),
            {**meta, **common, "sem_seg_root": p["semantic_root"], "evaluator_type": "sem_seg"},
        )
    return root


_BUILTIN_ROOT = register_shapes()


def ensure_builtin_data():
    """Generate the built-in datasets' files if absent (e.g. before an evaluator reads the JSONs
    directly); returns the cache dir that their metadata point into."""
    return ensure_dataset(_BUILTIN_ROOT)
