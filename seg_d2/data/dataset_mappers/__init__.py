"""Dataset mappers: dataset dict -> model input, as detectron2.data.DatasetMapper; every one reads
images through seg_d2.data.image_io."""
from .albumentations_mapper import AlbumentationsDatasetMapper, build_albumentations
from .dataset_mapper import SegD2DatasetMapper

__all__ = ["AlbumentationsDatasetMapper", "SegD2DatasetMapper", "build_albumentations", "build_mapper"]


def build_mapper(cfg, is_train):
    """The mapper ``cfg`` asks for: albumentations when INPUT.ALBUMENTATIONS.ENABLED (training), else
    Detectron2's DatasetMapper reading through seg_d2.data.image_io (:class:`SegD2DatasetMapper`)."""
    if is_train and cfg.INPUT.ALBUMENTATIONS.ENABLED:
        return AlbumentationsDatasetMapper(cfg, is_train=True)
    return SegD2DatasetMapper(cfg, is_train=is_train)
