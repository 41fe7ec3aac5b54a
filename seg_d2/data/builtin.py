"""The built-in "shapes" datasets: synthetic scenes written once to a cache dir, then registered.

Registered names, for each split in ``SPLIT_SIZES`` (train, val):

- ``seg_d2_shapes_{split}``: COCO instances (evaluator_type "coco");
- ``seg_d2_shapes_{split}_panoptic``: Detectron2's "standard" COCO panoptic form, plus the instance
  annotations (evaluator_type "coco_panoptic_seg");
- ``seg_d2_shapes_{split}_panoptic_separated``: what Panoptic FPN trains on: instances + semantic
  labels 0 = things, 1..S = stuff (evaluator_type "coco_panoptic_seg");
- ``seg_d2_shapes_{split}_sem_seg``: semantic labels over all classes (evaluator_type "sem_seg").

Instance masks (the instances form and the instances inside both panoptic forms) are COCO polygons that
rasterise to exactly the panoptic PNG's pixels (:mod:`seg_d2.data.exact_polygons`), so Detectron2's default
``INPUT.MASK_FORMAT`` "polygon" and "bitmask" both read them; metadata ``mask_format`` says so.

Registering touches no file: metadata point into the cache dir, and the files are generated on the
first ``DatasetCatalog.get`` (or :func:`ensure_builtin_data`). The cache dir is
``$SEG_D2_DATA_DIR/<VERSION>``, else ``~/.cache/seg_d2/datasets/<VERSION>``, read at import. The generator
writes ``manifest.json`` (every file and its size) last; each first use checks the folder against it and
regenerates a partial or stale folder (see :func:`ensure_dataset`).
"""
import contextlib
import fcntl
import functools
import glob
import json
import logging
import os
import shutil
import uuid

import numpy as np
import pycocotools.mask as mask_util
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.coco import load_sem_seg
from detectron2.data.datasets.coco_panoptic import merge_to_panoptic

from seg_d2.utils.progress import progress

from .exact_polygons import mask_to_polygons
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
    "dataset_problem",
    "register_shapes",
]

logger = logging.getLogger(__name__)

# Part of the cache path and of the manifest: bump it whenever the generator's output changes.
# v2: instance masks as exact polygons (v1: RLE), manifest.json.
VERSION = "shapes-v2"
DEFAULT_SEED = 0
SPLIT_SIZES = {"train": 200, "val": 50}
IGNORE_LABEL = 255
MANIFEST = "manifest.json"
# What the instance annotations hold: both of Detectron2's INPUT.MASK_FORMAT values read them.
MASK_FORMAT = "polygon"


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
    """Mask, area and XYWH bbox of one segment (area and box from pycocotools, as COCO tools see them)."""
    mask = segment_map == segment_id
    rle = mask_util.encode(np.asfortranarray(mask, dtype=np.uint8))
    return mask, int(mask_util.area(rle)), [int(v) for v in mask_util.toBbox(rle)]


def _write_split(root, split, seeds):
    paths = dataset_paths(root, split)
    for key in ("image_root", "panoptic_root", "sem_seg_root", "semantic_root"):
        os.makedirs(paths[key])
    os.makedirs(os.path.dirname(paths["json_file"]), exist_ok=True)
    images, instances, panoptic = [], [], []
    for image_id, seed in enumerate(progress(seeds, f"seg_d2 shapes: {split}", unit="image"), start=1):
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
            mask, area, bbox = _segment(scene.segment_map, segment["id"])
            segments_info.append({**segment, "area": area, "bbox": bbox, "iscrowd": 0})
            if CATEGORIES[segment["category_id"] - 1]["isthing"]:
                instances.append(
                    {
                        "id": len(instances) + 1,
                        "image_id": image_id,
                        "category_id": segment["category_id"],
                        "segmentation": mask_to_polygons(mask),
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


def _generator(seed, split_sizes):
    """What a folder's content depends on (recorded in its manifest)."""
    return {"version": VERSION, "seed": seed, "split_sizes": dict(split_sizes)}


def write_dataset(root, seed=DEFAULT_SEED, split_sizes=SPLIT_SIZES):
    """Generate every split into ``root``, then the manifest (not atomic: see :func:`ensure_dataset`)."""
    for split_index, (split, size) in enumerate(split_sizes.items()):
        # one independent stream per image: a split's images don't depend on the other split's size
        _write_split(root, split, [[seed, split_index, i] for i in range(size)])
    paths = sorted(os.path.join(folder, name) for folder, _, names in os.walk(root) for name in names)
    sizes = {os.path.relpath(path, root): os.path.getsize(path) for path in paths}
    with open(os.path.join(root, MANIFEST), "w") as f:
        json.dump({**_generator(seed, split_sizes), "files": sizes}, f, indent=0)


def dataset_problem(root, seed=DEFAULT_SEED, split_sizes=SPLIT_SIZES):
    """Why ``root`` is not the complete dataset of this generator, seed and split sizes; None if it is."""
    try:
        with open(os.path.join(root, MANIFEST)) as f:
            manifest = json.load(f)
    except FileNotFoundError:
        if not os.path.isdir(root) or not os.listdir(root):
            return "absent"
        return f"no {MANIFEST} (a partial or pre-{VERSION} folder)"
    except (OSError, ValueError) as e:
        return f"unreadable {MANIFEST} ({e})"
    wanted = _generator(seed, split_sizes)
    written = {key: manifest.get(key) for key in wanted}
    if written != wanted:
        return f"written for {written}, wanted {wanted}"
    wrong = []
    for path, size in manifest["files"].items():
        try:
            actual = os.path.getsize(os.path.join(root, path))
        except OSError:
            actual = None
        if actual != size:
            wrong.append(f"{path} ({'missing' if actual is None else f'{actual} bytes, not {size}'})")
    if wrong:
        return f"{len(wrong)} of {len(manifest['files'])} files missing or of another size, e.g. {wrong[:3]}"
    return None


@contextlib.contextmanager
def _generation_lock(root):
    """One process at a time (re)generates ``root``: an exclusive lock on a file beside it."""
    with open(os.path.join(os.path.dirname(root), f".{os.path.basename(root)}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_dataset(root, seed=DEFAULT_SEED, split_sizes=SPLIT_SIZES):
    """Generate the dataset at ``root`` unless it is complete (:func:`dataset_problem`); returns ``root``.

    A partial or stale folder (files deleted or truncated, another seed or generator version) is
    regenerated, with a warning saying what was wrong. Generation writes a temporary sibling folder,
    then swaps it in with renames, under a lock: ``root`` is never half-written (an interrupted run
    leaves the old folder or none), and processes starting together (e.g. DDP workers) generate it once.
    """
    root = os.path.abspath(root)
    if dataset_problem(root, seed, split_sizes) is None:
        return root
    parent = os.path.dirname(root)
    os.makedirs(parent, exist_ok=True)
    with _generation_lock(root):
        problem = dataset_problem(root, seed, split_sizes)  # another process may have just written it
        if problem is None:
            return root
        if problem != "absent":
            logger.warning(f"Built-in data at {root}: {problem}. Regenerating it.")
        logger.info(f"Generating the built-in shapes data {_generator(seed, split_sizes)} into {root}")
        for leftover in glob.glob(os.path.join(parent, f".{os.path.basename(root)}.*-*")):
            shutil.rmtree(leftover, ignore_errors=True)  # from a run killed mid-way (we hold the lock)
        tmp = _new_sibling(root, "tmp")
        try:
            write_dataset(tmp, seed, split_sizes)
            _swap_in(tmp, root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # no-op after a successful swap
    return root


def _new_sibling(root, kind):
    """A new empty hidden folder beside ``root`` (mode from the umask, like any folder the user makes)."""
    path = os.path.join(os.path.dirname(root), f".{os.path.basename(root)}.{kind}-{uuid.uuid4().hex}")
    os.mkdir(path)
    return path


def _swap_in(new, root):
    """Replace ``root`` (absent, empty or stale) by the folder ``new``: two renames."""
    stale = _new_sibling(root, "stale") if os.path.exists(root) else None
    if stale:
        os.rename(root, os.path.join(stale, "old"))
    os.rename(new, root)
    if stale:
        shutil.rmtree(stale, ignore_errors=True)


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
    root = os.path.abspath(default_root() if root is None else root)
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
            "mask_format": MASK_FORMAT,
        }

        meta = instances_metadata(things)
        _register(
            f"{name}_{split}",
            prepare,
            load_coco_instances,
            (p["json_file"], p["image_root"], meta["thing_dataset_id_to_contiguous_id"]),
            {**meta, "image_root": p["image_root"], "json_file": p["json_file"],
             "evaluator_type": "coco", "mask_format": MASK_FORMAT},
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
    """Generate the built-in datasets' files if absent, partial or stale (e.g. before an evaluator reads
    the JSONs directly); returns the cache dir that their metadata point into."""
    return ensure_dataset(_BUILTIN_ROOT)
