"""export_model (config + weights -> files) and check_export (exported files vs the PyTorch model)."""
import logging
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model

from ..data.image_io import Normalization, read_image
from .exporter import (
    export_onnx,
    export_torchscript,
    input_metadata,
    metadata_path,
    model_metadata,
    trace_model,
    write_metadata,
)
from .parity import TOLERANCES, check_parity, compare_outputs, reference_outputs
from .runtime import ExportedPredictor, preprocess

__all__ = ["FORMATS", "export_model", "check_export", "load_model", "read_input_image", "sample_image"]

logger = logging.getLogger(__name__)

FORMATS = {"onnx": (".onnx", export_onnx), "torchscript": (".ts", export_torchscript)}


def read_input_image(cfg, path: str, window=None) -> np.ndarray:
    """An image file (or its ``window`` (x0, y0, x1, y1)) as the model takes it, BGR as DefaultPredictor's input:
    16-bit and float files normalised as ``INPUT.NORMALIZE`` says, bands chosen by ``INPUT.BANDS``
    (:func:`seg_d2.data.image_io.read_image`; Detectron2's reader saturates a 16-bit image to white)."""
    return read_image(path, "BGR", Normalization.from_config(cfg), tuple(cfg.INPUT.BANDS), window)


def sample_image(cfg) -> np.ndarray:
    """The first image of ``cfg.DATASETS.TEST[0]`` (:func:`read_input_image`), the default image to trace on."""
    if not cfg.DATASETS.TEST:
        raise ValueError("no sample image: DATASETS.TEST is empty; pass an image (--sample-image)")
    records = DatasetCatalog.get(cfg.DATASETS.TEST[0])
    if not records:
        raise ValueError(f"no sample image: dataset {cfg.DATASETS.TEST[0]!r} has no records")
    return read_input_image(cfg, records[0]["file_name"], records[0].get("window"))


def load_model(cfg) -> torch.nn.Module:
    """The model of ``cfg`` in eval mode, with ``cfg.MODEL.WEIGHTS`` loaded (warns when there are none)."""
    model = build_model(cfg)
    if cfg.MODEL.WEIGHTS:
        DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    else:
        logger.warning("MODEL.WEIGHTS is empty: exporting the model with its initial (random) weights")
    return model.eval()


def export_model(cfg, output_dir: str, model: Optional[torch.nn.Module] = None,
                 image: Optional[np.ndarray] = None, formats: Sequence[str] = ("onnx", "torchscript"),
                 name: str = "model") -> Dict[str, str]:
    """Export the model of ``cfg`` (built and loaded from ``cfg.MODEL.WEIGHTS`` unless given).

    Args:
        output_dir: where ``<name>.onnx`` / ``<name>.ts`` and ``<name>.json`` are written.
        model: an already built model (e.g. trained in this process); it is put in eval mode.
        image: (H, W, C) BGR sample image to trace on; :func:`sample_image` by default. It should give
            detections (for detectors), so that the trace records the path that produces them.
        formats: any of "onnx", "torchscript".

    Returns:
        {format: path} for each format, and "metadata": the JSON path.
    """
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown export format(s) {sorted(unknown)}; choose from {sorted(FORMATS)}")
    model = (model or load_model(cfg)).eval()
    image = sample_image(cfg) if image is None else image
    tensor = torch.from_numpy(preprocess(image, input_metadata(cfg))).to(model.device)
    traced = trace_model(model, tensor, image.shape[:2])
    os.makedirs(output_dir, exist_ok=True)
    paths = {}
    for fmt in formats:
        suffix, export = FORMATS[fmt]
        paths[fmt] = export(traced, os.path.join(output_dir, name + suffix))
    paths["metadata"] = write_metadata(model_metadata(cfg, traced, model), metadata_path(paths[formats[0]]))
    return paths


def check_export(path: str, model: torch.nn.Module, images: Sequence[np.ndarray],
                 tolerances: Optional[dict] = TOLERANCES) -> List[Dict[str, float]]:
    """Run the export at ``path`` and ``model`` (eval mode) on each (H, W, C) BGR image as
    DefaultPredictor would; return one :func:`compare_outputs` report per image. With ``tolerances``
    (None: report only), raise an AssertionError naming the file and image beyond them."""
    predictor = ExportedPredictor(path)
    model.eval()
    reports = []
    for index, image in enumerate(images):
        exported = predictor(image)
        tensor = torch.from_numpy(preprocess(image, predictor.meta)).to(model.device)
        reference = reference_outputs(model, tensor, *image.shape[:2])
        if tolerances is None:
            reports.append(compare_outputs(exported, reference))
        else:
            reports.append(check_parity(exported, reference, tolerances, where=f"{path}, image {index}"))
    return reports
