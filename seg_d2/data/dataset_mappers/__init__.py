"""Dataset mappers: dataset dict -> model input, as detectron2.data.DatasetMapper."""
from .albumentations_mapper import AlbumentationsDatasetMapper, build_albumentations

__all__ = ["AlbumentationsDatasetMapper", "build_albumentations"]
