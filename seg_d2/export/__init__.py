"""Export seg_d2 / Detectron2 models to TorchScript and ONNX, run the exports, check them against PyTorch.

    from seg_d2.export import export_model, check_export, ExportedPredictor
    paths = export_model(cfg, output_dir="export")           # model.onnx, model.ts, model.json
    reports = check_export(paths["onnx"], model, [image])    # max differences per output vs PyTorch
    outputs = ExportedPredictor(paths["onnx"])(image)        # as DefaultPredictor(cfg)(image)

``tools/export_model.py`` is the command line; ``docs/export.md`` the guide.
"""
from .api import check_export, export_model, read_input_image
from .exporter import ONNX_OPSET, TracedModel, export_onnx, export_torchscript, trace_model
from .outputs import model_family
from .parity import TOLERANCES, check_parity, compare_outputs, reference_outputs
from .postprocess import detection_outputs, paste_masks
from .runtime import ExportedPredictor, fuse_panoptic_outputs, preprocess

__all__ = [
    "ONNX_OPSET",
    "TOLERANCES",
    "ExportedPredictor",
    "TracedModel",
    "check_export",
    "check_parity",
    "compare_outputs",
    "detection_outputs",
    "export_model",
    "export_onnx",
    "export_torchscript",
    "fuse_panoptic_outputs",
    "model_family",
    "paste_masks",
    "preprocess",
    "read_input_image",
    "reference_outputs",
    "trace_model",
]
