"""Run an exported model as ``DefaultPredictor`` runs the PyTorch one.

:class:`ExportedPredictor` reads ``<name>.onnx`` (onnxruntime, CPU) or ``<name>.ts`` (TorchScript) and its
``<name>.json``; called on an (H, W, C) BGR uint8 image it converts the channel order, resizes with
Detectron2's ``ResizeShortestEdge(MIN_SIZE_TEST, MAX_SIZE_TEST)``, runs the graph and returns numpy arrays
named as in :mod:`seg_d2.export.outputs`. For panoptic models it adds ``panoptic_seg`` (H, W) int32 and
``segments_info``: the graph's instance and semantic outputs fused by :func:`fuse_panoptic_outputs`, with the
model's own rule (Detectron2's ``combine_semantic_and_instance_outputs`` for PanopticFPN, seg_d2's
``fuse_panoptic`` for SegD2PanopticFPN), so the fusion is the PyTorch model's code, not a copy.
"""
import json
from typing import Dict, Tuple

import numpy as np
import torch

from detectron2.data import transforms as T
from detectron2.modeling.meta_arch.panoptic_fpn import combine_semantic_and_instance_outputs
from detectron2.structures import Instances

from ..modeling.meta_arch.panoptic_fusion import fuse_panoptic
from .exporter import metadata_path

__all__ = ["ExportedPredictor", "fuse_panoptic_outputs", "load_metadata", "preprocess"]


def load_metadata(model_path: str) -> dict:
    path = metadata_path(model_path)
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: the metadata written beside {model_path} by the export is missing") from None


def preprocess(original_image: np.ndarray, meta: dict) -> np.ndarray:
    """(H, W, C) BGR image -> (C, h, w) float32 graph input, exactly as DefaultPredictor does: channel
    order of ``meta["input_format"]``, ResizeShortestEdge(min_size_test, max_size_test)."""
    if meta["input_format"] == "RGB":
        original_image = original_image[:, :, ::-1]
    resize = T.ResizeShortestEdge([meta["min_size_test"]] * 2, meta["max_size_test"])
    image = resize.get_transform(original_image).apply_image(original_image)
    return np.ascontiguousarray(image.astype("float32").transpose(2, 0, 1))


def fuse_panoptic_outputs(outputs: Dict[str, np.ndarray], fusion: dict) -> Tuple[np.ndarray, list]:
    """(panoptic_seg, segments_info) from an exported panoptic model's outputs and its metadata's
    ``panoptic_fusion``, by the rule the PyTorch model uses."""
    masks = torch.from_numpy(np.asarray(outputs["masks"]))
    instances = Instances(
        tuple(masks.shape[1:]),
        scores=torch.from_numpy(np.asarray(outputs["scores"])),
        pred_classes=torch.from_numpy(np.asarray(outputs["classes"])),
        pred_masks=masks,
        pred_boxes=torch.from_numpy(np.asarray(outputs["boxes"])),
    )
    semantic = torch.from_numpy(np.asarray(outputs["sem_seg_labels"]))
    if fusion["rule"] == "seg_d2":
        panoptic, segments = fuse_panoptic(
            instances, semantic, overlap_thresh=fusion["overlap_thresh"],
            stuff_area_limit=fusion["stuff_area_limits"], score_thresh=fusion["score_thresh"],
        )
    else:
        panoptic, segments = combine_semantic_and_instance_outputs(
            instances, semantic, fusion["overlap_thresh"], fusion["stuff_area_thresh"], fusion["score_thresh"]
        )
    return panoptic.numpy(), segments


class _OnnxSession:
    def __init__(self, path: str, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def __call__(self, image: np.ndarray, output_size: np.ndarray):
        return self.session.run(None, {"image": image, "output_size": output_size})


class _TorchScriptModule:
    def __init__(self, path: str):
        self.module = torch.jit.load(path, map_location="cpu")

    def __call__(self, image: np.ndarray, output_size: np.ndarray):
        with torch.no_grad():
            return [x.numpy() for x in self.module(torch.from_numpy(image), torch.from_numpy(output_size))]


class ExportedPredictor:
    """``DefaultPredictor`` for an exported model (``.onnx`` or ``.ts``), on the CPU.

    Args:
        path: the exported model; its ``.json`` metadata must lie beside it.
        threads: onnxruntime intra-op threads (0: onnxruntime's default); TorchScript uses torch's.
    """

    def __init__(self, path: str, threads: int = 0):
        self.meta = load_metadata(path)
        self.output_names = self.meta["output_names"]
        self.backend = _OnnxSession(path, threads) if path.endswith(".onnx") else _TorchScriptModule(path)

    def run(self, image: np.ndarray, output_size: Tuple[int, int]) -> Dict[str, np.ndarray]:
        """The graph alone: a preprocessed (C, h, w) image -> outputs at ``output_size`` (height, width)."""
        values = self.backend(image, np.asarray(output_size, dtype=np.int64))
        return dict(zip(self.output_names, values))

    def __call__(self, original_image: np.ndarray) -> dict:
        outputs = self.run(preprocess(original_image, self.meta), original_image.shape[:2])
        if self.meta["family"] == "panoptic":
            outputs["panoptic_seg"], outputs["segments_info"] = fuse_panoptic_outputs(
                outputs, self.meta["panoptic_fusion"]
            )
        return outputs
