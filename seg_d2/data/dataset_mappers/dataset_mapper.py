"""Detectron2's DatasetMapper reading images and labels through :mod:`seg_d2.data.image_io`."""
import copy

import numpy as np
import torch

from detectron2.config import configurable
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from ..image_io import Normalization, read_image, read_label_map

__all__ = ["SegD2DatasetMapper", "join_label_planes", "read_dataset_image", "read_dataset_labels"]

def read_dataset_image(dataset_dict, image_format, normalization, bands):
    """The image of a dataset dict, only its "window" (x0, y0, x1, y1) when it has one (tiles, regions)."""
    return read_image(dataset_dict["file_name"], image_format, normalization, bands, dataset_dict.get("window"))


def read_dataset_labels(path):
    """A semantic label map for Detectron2's transforms: uint8 ids as they are; wider ids (< 65536) as two
    uint8 planes (low, high byte), which Detectron2 resizes through PIL's nearest neighbour like uint8 labels
    (its float path samples differently, half a pixel off the image). :func:`join_label_planes` undoes it."""
    labels = read_label_map(path)
    if labels.dtype == np.uint8:
        return labels
    if labels.size and (labels.min() < 0 or labels.max() > 65535):
        raise ValueError(f"{path}: semantic label ids {labels.min()}..{labels.max()} outside 0..65535")
    labels = labels.astype(np.uint16)
    return np.dstack([labels & 255, labels >> 8]).astype(np.uint8)


def join_label_planes(labels):
    """(H, W) int64 ids of what :func:`read_dataset_labels` returned, after any transform."""
    labels = labels.astype(np.int64)
    return labels if labels.ndim == 2 else labels[:, :, 0] + (labels[:, :, 1] << 8)


class SegD2DatasetMapper(DatasetMapper):
    """Detectron2's ``DatasetMapper`` (same arguments, augmentations and outputs) whose images come from
    :func:`seg_d2.data.image_io.read_image`: 16-bit and float images normalised as ``INPUT.NORMALIZE`` says,
    bands chosen by ``INPUT.BANDS``, tiles read as their "window" of the source image. Label maps are
    read as ids (palette PNGs as indices, 16-bit PNGs whole). For 8-bit images and label PNGs in L mode
    the output is identical to ``DatasetMapper``'s."""

    @configurable
    def __init__(self, is_train=True, *, normalization=Normalization(), bands=(), **kwargs):
        """
        Args:
            normalization: a :class:`~seg_d2.data.image_io.Normalization` (``INPUT.NORMALIZE``).
            bands: the file's bands to use (``INPUT.BANDS``; (): all of a gray or RGB image).
            kwargs: :class:`detectron2.data.DatasetMapper`'s arguments.
        """
        super().__init__(is_train, **kwargs)
        self.normalization = normalization
        self.bands = tuple(bands)

    @classmethod
    def from_config(cls, cfg, is_train=True):
        args = super().from_config(cfg, is_train)
        args.update(normalization=Normalization.from_config(cfg), bands=tuple(cfg.INPUT.BANDS))
        return args

    def __call__(self, dataset_dict):
        dataset_dict = copy.deepcopy(dataset_dict)  # modified below
        image = read_dataset_image(dataset_dict, self.image_format, self.normalization, self.bands)
        utils.check_image_size(dataset_dict, image)
        sem_seg = None
        if "sem_seg_file_name" in dataset_dict:
            sem_seg = read_dataset_labels(dataset_dict.pop("sem_seg_file_name"))

        aug_input = T.AugInput(image, sem_seg=sem_seg)
        transforms = self.augmentations(aug_input)
        image, sem_seg = aug_input.image, aug_input.sem_seg
        image_shape = image.shape[:2]
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if sem_seg is not None:
            dataset_dict["sem_seg"] = torch.as_tensor(join_label_planes(sem_seg))
        if self.proposal_topk is not None:
            utils.transform_proposals(dataset_dict, image_shape, transforms, proposal_topk=self.proposal_topk)

        if not self.is_train:
            dataset_dict.pop("annotations", None)
            return dataset_dict
        if "annotations" in dataset_dict:
            self._transform_annotations(dataset_dict, transforms, image_shape)
        return dataset_dict
