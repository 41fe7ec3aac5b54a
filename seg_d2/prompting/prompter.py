"""One prompt API, two engines: SAM when the config names a SAM checkpoint, else the config's own model.

    prompter = build_prompter(cfg)
    answer = prompter.predict(image, point_coords=[[120, 85]], point_labels=[1], multimask_output=True)
    mask, score = answer.best()

``image`` is (H, W, C) in cfg.INPUT.FORMAT, as DefaultPredictor takes it. With ``MODEL.SAM.CHECKPOINT`` the
answer is SAM's (:class:`~seg_d2.prompting.sam.SamPrompter`); without it a trained instance or panoptic
model predicts the image once and the prompt selects among its instances (:class:`ModelPrompter`), which
needs no extra package but only finds objects the model learned.
"""
import numpy as np

from detectron2.engine import DefaultPredictor

from .point_prompts import model_outputs, select_by_box, select_instances
from .prompts import PromptMasks, check_prompt, image_key
from .sam import INSTALL_HINT, SamPrompter

__all__ = ["CachedPredictor", "ModelPrompter", "build_prompter"]


class CachedPredictor:
    """``predictor(image)`` that runs the model once per image: called again with the same pixels it returns
    the outputs it kept (a tool writing the outputs and answering prompts on one image predicts once)."""

    def __init__(self, predictor):
        """``predictor``: a callable on an (H, W, C) image (DefaultPredictor, SlidingWindowPredictor, ...) or a
        Detectron2 model in eval mode."""
        self.predictor = predictor
        self._key, self._outputs = None, None

    def __call__(self, image):
        key = image_key(image)
        if key != self._key:
            self._outputs = model_outputs(self.predictor, np.asarray(image))
            self._key = key
        return self._outputs


def _box_overlaps(boxes, box):
    """(N,) bool: does each XYXY box of ``boxes`` intersect ``box`` with a positive area?"""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return ((np.minimum(boxes[:, 2], box[2]) > np.maximum(boxes[:, 0], box[0])) &
            (np.minimum(boxes[:, 3], box[3]) > np.maximum(boxes[:, 1], box[1])))


def _instances_for_prompt(outputs, point_coords, point_labels, box):
    """Detectron2 Instances (dense masks) among which the prompt selects. A seg_d2 ``Prediction`` (sliding
    windows, any image size; masks kept cropped) makes dense only the instances that can answer: those
    overlapping the box, or holding a positive point."""
    if isinstance(outputs, dict):
        if "instances" not in outputs:
            raise ValueError(f"the model output has no 'instances' (keys: {sorted(outputs)}): use an instance or "
                             f"panoptic model, or SAM (MODEL.SAM.CHECKPOINT)")
        return outputs["instances"]
    cropped = getattr(outputs, "instances", None)
    if cropped is None:
        raise ValueError("the model predicts no instances: use an instance or panoptic model, or SAM (MODEL.SAM.CHECKPOINT)")
    if box is not None:
        holds = _box_overlaps(cropped.boxes, box)
    else:
        holds = np.zeros(len(cropped), dtype=bool)
        for (x, y), label in zip(point_coords, point_labels):
            if label:
                holds |= cropped.contains(int(np.floor(x)), int(np.floor(y)))
    return cropped.select(np.flatnonzero(holds)).to_instances(outputs.height, outputs.width)


class ModelPrompter:
    """The prompt API on a trained instance (or panoptic) model: the prompt selects among the model's predicted
    instances (:mod:`seg_d2.prompting.point_prompts` gives the rules), no new mask is made. Scores are the
    instances' scores; ``multimask_output`` gives up to ``max_candidates`` distinct answers, else one.
    Raises :class:`NoMatchingInstance` when no instance answers."""

    def __init__(self, predictor, max_candidates=3, min_box_iou=0.5, duplicate_iou=0.9):
        """``predictor``: as :class:`CachedPredictor` takes it (wrapped in one unless it is one)."""
        if max_candidates < 1:
            raise ValueError(f"max_candidates must be >= 1, got {max_candidates}")
        self.predictor = predictor if isinstance(predictor, CachedPredictor) else CachedPredictor(predictor)
        self.max_candidates, self.min_box_iou, self.duplicate_iou = max_candidates, min_box_iou, duplicate_iou

    def predict(self, image, point_coords=None, point_labels=None, box=None, mask_input=None, multimask_output=True):
        point_coords, point_labels, box, mask_input = check_prompt(point_coords, point_labels, box, mask_input)
        if mask_input is not None:
            raise ValueError(f"a mask prompt (mask_input) needs SAM: set MODEL.SAM.CHECKPOINT ({INSTALL_HINT}); "
                             "a seg_d2 model answers points and boxes")
        image = np.asarray(image)
        if image.ndim != 3:
            raise ValueError(f"image must be (H, W, C), got shape {image.shape}")
        instances = _instances_for_prompt(self.predictor(image), point_coords, point_labels, box)
        count = self.max_candidates if multimask_output else 1
        if box is None:
            chosen = select_instances(instances, point_coords, point_labels, count, self.duplicate_iou)
        else:
            chosen = select_by_box(instances, box, point_coords, point_labels, count, self.min_box_iou,
                                   self.duplicate_iou)
        return PromptMasks(np.stack([m for m, _ in chosen]), np.array([s for _, s in chosen], dtype=np.float32))


def build_prompter(cfg, predictor=None):
    """The prompter ``cfg`` asks for: :class:`SamPrompter` when ``MODEL.SAM.CHECKPOINT`` is set, else a
    :class:`ModelPrompter` on ``predictor`` (default: ``DefaultPredictor(cfg)``, the config's own model)."""
    if cfg.MODEL.SAM.CHECKPOINT:
        return SamPrompter(cfg)
    return ModelPrompter(predictor if predictor is not None else DefaultPredictor(cfg))

