"""seg_d2's data: the built-in synthetic "shapes" datasets (registered once Detectron2 is imported,
generated on first use), a user's own datasets (COCO, COCO panoptic, semantic and instance-raster
folders, tiles and regions of them; registered by path or from DATASETS.REGISTER, with eager
validation), the one image reader for real sensors (image_io) and the label-format converters
(converters, tools/convert.py)."""
# Names are imported from their module on first use (PEP 562), so that a module without Detectron2
# (coco_checks, image_io) costs only itself; seg_d2 imports builtin, which registers the built-in
# datasets, as soon as Detectron2 is imported (seg_d2/__init__.py).
from seg_d2.compat.import_hooks import lazy_attributes

_NAMES = {
    "builtin": ("ensure_builtin_data", "register_shapes"),
    "config_datasets": ("register_datasets_from_config",),
    "dataset_mappers": ("AlbumentationsDatasetMapper", "SegD2DatasetMapper", "build_albumentations", "build_mapper"),
    "folder_datasets": ("register_instance_rasters_dataset", "register_sem_seg_dataset"),
    "image_io": ("ImageReadError", "Normalization", "read_image", "read_label_map"),
    "register": ("register_coco_instances_dataset", "register_coco_panoptic_dataset"),
    "tiling": ("Window", "register_region_dataset", "register_tiled_dataset"),
}
__getattr__, __dir__ = lazy_attributes(__name__, {name: module for module, names in _NAMES.items() for name in names})

__all__ = [
    "AlbumentationsDatasetMapper",
    "build_albumentations",
    "ensure_builtin_data",
    "register_shapes",
    "register_coco_instances_dataset",
    "register_coco_panoptic_dataset",
    "ImageReadError",
    "Normalization",
    "SegD2DatasetMapper",
    "Window",
    "build_mapper",
    "read_image",
    "read_label_map",
    "register_datasets_from_config",
    "register_instance_rasters_dataset",
    "register_region_dataset",
    "register_sem_seg_dataset",
    "register_tiled_dataset",
]
