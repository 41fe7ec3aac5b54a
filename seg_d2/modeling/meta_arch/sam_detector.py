"""SamDetector: any Detectron2 detector's boxes turned into Segment Anything masks.

``MODEL.META_ARCHITECTURE: "SamDetector"`` builds ``MODEL.SAM.DETECTOR`` (GeneralizedRCNN for Faster / Mask
R-CNN and seg_d2's ROI-head variants, RetinaNet, ...) from the same config, runs it, and prompts SAM with each
detected box. Its outputs are the detector's standard ``Instances`` (boxes, scores, classes unchanged) with
``pred_masks`` from SAM and ``sam_ious`` (SAM's predicted IoU of each box's mask), so DefaultPredictor, the
evaluators and the Visualizer take them as they are, and ``tools/train_net.py --eval-only`` gives mask AP.

Checkpoints: the state_dict is the detector's, key for key (a trained detector's MODEL.WEIGHTS loads as they
are; SAM, frozen and loaded from MODEL.SAM.CHECKPOINT, is kept out of it). Training trains the detector.
"""
import torch
from torch import nn

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, PanopticFPN

from seg_d2.config_checks import check_config
from seg_d2.prompting.sam import SamPrompter

__all__ = ["SamDetector", "choose_masks"]

_DETECTOR = "detector."


def choose_masks(detector_masks, detector_ious, sam_masks, sam_ious):
    """Per instance, SAM's mask where SAM's predicted IoU is higher than the detector's mask IoU, else the
    detector's: (masks (N, H, W), (N,) bool "SAM's mask taken")."""
    take_sam = sam_ious > detector_ious
    return torch.where(take_sam[:, None, None], sam_masks, detector_masks), take_sam


def _rename_keys(state_dict, old, new, unless=None):
    """Rename, in place, the keys (and version metadata) of ``state_dict`` under ``old`` and not ``unless``."""
    for mapping in (state_dict, getattr(state_dict, "_metadata", {})):
        moved = [k for k in mapping if k.startswith(old) and k != old.rstrip(".") and not (unless and k.startswith(unless))]
        for key in moved:
            mapping[new + key[len(old):]] = mapping.pop(key)


def _save_as_detector(module, state_dict, prefix, local_metadata):
    _rename_keys(state_dict, prefix + _DETECTOR, prefix)


def _load_as_detector(module, state_dict, prefix, *_):
    """Keys of a plain detector checkpoint (without "detector.") are the detector's."""
    _rename_keys(state_dict, prefix, prefix + _DETECTOR, unless=prefix + _DETECTOR)


@META_ARCH_REGISTRY.register()
class SamDetector(nn.Module):
    """A detector whose boxes prompt SAM for the instance masks (see the module docstring)."""

    @configurable
    def __init__(self, *, detector: nn.Module, prompter: SamPrompter, input_format: str, multimask_output=False,
                 keep_detector_masks=False, detector_mask_iou=0.8):
        """
        Args:
            detector: a Detectron2 meta-architecture returning ``[{"instances": Instances}]`` in eval mode.
            prompter: the SAM that turns boxes into masks (not a submodule: frozen, not checkpointed).
            input_format: INPUT.FORMAT of the images the detector takes (SAM sees the same pixels in RGB).
            multimask_output: three masks per box, the best by SAM's predicted IoU kept (else one).
            keep_detector_masks: keep the detector's mask unless SAM's predicted IoU is higher than the
                detector's mask IoU: ``pred_mask_ious`` (Mask Scoring R-CNN) where it predicts them, else
                ``detector_mask_iou``.
        """
        super().__init__()
        self.detector = detector
        self.prompter = prompter
        self.input_format = input_format
        self.multimask_output = multimask_output
        self.keep_detector_masks = keep_detector_masks
        self.detector_mask_iou = detector_mask_iou
        self.register_state_dict_post_hook(_save_as_detector)
        self.register_load_state_dict_pre_hook(_load_as_detector)

    @classmethod
    def from_config(cls, cfg):
        name = cfg.MODEL.SAM.DETECTOR
        if name == "SamDetector" or name not in META_ARCH_REGISTRY:
            raise ValueError(f"MODEL.SAM.DETECTOR {name!r} must name a detector meta-architecture of Detectron2's "
                             f"META_ARCH_REGISTRY (e.g. GeneralizedRCNN, RetinaNet), not SamDetector itself")
        detector_class = META_ARCH_REGISTRY.get(name)
        if isinstance(detector_class, type) and issubclass(detector_class, PanopticFPN):
            raise ValueError(f"MODEL.SAM.DETECTOR {name!r}: a panoptic model fuses its panoptic output from its own "
                             "masks, which SamDetector would not change; use its GeneralizedRCNN part")
        detector_cfg = cfg.clone()
        detector_cfg.defrost()
        detector_cfg.MODEL.META_ARCHITECTURE = name
        check_config(detector_cfg)  # the checks (and NUM_CLASSES -1) of the detector as if it were the model
        return {
            "detector": detector_class(detector_cfg),
            "prompter": SamPrompter(cfg),
            "input_format": cfg.INPUT.FORMAT,
            "multimask_output": cfg.MODEL.SAM.MULTIMASK_OUTPUT,
            "keep_detector_masks": cfg.MODEL.SAM.KEEP_DETECTOR_MASKS,
            "detector_mask_iou": cfg.MODEL.SAM.DETECTOR_MASK_IOU,
        }

    @property
    def device(self):
        return self.detector.device

    def forward(self, batched_inputs):
        if self.training:
            return self.detector(batched_inputs)
        results = self.detector(batched_inputs)
        for inputs, result in zip(batched_inputs, results):
            if "instances" not in result:
                raise ValueError(f"MODEL.SAM.DETECTOR {type(self.detector).__name__} gives no 'instances' "
                                 f"(outputs: {sorted(result)}): SamDetector needs a detector")
            self._add_sam_masks(inputs["image"], result["instances"])
        return results

    def _add_sam_masks(self, image, instances):
        """Replace (or, with keep_detector_masks, improve) ``instances``' masks with SAM's for their boxes.
        ``image``: the detector's (resized) CHW input; the masks are made at the instances' size."""
        pixels = image.permute(1, 2, 0).cpu().numpy()
        masks, ious = self.prompter.predict_boxes(pixels, instances.pred_boxes.tensor.detach().cpu().numpy(),
                                                  self.multimask_output, original_size=instances.image_size)
        masks, ious = masks.to(instances.pred_boxes.device), ious.to(instances.pred_boxes.device)
        if self.keep_detector_masks:
            if not instances.has("pred_masks"):
                raise ValueError(f"MODEL.SAM.KEEP_DETECTOR_MASKS needs a detector that predicts masks; "
                                 f"{type(self.detector).__name__} with this config predicts none")
            detector_ious = (instances.pred_mask_ious if instances.has("pred_mask_ious")
                             else torch.full_like(ious, self.detector_mask_iou))
            masks, _ = choose_masks(instances.pred_masks.to(torch.bool), detector_ious, masks, ious)
        instances.pred_masks = masks
        instances.sam_ious = ious

