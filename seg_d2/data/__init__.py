"""seg_d2's data: the built-in synthetic "shapes" datasets (registered on import, generated on first
use) and registration of a user's own COCO-format datasets with eager validation."""
from .builtin import ensure_builtin_data, register_shapes
from .dataset_mappers import AlbumentationsDatasetMapper, build_albumentations
from .register import register_coco_instances_dataset, register_coco_panoptic_dataset

__all__ = [
    "AlbumentationsDatasetMapper",
    "build_albumentations",
    "ensure_builtin_data",
    "register_shapes",
    "register_coco_instances_dataset",
    "register_coco_panoptic_dataset",
]
