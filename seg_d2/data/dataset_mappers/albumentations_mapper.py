"""Albumentations augmentations in Detectron2's data path.

:class:`AlbumentationsDatasetMapper` is a drop-in for ``detectron2.data.DatasetMapper``: same input (a
dataset dict) and output ("image" CHW tensor, "instances" with gt_boxes / gt_classes / gt_masks, "sem_seg"
long tensor), but the augmentation is an albumentations pipeline applied to the image, every instance
mask and the semantic labels together, so any Detectron2 model trains with it.
"""
import copy
import inspect
import random

import albumentations as A
import cv2
import numpy as np
import pycocotools.mask as mask_util
import torch

from detectron2.config import configurable
from detectron2.data import detection_utils as utils
from detectron2.structures import BitMasks, Instances, polygons_to_bitmask

from ..image_io import Normalization, read_label_map
from .dataset_mapper import read_dataset_image

__all__ = ["AlbumentationsDatasetMapper", "build_albumentations"]


def _build_transform(spec, key):
    """One albumentations transform from ``[name, {param: value}]``; errors name ``key``."""
    if not (isinstance(spec, (list, tuple)) and len(spec) in (1, 2) and isinstance(spec[0], str)):
        raise ValueError(f"{key}: expected [name, {{params}}], got {spec!r}")
    name, params = spec[0], dict(spec[1]) if len(spec) == 2 else {}
    cls = getattr(A, name, None)
    if not (inspect.isclass(cls) and issubclass(cls, A.BasicTransform)):
        raise ValueError(f"{key}: unknown albumentations transform {name!r}")
    accepted = inspect.signature(cls).parameters
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(f"{key}: {name} has no parameter(s) {unknown}; it takes {sorted(accepted)}")
    # YAML has no tuples, and albumentations' ranges must be tuples.
    params = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
    try:
        return cls(**params)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{key}: bad parameters for {name}: {e}") from e


def build_albumentations(pipeline, key="INPUT.ALBUMENTATIONS.PIPELINE"):
    """An ``A.Compose`` from a list of ``[name, {params}]`` specs (e.g. ``[["HorizontalFlip", {"p": 0.5}]]``).

    Masks are always resampled with nearest neighbour, whatever a spec says: instance masks stay binary
    and semantic labels gain no new values.
    """
    transforms = [_build_transform(spec, f"{key}[{i}]") for i, spec in enumerate(pipeline)]
    return A.Compose(transforms, mask_interpolation=cv2.INTER_NEAREST)


def _annotation_mask(ann, height, width):
    """Binary (H, W) uint8 mask of one annotation's "segmentation" (polygons, RLE or an array)."""
    seg = ann.get("segmentation")
    if seg is None:
        raise ValueError("AlbumentationsDatasetMapper needs instance masks: an annotation has no 'segmentation'")
    if isinstance(seg, list):
        return polygons_to_bitmask(seg, height, width).astype(np.uint8)
    if isinstance(seg, dict):
        if isinstance(seg["counts"], list):  # uncompressed RLE
            seg = mask_util.frPyObjects(seg, height, width)
        return mask_util.decode(seg).astype(np.uint8)
    mask = np.asarray(seg)
    if mask.shape != (height, width):
        raise ValueError(f"segmentation array of shape {mask.shape} for an image of {(height, width)}")
    return (mask > 0).astype(np.uint8)


class AlbumentationsDatasetMapper:
    """Reads one dataset dict and augments image, instance masks and semantic labels with albumentations.

    Boxes are recomputed from the augmented masks (a rotated or warped box is not the object's box) and
    instances whose mask leaves the image are dropped. Crowd annotations are dropped, and a record without
    "annotations" (semantic-only) gets no "instances", as in DatasetMapper.
    gt_masks are always BitMasks. Semantic labels are shifted by one around the pipeline so that pixels a
    transform fills (padding, elastic borders, fill 0) become the ignore label rather than class 0.
    """

    @configurable
    def __init__(self, is_train=True, *, augmentations, image_format, ignore_label=255,
                 normalization=Normalization(), bands=()):
        """
        Args:
            is_train: False drops the annotations and semantic labels, like DatasetMapper.
            augmentations: an ``A.Compose`` (see :func:`build_albumentations`).
            image_format: Detectron2 image format to read the image in ("BGR", "RGB", ...).
            ignore_label: semantic label of pixels to ignore; also given to pixels a transform fills.
            normalization, bands: how the image is read (``INPUT.NORMALIZE``, ``INPUT.BANDS``).
        """
        self.is_train = is_train
        self.augmentations = augmentations
        self.image_format = image_format
        self.ignore_label = ignore_label
        self.normalization = normalization
        self.bands = tuple(bands)

    @classmethod
    def from_config(cls, cfg, is_train=True):
        return {
            "is_train": is_train,
            "augmentations": build_albumentations(cfg.INPUT.ALBUMENTATIONS.PIPELINE),
            "image_format": cfg.INPUT.FORMAT,
            "ignore_label": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            "normalization": Normalization.from_config(cfg),
            "bands": tuple(cfg.INPUT.BANDS),
        }

    def set_random_seed(self, seed):
        """Make the next samples' augmentations a function of ``seed``; seg_d2's training loader calls it per
        sample (:class:`seg_d2.data.samplers.ResumableTrainLoader`) so that runs repeat and resume exactly.

        albumentations draws from its own generators, not the global ones the loader seeds. Every transform
        draws in turn from one numpy and one python generator: ``Compose.set_random_seed`` would instead give
        each transform its own generator with the same seed, and e.g. HorizontalFlip and VerticalFlip (p=0.5
        each) would then always flip together.
        """
        self.augmentations.set_random_state(np.random.default_rng(seed), random.Random(seed))

    def _encode_sem_seg(self, sem_seg):
        shifted = sem_seg.astype(np.int64) + 1
        shifted[sem_seg == self.ignore_label] = 0
        if shifted.max(initial=0) > np.iinfo(np.uint16).max:
            raise ValueError(f"semantic labels above {np.iinfo(np.uint16).max - 1} are not supported")
        return shifted.astype(np.uint16)  # cv2 warps uint16, not int32/int64

    def _decode_sem_seg(self, shifted):
        sem_seg = shifted.astype(np.int64) - 1
        sem_seg[shifted == 0] = self.ignore_label
        return sem_seg

    def __call__(self, dataset_dict):
        dataset_dict = copy.deepcopy(dataset_dict)  # it is modified below
        image = read_dataset_image(dataset_dict, self.image_format, self.normalization, self.bands)
        utils.check_image_size(dataset_dict, image)
        height, width = image.shape[:2]
        # albumentations takes float images in 0..1 (it clips them there), seg_d2's reader gives 0..255
        scale = 1.0 if image.dtype == np.uint8 else 255.0

        targets = {"image": image / np.float32(scale) if scale != 1.0 else image}
        if self.is_train and "sem_seg_file_name" in dataset_dict:
            sem_seg = read_label_map(dataset_dict.pop("sem_seg_file_name"))
            targets["mask"] = self._encode_sem_seg(sem_seg)
        has_annotations = "annotations" in dataset_dict  # semantic-only records: no "instances" either
        annos = [a for a in dataset_dict.pop("annotations", []) if a.get("iscrowd", 0) == 0]
        if self.is_train and annos:
            targets["masks"] = np.stack([_annotation_mask(a, height, width) for a in annos])

        out = self.augmentations(**targets)
        image = out["image"] * np.float32(scale) if scale != 1.0 else out["image"]
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if "mask" in out:
            dataset_dict["sem_seg"] = torch.as_tensor(self._decode_sem_seg(out["mask"]))
        if not self.is_train:
            dataset_dict.pop("sem_seg_file_name", None)
        elif has_annotations:
            classes = [a["category_id"] for a in annos]
            masks = out["masks"].astype(bool) if annos else np.zeros((0, *image.shape[:2]), bool)
            dataset_dict["instances"] = self._instances(masks, classes, image.shape[:2])
        return dataset_dict

    @staticmethod
    def _instances(masks, classes, image_size):
        keep = masks.any(axis=(1, 2))
        instances = Instances(image_size)
        instances.gt_masks = BitMasks(torch.from_numpy(np.ascontiguousarray(masks[keep])))
        instances.gt_boxes = instances.gt_masks.get_bounding_boxes()
        instances.gt_classes = torch.tensor(np.asarray(classes, np.int64)[keep], dtype=torch.int64)
        return instances
