"""What an exported model computes, per model family, as a dict of named tensors.

Every exported graph takes one image and the size to answer at, like one Detectron2 input dict:

- ``image``: (C, H, W) float32, in ``cfg.INPUT.FORMAT`` channel order, already resized as
  ``DefaultPredictor`` resizes (``seg_d2.export.runtime`` does both);
- ``output_size``: (2,) int64, the (height, width) the outputs are given at (the original image's).

and returns, by family (:func:`model_family`):

- "semantic" (SemanticSegmentor, UNetSegmentor, ...): ``sem_seg`` (K, height, width) float32 scores
  and ``sem_seg_labels`` (height, width) int64, their argmax;
- "instance" (GeneralizedRCNN: Mask R-CNN and its seg_d2 variants, cascade, Mask Scoring):
  ``boxes`` (N, 4) XYXY, ``scores`` (N,), ``classes`` (N,) int64, ``masks`` (N, height, width) bool
  when the model has masks, and ``mask_ious`` (N,) for Mask Scoring R-CNN;
- "panoptic" (PanopticFPN, SegD2PanopticFPN): the instance outputs and the semantic outputs; the panoptic
  map is their fusion by the model's own rule, done after the graph (``seg_d2.export.runtime``), since that
  rule is a greedy loop over the detections.

The values equal the PyTorch model's outputs for ``[{"image", "height", "width"}]``.
"""
from typing import Callable, Dict

import torch
from torch import Tensor

from detectron2.layers.wrappers import shapes_to_tensor
from detectron2.modeling import GeneralizedRCNN, PanopticFPN, SemanticSegmentor
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import Instances

from .postprocess import detection_outputs

__all__ = ["FAMILIES", "model_family", "family_outputs"]


def _semantic(sem_seg: Tensor) -> Dict[str, Tensor]:
    return {"sem_seg": sem_seg, "sem_seg_labels": sem_seg.argmax(dim=0)}


def _detections(instances: Instances, output_size: Tensor) -> Dict[str, Tensor]:
    fields = instances.get_fields()
    return detection_outputs(
        instances.pred_boxes.tensor,
        instances.scores,
        instances.pred_classes,
        shapes_to_tensor(list(instances.image_size)),
        output_size,
        roi_masks=fields.get("pred_masks"),
        mask_ious=fields.get("pred_mask_ious"),
    )


def semantic_outputs(model: SemanticSegmentor, image: Tensor, output_size: Tensor) -> Dict[str, Tensor]:
    (result,) = model([{"image": image, "height": output_size[0], "width": output_size[1]}])
    return _semantic(result["sem_seg"])


def instance_outputs(model: GeneralizedRCNN, image: Tensor, output_size: Tensor) -> Dict[str, Tensor]:
    (instances,) = model.inference([{"image": image}], do_postprocess=False)
    return _detections(instances, output_size)


def panoptic_outputs(model: PanopticFPN, image: Tensor, output_size: Tensor) -> Dict[str, Tensor]:
    (instances,), (sem_seg,) = model.inference([{"image": image}], do_postprocess=False)
    sem_seg = sem_seg_postprocess(sem_seg, instances.image_size, output_size[0], output_size[1])
    return {**_detections(instances, output_size), **_semantic(sem_seg)}


# Checked in this order: PanopticFPN is not a GeneralizedRCNN subclass in v0.6, but keep subclasses first.
FAMILIES: Dict[str, tuple] = {
    "panoptic": (PanopticFPN, panoptic_outputs),
    "instance": (GeneralizedRCNN, instance_outputs),
    "semantic": (SemanticSegmentor, semantic_outputs),
}


def model_family(model: torch.nn.Module) -> str:
    """"semantic", "instance" or "panoptic"; a ValueError naming the class for other models."""
    for family, (base, _) in FAMILIES.items():
        if isinstance(model, base):
            return family
    supported = ", ".join(f"{base.__name__} ({family})" for family, (base, _) in FAMILIES.items())
    raise ValueError(f"cannot export a {type(model).__name__}: seg_d2 exports subclasses of {supported}")


def family_outputs(family: str) -> Callable[[torch.nn.Module, Tensor, Tensor], Dict[str, Tensor]]:
    """The function computing ``family``'s outputs from (model, image, output_size)."""
    return FAMILIES[family][1]
