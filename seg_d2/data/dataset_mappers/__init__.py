"""Dataset mappers: dataset dict -> model input, as detectron2.data.DatasetMapper."""
from detectron2.data import DatasetMapper

from .albumentations_mapper import AlbumentationsDatasetMapper, build_albumentations

__all__ = ["AlbumentationsDatasetMapper", "build_albumentations", "build_mapper"]


def build_mapper(cfg, is_train):
    """The mapper ``cfg`` asks for: albumentations when INPUT.ALBUMENTATIONS.ENABLED, else Detectron2's."""
    if is_train and cfg.INPUT.ALBUMENTATIONS.ENABLED:
        return AlbumentationsDatasetMapper(cfg, is_train=True)
    return DatasetMapper(cfg, is_train=is_train)
