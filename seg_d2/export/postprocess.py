"""Detectron2's detector post-processing as plain tensor code that traces, scripts and exports to ONNX.

Detectron2 v0.6's ``detector_postprocess`` pastes masks with ``paste_masks_in_image``, which on CPU loops
over the masks in Python: a trace unrolls that loop for the sample image's number of detections (so the
exported graph breaks on any other count, or drops the masks), and it cannot be scripted. Here the paste is
two batched matrix products, the same arithmetic for any number of masks, zero included:

bilinear sampling (``grid_sample``, ``align_corners=False``, zero padding) of an M x M mask at the pixel
centres of a box is separable, ``pasted = Wy @ mask @ Wx^T``, where row ``x`` of ``Wx`` holds the bilinear
"tent" weights ``max(0, 1 - |u(x) - j|)`` of the mask columns ``j`` at the source coordinate ``u(x)``.
Like Detectron2's CPU path (one mask at a time with ``skip_empty``), pixels outside the box widened by one
pixel on each side are left at 0. Only MatMul and element-wise ops reach the graph, no GridSample.
"""
from typing import Dict, Optional

import torch
from torch import Tensor

__all__ = ["detection_outputs", "paste_masks"]


def _axis_weights(low: Tensor, high: Tensor, size: Tensor, mask_size: int) -> Tensor:
    """(N, size, mask_size) bilinear weights of the mask's rows/columns at each pixel centre of one axis,
    for boxes spanning [low, high) on that axis; zero outside Detectron2's paste window."""
    pixels = torch.arange(size, device=low.device).to(torch.float32)
    centres = pixels + 0.5
    # Detectron2's _do_paste_mask: the grid coordinate in [-1, 1] over the box ...
    grid = (centres[None, :] - low[:, None]) / (high - low)[:, None] * 2 - 1
    # ... and grid_sample's unnormalisation to source pixels (align_corners=False).
    source = ((grid + 1) * mask_size - 1) / 2
    taps = torch.arange(mask_size, device=low.device).to(torch.float32)
    weights = (1 - (source[:, :, None] - taps).abs()).clamp(min=0)
    # The paste window of _do_paste_mask with skip_empty: [floor(low) - 1, ceil(high) + 1), inside the image.
    start = (low.floor() - 1).clamp(min=0)
    stop = torch.minimum(high.ceil() + 1, size.to(torch.float32))
    inside = (pixels[None, :] >= start[:, None]) & (pixels[None, :] < stop[:, None])
    return weights * inside[:, :, None].to(weights.dtype)


def paste_masks(masks: Tensor, boxes: Tensor, image_size: Tensor, threshold: float = 0.5) -> Tensor:
    """Paste per-box mask probabilities into the image, as Detectron2's ``paste_masks_in_image``.

    Args:
        masks: (N, M, M) mask probabilities in each box's frame (the mask head's output, class selected).
        boxes: (N, 4) boxes, XYXY absolute, in output pixels.
        image_size: (2,) integer tensor, the output (height, width).
        threshold: pixels with probability >= threshold are foreground.

    Returns:
        (N, height, width) boolean masks.
    """
    masks = masks.to(torch.float32)
    boxes = boxes.to(torch.float32)
    rows = _axis_weights(boxes[:, 1], boxes[:, 3], image_size[0], masks.shape[-2])
    cols = _axis_weights(boxes[:, 0], boxes[:, 2], image_size[1], masks.shape[-1])
    return torch.matmul(torch.matmul(rows, masks), cols.transpose(1, 2)) >= threshold


def detection_outputs(
    boxes: Tensor,
    scores: Tensor,
    classes: Tensor,
    input_size: Tensor,
    output_size: Tensor,
    roi_masks: Optional[Tensor] = None,
    mask_ious: Optional[Tensor] = None,
    mask_threshold: float = 0.5,
) -> Dict[str, Tensor]:
    """The detections of an image the detector saw at ``input_size`` (height, width), at ``output_size``,
    as Detectron2's ``detector_postprocess``: boxes scaled and clipped, empty boxes dropped, masks pasted.
    Sizes are (2,) integer tensors, so a trace keeps them as graph inputs.

    Returns:
        {"boxes" (N, 4), "scores" (N,), "classes" (N,) int64, and with ``roi_masks`` (N, 1, M, M)
        "masks" (N, H, W) bool; with ``mask_ious`` (Mask Scoring R-CNN) "mask_ious" (N,)}.
    """
    limits = output_size.to(torch.float32)
    scale_y, scale_x = (limits / input_size.to(torch.float32)).unbind(0)
    scaled = boxes * torch.stack([scale_x, scale_y, scale_x, scale_y])
    # Boxes.clip: x into [0, width], y into [0, height]
    upper = torch.stack([limits[1], limits[0], limits[1], limits[0]])
    clipped = torch.minimum(scaled, upper).clamp(min=0)
    keep = torch.nonzero((clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])).flatten()
    boxes = clipped[keep]
    outputs = {"boxes": boxes, "scores": scores[keep], "classes": classes[keep].to(torch.int64)}
    if roi_masks is not None:
        outputs["masks"] = paste_masks(roi_masks[keep][:, 0], boxes, output_size, mask_threshold)
    if mask_ious is not None:
        outputs["mask_ious"] = mask_ious[keep]
    return outputs
