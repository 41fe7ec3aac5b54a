"""Segment Anything inside seg_d2, from Meta's segment-anything package (optional: ``pip install seg_d2[sam]``).

SAM is used, not rewritten: ``segment_anything.sam_model_registry`` builds it and ``SamPredictor`` encodes the
image and decodes the prompts. seg_d2 adds the local checkpoint with errors that say what to do, images in
Detectron2's INPUT.FORMAT (also seg_d2's float images of 16-bit files), the embedding kept per image and
batched box prompts. Nothing is downloaded. The package is imported only when SAM is used, so the rest of
seg_d2 works without it.
"""
import os

import numpy as np
import torch

from detectron2.config import configurable

from .prompts import PromptMasks, check_prompt, image_key

__all__ = ["SAM_CHECKPOINT_URLS", "SamPrompter", "SamUnavailableError", "load_sam", "segment_anything", "to_rgb_uint8"]

INSTALL_HINT = "pip install 'seg_d2[sam]' (or: pip install segment-anything==1.0)"
# The official checkpoints, as the segment-anything README ("Model Checkpoints") links them.
SAM_README = "https://github.com/facebookresearch/segment-anything#model-checkpoints"
SAM_CHECKPOINT_URLS = {
    "vit_h": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
    "vit_l": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
    "vit_b": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
}


class SamUnavailableError(ImportError):
    """SAM was asked for, but the segment-anything package is not installed."""


def segment_anything():
    """The segment_anything module, or :class:`SamUnavailableError` saying how to install it."""
    try:
        import segment_anything as module
    except ImportError as e:
        raise SamUnavailableError(f"Segment Anything needs Meta's segment-anything package, which is not installed: "
                                  f"{INSTALL_HINT}. Without it, leave MODEL.SAM.CHECKPOINT empty: prompts then select "
                                  f"among the instances of the config's own model") from e
    return module


def _where_to_get(model_type):
    url = SAM_CHECKPOINT_URLS.get(model_type)
    return (f"download it yourself ({url}; all official checkpoints: {SAM_README})" if url else
            f"the official checkpoints are listed at {SAM_README}")


def load_sam(checkpoint, model_type="vit_h", device="cpu"):
    """SAM of ``model_type`` (a key of ``segment_anything.sam_model_registry``) with the weights of the local
    file ``checkpoint``, in eval mode on ``device``. Errors name the file and what to do."""
    registry = segment_anything().sam_model_registry
    if model_type not in registry:
        raise ValueError(f"MODEL.SAM.TYPE {model_type!r} is not in segment_anything.sam_model_registry "
                         f"(types: {', '.join(sorted(registry))})")
    if not checkpoint:
        raise ValueError(f"MODEL.SAM.CHECKPOINT is empty: SAM needs a local checkpoint of MODEL.SAM.TYPE "
                         f"{model_type!r}; seg_d2 downloads nothing: {_where_to_get(model_type)}")
    if not os.path.isfile(checkpoint):
        raise FileNotFoundError(f"MODEL.SAM.CHECKPOINT {checkpoint}: no such file. seg_d2 downloads nothing: "
                                f"{_where_to_get(model_type)}, then set MODEL.SAM.CHECKPOINT to its path")
    sam = registry[model_type]()
    try:
        # map_location: checkpoints saved from a GPU also load on a CPU-only machine
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and torch errors of a file that is not a checkpoint
        raise ValueError(f"MODEL.SAM.CHECKPOINT {checkpoint}: not a PyTorch state_dict ({type(e).__name__}: {e})") from e
    try:
        sam.load_state_dict(state)
    except (RuntimeError, AttributeError, TypeError) as e:
        first = str(e).strip().splitlines()
        raise ValueError(f"MODEL.SAM.CHECKPOINT {checkpoint} does not fit MODEL.SAM.TYPE {model_type!r} "
                         f"({first[1].strip() if len(first) > 1 else first[0]} ...); official checkpoints are named "
                         f"after their type (sam_vit_b_*.pth is 'vit_b')") from e
    return sam.to(device).eval()


def to_rgb_uint8(image, input_format):
    """(H, W, C) image in Detectron2's ``input_format`` ("BGR", "RGB", "L") as the (H, W, 3) RGB uint8 image
    SamPredictor takes; seg_d2's float images (0..255, e.g. 16-bit files normalised) are rounded."""
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] not in (1, 3):
        raise ValueError(f"image must be (H, W, 3) or (H, W, 1), got shape {array.shape}")
    if array.dtype != np.uint8:
        array = np.clip(np.rint(array), 0, 255).astype(np.uint8)
    if input_format == "L" or array.shape[2] == 1:
        return np.repeat(array[:, :, :1], 3, axis=2)
    if input_format not in ("BGR", "RGB"):
        raise ValueError(f"input_format must be 'BGR', 'RGB' or 'L', got {input_format!r}")
    return np.ascontiguousarray(array[:, :, ::-1]) if input_format == "BGR" else array


class SamPrompter:
    """Prompts answered by SAM (``segment_anything.SamPredictor``); the image is encoded once and kept until
    another image comes (several prompts on one image encode once).

    ``predict`` returns exactly what ``SamPredictor.predict`` returns for the same image and prompt;
    ``predict_boxes`` decodes many boxes in batches (the detector -> SAM path).
    """

    @configurable
    def __init__(self, sam, *, input_format="BGR", box_batch=16):
        """
        Args:
            sam: a ``segment_anything.modeling.Sam`` (e.g. from :func:`load_sam`).
            input_format: Detectron2's INPUT.FORMAT of the images given ("BGR", "RGB" or "L").
            box_batch: boxes per mask-decoder call (each holds its masks at full image size).
        """
        if box_batch < 1:
            raise ValueError(f"MODEL.SAM.BOX_BATCH must be >= 1, got {box_batch}")
        self.predictor = segment_anything().SamPredictor(sam)
        self.input_format = input_format
        self.box_batch = box_batch
        self._image_key = None

    @classmethod
    def from_config(cls, cfg, sam=None):
        return {
            "sam": sam if sam is not None else load_sam(cfg.MODEL.SAM.CHECKPOINT, cfg.MODEL.SAM.TYPE, cfg.MODEL.DEVICE),
            "input_format": cfg.INPUT.FORMAT,
            "box_batch": cfg.MODEL.SAM.BOX_BATCH,
        }

    def set_image(self, image, original_size=None):
        """Encode ``image`` ((H, W, C) in ``input_format``) unless it is the image encoded last.

        ``original_size`` (height, width): the size masks and prompts refer to when ``image`` is a resized
        copy (a detector's input); by default the image's own."""
        size = tuple(original_size) if original_size is not None else tuple(np.shape(image)[:2])
        key = (image_key(image), size)
        if key == self._image_key:
            return
        rgb = to_rgb_uint8(image, self.input_format)
        # SamPredictor.set_image's steps, with the original size given (set_torch_image's public argument)
        resized = self.predictor.transform.apply_image(rgb)
        tensor = torch.as_tensor(resized, device=self.predictor.device).permute(2, 0, 1).contiguous()[None]
        self._image_key = None  # an encoding that fails half-way leaves no stale key behind
        self.predictor.set_torch_image(tensor, size)
        self._image_key = key

    def image_embedding(self, image):
        """SAM's (1, 256, 64, 64) embedding of ``image`` (computed once per image)."""
        self.set_image(image)
        return self.predictor.get_image_embedding()

    @property
    def mask_input_size(self):
        """(h, w) of a ``mask_input`` (256 x 256 for the official models)."""
        return tuple(self.predictor.model.prompt_encoder.mask_input_size)

    def predict(self, image, point_coords=None, point_labels=None, box=None, mask_input=None, multimask_output=True):
        """SAM's masks for one prompt (see :mod:`seg_d2.prompting.prompts`) on ``image`` -> :class:`PromptMasks`
        (three candidates with ``multimask_output``, else one; scores are SAM's predicted IoUs)."""
        point_coords, point_labels, box, mask_input = check_prompt(point_coords, point_labels, box, mask_input)
        if mask_input is not None and mask_input.shape[1:] != self.mask_input_size:
            raise ValueError(f"mask_input must be (1, {self.mask_input_size[0]}, {self.mask_input_size[1]}) low-res "
                             f"logits (an earlier answer's low_res_logits[i][None]), got {mask_input.shape}")
        self.set_image(image)
        masks, scores, low_res = self.predictor.predict(point_coords, point_labels, box, mask_input, multimask_output)
        return PromptMasks(masks, scores, low_res)

    def predict_boxes(self, image, boxes, multimask_output=False, original_size=None):
        """One mask per box: ((B, H, W) bool masks, (B,) predicted IoUs) as CPU tensors, at ``original_size``
        (default: the image's). With ``multimask_output`` each box's best of three is kept."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        height, width = tuple(original_size) if original_size is not None else np.shape(image)[:2]
        if len(boxes) == 0:  # nothing to decode: the image is not even encoded
            return torch.zeros((0, height, width), dtype=torch.bool), torch.zeros(0)
        self.set_image(image, (height, width))
        # boxes scaled in numpy as SamPredictor.predict scales its box, so one box gives predict's answer
        scaled = self.predictor.transform.apply_boxes(boxes, (height, width))
        masks, ious = [], []
        for start in range(0, len(scaled), self.box_batch):
            chunk = torch.as_tensor(scaled[start:start + self.box_batch], dtype=torch.float, device=self.predictor.device)
            chunk_masks, chunk_ious, _ = self.predictor.predict_torch(None, None, chunk, None, multimask_output)
            best = chunk_ious.argmax(dim=1)
            rows = torch.arange(len(best), device=best.device)
            masks.append(chunk_masks[rows, best].cpu())
            ious.append(chunk_ious[rows, best].cpu())
        return torch.cat(masks), torch.cat(ious)

    def automatic_masks(self, image, **generator_options):
        """SAM's automatic mask generator on ``image``: ``SamAutomaticMaskGenerator(sam, **generator_options)``'s
        records ("segmentation" (H, W) bool, "predicted_iou", "stability_score", "bbox" XYWH, ...)."""
        generator = segment_anything().SamAutomaticMaskGenerator(self.predictor.model, **generator_options)
        return generator.generate(to_rgb_uint8(image, self.input_format))
