"""Does an exported model answer as the PyTorch model does? Differences per output, and a verdict.

The reference is the PyTorch model called as ``DefaultPredictor`` calls it
(``model([{"image", "height", "width"}])``, Detectron2's own post-processing), in the exported outputs'
names. Tolerances (:data:`TOLERANCES`):

- detections: the same number, in the same order, the same classes; boxes within ``box_atol`` pixels,
  scores and mask IoUs within ``score_atol``;
- masks, semantic labels and the panoptic map: at most ``pixel_fraction`` of the pixels differ (a float
  rounding difference can flip a pixel whose mask probability is within ~1e-6 of the threshold, or whose
  two best classes tie);
- semantic scores: within ``logit_atol`` (absolute) of the reference's;
- panoptic segments: the same ids, categories and kinds (thing / stuff), in the same order.
"""
from typing import Dict

import numpy as np
import torch

__all__ = ["TOLERANCES", "reference_outputs", "compare_outputs", "beyond_tolerance", "check_parity"]

TOLERANCES = {"box_atol": 1e-3, "score_atol": 1e-4, "logit_atol": 1e-3, "pixel_fraction": 1e-4}


def reference_outputs(model: torch.nn.Module, image: torch.Tensor, height: int, width: int) -> Dict[str, object]:
    """The PyTorch model's outputs for one preprocessed (C, h, w) image, at (height, width), as numpy."""
    with torch.no_grad():
        (result,) = model([{"image": image, "height": height, "width": width}])
    outputs = {}
    if "instances" in result:
        instances = result["instances"].to("cpu")
        outputs.update(boxes=instances.pred_boxes.tensor, scores=instances.scores, classes=instances.pred_classes)
        if instances.has("pred_masks"):
            outputs["masks"] = instances.pred_masks
        if instances.has("pred_mask_ious"):
            outputs["mask_ious"] = instances.pred_mask_ious
    if "sem_seg" in result:
        outputs["sem_seg"] = result["sem_seg"].cpu()
        outputs["sem_seg_labels"] = outputs["sem_seg"].argmax(dim=0)
    if "panoptic_seg" in result:
        panoptic, outputs["segments_info"] = result["panoptic_seg"]
        outputs["panoptic_seg"] = panoptic.cpu()
    return {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in outputs.items()}


def _max_abs(a, b) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max()) if a.size else 0.0


def _pixel_fraction(a, b) -> float:
    return float((a != b).mean()) if a.size else 0.0


def _segment_keys(segments) -> list:
    return [(s["id"], s["category_id"], s["isthing"]) for s in segments]


def compare_outputs(exported: Dict[str, object], reference: Dict[str, object]) -> Dict[str, float]:
    """Per output: the largest absolute difference ("boxes", "scores", "mask_ious", "sem_seg"), or the
    fraction of differing values (the rest); ``detections`` is the difference in count (which must be 0
    before the others mean anything), ``segments`` 1 if the panoptic segment lists differ; inf where
    shapes differ."""
    report = {}
    if "scores" in reference:
        report["detections"] = float(abs(len(exported["scores"]) - len(reference["scores"])))
    for name, ref in reference.items():
        if name == "segments_info":
            report["segments"] = float(_segment_keys(exported[name]) != _segment_keys(ref))
            continue
        out = np.asarray(exported[name])
        if out.shape != ref.shape:
            report[name] = float("inf")
        elif name in ("boxes", "scores", "mask_ious", "sem_seg"):
            report[name] = _max_abs(out, ref)
        else:
            report[name] = _pixel_fraction(out, ref)
    return report


def _limit(name: str, tolerances: dict) -> float:
    if name == "boxes":
        return tolerances["box_atol"]
    if name in ("scores", "mask_ious"):
        return tolerances["score_atol"]
    if name == "sem_seg":
        return tolerances["logit_atol"]
    if name in ("detections", "classes", "segments"):
        return 0.0
    return tolerances["pixel_fraction"]


def beyond_tolerance(report: Dict[str, float], tolerances: dict = TOLERANCES) -> Dict[str, float]:
    """The entries of a :func:`compare_outputs` report that exceed their tolerance."""
    return {k: v for k, v in report.items() if not v <= _limit(k, tolerances)}


def check_parity(exported: Dict[str, object], reference: Dict[str, object], tolerances: dict = TOLERANCES,
                 where: str = "") -> Dict[str, float]:
    """:func:`compare_outputs`, raising an AssertionError naming ``where`` and every output beyond its
    tolerance; returns the report."""
    report = compare_outputs(exported, reference)
    failed = beyond_tolerance(report, tolerances)
    if failed:
        raise AssertionError(f"{where}: exported outputs differ from PyTorch's beyond tolerance: {failed} "
                             f"(tolerances {tolerances}; full report {report})")
    return report
