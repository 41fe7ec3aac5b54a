"""seg_d2's data: the built-in synthetic "shapes" datasets (registered on import, generated on first
use), a user's own datasets (COCO, COCO panoptic, semantic and instance-raster folders, tiles and regions
of them; registered by path or from DATASETS.REGISTER, with eager validation), the one image reader for
real sensors (image_io) and the label-format converters (converters, tools/convert.py)."""
from .builtin import ensure_builtin_data, register_shapes
from .config_datasets import register_datasets_from_config
from .dataset_mappers import AlbumentationsDatasetMapper, SegD2DatasetMapper, build_albumentations, build_mapper
from .folder_datasets import register_instance_rasters_dataset, register_sem_seg_dataset
from .image_io import ImageReadError, Normalization, read_image, read_label_map
from .register import register_coco_instances_dataset, register_coco_panoptic_dataset
from .tiling import Window, register_region_dataset, register_tiled_dataset

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
