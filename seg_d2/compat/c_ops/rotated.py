"""Rotated-box ops of Detectron2 v0.6's compiled extension, in PyTorch.

``nms_rotated`` is also what Detectron2 reaches as ``torch.ops.detectron2.nms_rotated`` (from
``detectron2.layers.nms``, possibly inside TorchScript); :func:`register_torch_ops` registers it there.
"""
import torch

from .roi_align_rotated import roi_align_rotated_backward, roi_align_rotated_forward
from .rotated_iou import box_iou_rotated, nms_rotated

__all__ = [
    "box_iou_rotated",
    "nms_rotated",
    "roi_align_rotated_forward",
    "roi_align_rotated_backward",
    "register_torch_ops",
]

# Same schema as the C++ ``m.def("nms_rotated", &nms_rotated)`` of Detectron2 v0.6
_NMS_ROTATED_SCHEMA = "nms_rotated(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
_library = None  # kept alive: registrations are dropped when their Library is garbage collected


def _has_op(namespace: str, name: str) -> bool:
    try:
        getattr(getattr(torch.ops, namespace), name)
    except (AttributeError, RuntimeError):
        return False
    return True


def register_torch_ops() -> None:
    """Register ``torch.ops.detectron2.nms_rotated`` unless it exists (ours or a compiled one); idempotent."""
    global _library
    if _library is not None or _has_op("detectron2", "nms_rotated"):
        return
    # FRAGMENT: adds to the namespace without claiming it, so it cannot clash with other definitions
    library = torch.library.Library("detectron2", "FRAGMENT")
    library.define(_NMS_ROTATED_SCHEMA)
    library.impl("nms_rotated", nms_rotated, "CompositeExplicitAutograd")
    _library = library
