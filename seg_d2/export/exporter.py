"""Export a seg_d2 / Detectron2 model to TorchScript and ONNX.

Both come from one trace through Detectron2's ``TracingAdapter`` of :func:`seg_d2.export.outputs.family_outputs`
(inputs and outputs as documented there). Each export writes ``<name>.onnx`` or ``<name>.ts`` and
``<name>.json``, the metadata ``seg_d2.export.runtime`` needs to pre- and post-process as ``DefaultPredictor``.

ONNX uses PyTorch's TorchScript-based exporter (``dynamo=False``), chosen on purpose: Detectron2's inference
is data-dependent Python (detections filtered by score, NMS, per-level ROI assignment) that a trace records
as graph ops along the sample image's path, the path Detectron2's ``TracingAdapter`` was written for; the
``torch.export``-based exporter (PyTorch's default since 2.9, and it needs onnxscript) must instead prove
every data-dependent shape and branch symbolically. Every node is checked to be a standard ONNX op
(no custom domain), so onnxruntime (or any ONNX runtime) runs it as is.
"""
import json
import logging
import os
import warnings
from contextlib import ExitStack, contextmanager
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple
from unittest import mock

import torch
from torch import Tensor

from detectron2.export import TracingAdapter
from detectron2.export.torchscript_patch import patch_builtin_len
from detectron2.modeling.roi_heads import cascade_rcnn

from .outputs import family_outputs, model_family

__all__ = ["ONNX_OPSET", "TracedModel", "trace_model", "export_onnx", "export_torchscript", "model_metadata"]

logger = logging.getLogger(__name__)

# RoiAlign with "half_pixel" coordinates (Detectron2's aligned ROIAlign) needs opset 16; 17 is what
# onnxruntime >= 1.14 and TensorRT >= 8.6 read.
ONNX_OPSET = 17
INPUT_NAMES = ("image", "output_size")
# Axes that vary from image to image (all others are fixed by the model).
_DYNAMIC_AXES = {
    "image": {1: "height", 2: "width"},
    "output_size": {},
    "boxes": {0: "detections"},
    "scores": {0: "detections"},
    "classes": {0: "detections"},
    "mask_ious": {0: "detections"},
    "masks": {0: "detections", 1: "out_height", 2: "out_width"},
    "sem_seg": {1: "out_height", 2: "out_width"},
    "sem_seg_labels": {0: "out_height", 1: "out_width"},
}


class TracedModel(NamedTuple):
    """A traced model, its family, the names of its outputs (the order of the traced tuple) and the
    (image, output_size) it was traced on."""

    module: torch.jit.ScriptModule
    family: str
    output_names: List[str]
    sample: Tuple[Tensor, Tensor]


@contextmanager
def _quiet_tracer():
    # A trace warns at every Python branch on a tensor; each one is covered by the parity checks instead.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*torch.jit.trace.*deprecated")
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export")
        yield


# seg_d2 modules that split per-image results by len(instances): as Detectron2 does for its own ROI heads
# (TracingAdapter's patch_builtin_len), len() must return the traced size, not a constant.
_LEN_PATCHED_MODULES = ("seg_d2.modeling.roi_heads.mask_iou_head",)


@contextmanager
def _tracing_patches():
    """len() as above, and Python autograd Functions that are the identity at inference replaced (a trace
    records them as PythonOps, which TorchScript cannot save): the cascade's gradient scaling."""
    with ExitStack() as stack:
        stack.enter_context(patch_builtin_len(_LEN_PATCHED_MODULES))
        stack.enter_context(mock.patch.object(cascade_rcnn._ScaleGradient, "apply", lambda x, scale: x))
        yield


def _check_sample(family: str, outputs: Dict[str, Tensor]):
    if family != "semantic" and len(outputs["scores"]) == 0:
        logger.warning("The sample image gives no detection: the trace follows the path of an image with none. "
                       "Export with a sample image that has detections for a graph checked on both paths.")


def trace_model(model: torch.nn.Module, image: Tensor, output_size: Optional[Sequence[int]] = None) -> TracedModel:
    """Trace ``model`` (in eval mode, on its device) on one sample image.

    Args:
        image: (C, H, W) float32 sample, as the model receives it (format, resized).
        output_size: (height, width) to answer at; the image's own size by default.
    """
    family = model_family(model)
    model.eval()
    size = torch.tensor(list(output_size or image.shape[-2:]), dtype=torch.int64)
    image = image.to(torch.float32)
    adapter = TracingAdapter(model, (image, size), inference_func=family_outputs(family)).eval()
    with torch.no_grad(), _quiet_tracer(), _tracing_patches():
        outputs = adapter(image, size)  # records the output schema (names)
        module = torch.jit.trace(adapter, (image, size), check_trace=False)
    names = list(adapter.outputs_schema.keys)
    _check_sample(family, dict(zip(names, outputs)))
    return TracedModel(module, family, names, (image, size))


def export_torchscript(traced: TracedModel, path: str) -> str:
    """Save the traced module (``torch.jit.load`` reads it back; it returns the outputs in
    ``traced.output_names`` order)."""
    traced.module.save(path)
    return path


def _non_standard_ops(onnx_path: str) -> List[str]:
    import onnx

    graph = onnx.load(onnx_path, load_external_data=False).graph
    nodes = list(graph.node)
    seen = []
    while nodes:  # also the subgraphs of If / Loop nodes
        node = nodes.pop()
        if node.domain not in ("", "ai.onnx"):
            seen.append(f"{node.domain}::{node.op_type}")
        for attribute in node.attribute:
            nodes.extend(attribute.g.node if attribute.HasField("g") else [])
    return sorted(set(seen))


def export_onnx(traced: TracedModel, path: str, opset: int = ONNX_OPSET) -> str:
    """Convert the traced module to ONNX at ``path``; raises if any node is not a standard ONNX op."""
    axes = {name: _DYNAMIC_AXES[name] for name in (*INPUT_NAMES, *traced.output_names)}
    with torch.no_grad(), _quiet_tracer():
        torch.onnx.export(
            traced.module, traced.sample, path, dynamo=False, opset_version=opset,
            input_names=list(INPUT_NAMES), output_names=traced.output_names, dynamic_axes=axes,
        )
    custom = _non_standard_ops(path)
    if custom:
        raise RuntimeError(f"{path}: the exported graph has non-standard ops {custom}; no ONNX runtime has them")
    return path


def input_metadata(cfg) -> dict:
    """How DefaultPredictor prepares an image for this config: channel order and test-time resizing."""
    return {"input_format": cfg.INPUT.FORMAT, "min_size_test": cfg.INPUT.MIN_SIZE_TEST,
            "max_size_test": cfg.INPUT.MAX_SIZE_TEST}


def model_metadata(cfg, traced: TracedModel, model: torch.nn.Module) -> dict:
    """What the runtime needs besides the graph: :func:`input_metadata`, the output names, and for
    panoptic models the fusion rule and its thresholds."""
    meta = {
        "family": traced.family,
        "meta_architecture": cfg.MODEL.META_ARCHITECTURE,
        **input_metadata(cfg),
        "input_names": list(INPUT_NAMES),
        "output_names": traced.output_names,
        "torch_version": torch.__version__,
    }
    if traced.family == "panoptic":
        meta["panoptic_fusion"] = _fusion_metadata(model)
    return meta


def _fusion_metadata(model) -> dict:
    fusion = {
        "overlap_thresh": model.combine_overlap_thresh,
        "score_thresh": model.combine_instances_score_thresh,
    }
    if hasattr(model, "stuff_area_limits"):  # SegD2PanopticFPN: per stuff class limits, seg_d2's fusion
        return {**fusion, "rule": "seg_d2", "stuff_area_limits": list(model.stuff_area_limits)}
    return {**fusion, "rule": "detectron2", "stuff_area_thresh": model.combine_stuff_area_thresh}


def write_metadata(meta: dict, path: str) -> str:
    with open(path, "w") as f:
        json.dump(meta, f, indent=2)
    return path


def metadata_path(model_path: str) -> str:
    """``<name>.json`` beside ``<name>.onnx`` / ``<name>.ts``."""
    return os.path.splitext(model_path)[0] + ".json"
