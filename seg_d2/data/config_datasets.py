"""Datasets declared in the config (``DATASETS.REGISTER``), registered before any model or loader is built.

Each entry is ``(name, format, arguments...)``; arguments after the positional ones are ``key=value``
options. Paths are relative to the working directory. Formats::

    (name, "coco", instances_json, image_root)                         drop=<category>[,<category>...]
    (name, "coco_panoptic", panoptic_json, png_folder, image_root)     form=separated|standard,
                                                                       instances_json=<path> (standard)
    (name, "sem_seg", image_folder, label_folder[, classes_json])      ignore=<label>
    (name, "image_mask_folders", image_folder, instance_raster_folder[, class_name])
    (name, "tiles", source_dataset)     size=<px> overlap=<px> drop_empty=true min_area=<px>
                                        region=x0,y0,x1,y1 exclude=x0,y0,x1,y1
    (name, "region", source_dataset, x0,y0,x1,y1)                      min_area=<px>

(window values: integers are pixels, numbers with a point fractions of the image size.) A "coco_panoptic"
dataset is registered in the "separated" form Panoptic FPN trains on unless ``form=standard``. An entry
registered the same way again is left as it is, so registering is idempotent; the same name with other
arguments is an error. Every error names the entry. See docs/own_data.md.
"""
import os

from detectron2.data import DatasetCatalog, MetadataCatalog

from .folder_datasets import register_instance_rasters_dataset, register_sem_seg_dataset
from .register import register_coco_instances_dataset, register_coco_panoptic_dataset
from .tiling import Window, register_region_dataset, register_tiled_dataset

__all__ = ["FORMATS", "register_dataset_entry", "register_datasets_from_config"]

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _bool(text):
    if text.lower() not in _TRUE + _FALSE:
        raise ValueError(f"expected true or false, got {text!r}")
    return text.lower() in _TRUE


def _names(text):
    return tuple(n.strip() for n in text.split(",") if n.strip())


def _coco(name, check, instances_json, image_root, drop=()):
    register_coco_instances_dataset(name, instances_json, image_root, drop_categories=drop, check_images=check)


def _coco_panoptic(name, check, panoptic_json, png_folder, image_root, form="separated", instances_json=None):
    register_coco_panoptic_dataset(name, panoptic_json, image_root, png_folder, instances_json=instances_json,
                                   form=form, check_images=check)


def _sem_seg(name, check, image_folder, label_folder, classes_json=None, ignore=255):
    register_sem_seg_dataset(name, image_folder, label_folder, classes_json, ignore, check_images=check)


def _image_mask_folders(name, check, image_folder, raster_folder, class_name="object"):
    register_instance_rasters_dataset(name, image_folder, raster_folder, class_name, check_images=check)


def _tiles(name, check, source, size, overlap=0, drop_empty=False, min_area=0, region=None, exclude=None):
    register_tiled_dataset(name, source, size, overlap, drop_empty, region, exclude, min_area)


def _region(name, check, source, window, min_area=0):
    register_region_dataset(name, source, Window.parse(window), min_area)


# format: (register function, positional argument names, how many of them are required,
#          {option: parser}, positional arguments that are paths)
FORMATS = {
    "coco": (_coco, ("instances_json", "image_root"), 2, {"drop": _names}, 2),
    "coco_panoptic": (_coco_panoptic, ("panoptic_json", "png_folder", "image_root"), 3,
                      {"form": str, "instances_json": os.path.abspath}, 3),
    "sem_seg": (_sem_seg, ("image_folder", "label_folder", "classes_json"), 2, {"ignore": int}, 3),
    "image_mask_folders": (_image_mask_folders, ("image_folder", "instance_raster_folder", "class_name"), 2,
                           {}, 2),
    "tiles": (_tiles, ("source",), 1, {"size": int, "overlap": int, "drop_empty": _bool, "min_area": int,
                                       "region": Window.parse, "exclude": Window.parse}, 0),
    "region": (_region, ("source", "window"), 2, {"min_area": int}, 0),
}

# name -> the normalised entry it was registered from (idempotence).
_registered = {}


def _parse(entry):
    """(name, format, positional arguments (paths made absolute), options) of one entry."""
    if not isinstance(entry, (list, tuple)) or len(entry) < 2 or not all(isinstance(v, (str, int, float))
                                                                          for v in entry):
        raise ValueError("an entry is (name, format, arguments...), e.g. "
                         "('cells_train', 'coco', 'ann/train.json', 'img')")
    name, fmt, *args = (str(v) for v in entry)
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; formats: {', '.join(FORMATS)}")
    _, arg_names, required, option_parsers, path_count = FORMATS[fmt]
    positional = [a for a in args if "=" not in a]
    options = dict(a.split("=", 1) for a in args if "=" in a)
    if not required <= len(positional) <= len(arg_names):
        wanted = ", ".join(arg_names[:required]) + (f"[, {', '.join(arg_names[required:])}]"
                                                     if len(arg_names) > required else "")
        raise ValueError(f"format {fmt!r} takes ({wanted}), got {len(positional)} argument(s)")
    unknown = sorted(set(options) - set(option_parsers))
    if unknown:
        raise ValueError(f"format {fmt!r} has no option(s) {unknown}; options: {sorted(option_parsers) or 'none'}")
    # paths absolute: the same relative path from another working directory is another dataset
    positional = tuple(os.path.abspath(a) if k < path_count else a for k, a in enumerate(positional))
    return name, fmt, positional, tuple(sorted(options.items()))


def _forget(name):
    """Undo a registration that failed half-way, so that a corrected entry can register."""
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)


def register_dataset_entry(entry, check_images="header"):
    """Register one ``DATASETS.REGISTER`` entry (see the module docstring); idempotent."""
    try:
        name, fmt, positional, options = _parse(entry)
    except ValueError as e:
        raise ValueError(f"DATASETS.REGISTER entry {entry!r}: {e}") from None
    key = (fmt, positional, options)
    if _registered.get(name) == key and name in DatasetCatalog.list():
        return
    if name in DatasetCatalog.list():
        raise ValueError(f"DATASETS.REGISTER entry {name!r}: a dataset of that name is already registered "
                         f"({'from another entry' if name in _registered else 'built in, or in Python'}); "
                         "choose another name")
    register, _, _, option_parsers, _ = FORMATS[fmt]
    try:
        parsed = {k: option_parsers[k](v) for k, v in options}
        register(name, check_images, *positional, **parsed)
    except (ValueError, OSError) as e:
        _forget(name)
        raise _in_entry(e, f"DATASETS.REGISTER entry {name!r} ({fmt}): {e}") from e
    _registered[name] = key


def _in_entry(error, message):
    """``error``'s kind with ``message`` (a ValueError where that kind needs other arguments)."""
    try:
        return type(error)(message)
    except TypeError:
        return ValueError(message)


def _entries(value):
    """The entries of DATASETS.REGISTER; a single entry not wrapped in a list is taken as one."""
    if value and all(isinstance(v, str) for v in value):
        return [tuple(value)]
    return list(value)


def register_datasets_from_config(cfg):
    """Register every dataset ``cfg.DATASETS.REGISTER`` declares, in order (a "tiles" or "region" entry
    may use an earlier one); a no-op for datasets already registered the same way."""
    for entry in _entries(cfg.DATASETS.REGISTER):
        register_dataset_entry(entry, cfg.DATASETS.CHECK_IMAGES)
