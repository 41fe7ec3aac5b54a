"""Exact, fast evaluation: COCO box/mask AP, Panoptic Quality, semantic metrics (IoU, Dice, Boundary IoU).

Evaluators are Detectron2 DatasetEvaluators; the functions evaluate files offline (tools/evaluate.py).
Names are imported on first use (PEP 562), so that, e.g., offline COCO AP does not import the panoptic,
semantic or Detectron2-based modules.
"""
import importlib

_EXPORTS = {
    "AnnotationIdZeroWarning": "coco_inputs",
    "EvaluationInputError": "validation",
    "FastCOCOEvaluator": "coco_evaluator",
    "PQStats": "panoptic_quality",
    "PanopticQualityEvaluator": "panoptic_evaluator",
    "SemSegMetricsEvaluator": "sem_seg_evaluator",
    "build_evaluators": "build",
    "evaluate_coco": "coco_mask_ap",
    "evaluate_sem_seg_files": "sem_seg_evaluator",
    "pq_compute": "panoptic_quality",
    "pq_image_stats": "panoptic_quality",
    "run_cocoeval": "coco_mask_ap",
    "sem_seg_image_stats": "sem_seg_evaluator",
    "sem_seg_metrics": "sem_seg_evaluator",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
