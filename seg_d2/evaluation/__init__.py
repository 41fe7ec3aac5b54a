"""Exact, fast evaluation: COCO box/mask AP, Panoptic Quality, semantic metrics (IoU, Dice, Boundary IoU).

Evaluators are Detectron2 DatasetEvaluators; the functions evaluate files offline (tools/evaluate.py).
Names are imported on first use (PEP 562), so that, e.g., offline COCO AP does not import the panoptic,
semantic or Detectron2-based modules; the offline functions import neither torch nor Detectron2.
"""
from seg_d2.compat.import_hooks import lazy_attributes

_EXPORTS = {
    "AnnotationIdZeroWarning": "coco_inputs",
    "EvaluationInputError": "validation",
    "FastCOCOEvaluator": "coco_evaluator",
    "PQStats": "panoptic_quality",
    "PanopticQualityEvaluator": "panoptic_evaluator",
    "SemSegMetricsEvaluator": "sem_seg_evaluator",
    "build_evaluators": "build",
    "evaluate_coco": "coco_mask_ap",
    "evaluate_sem_seg_files": "semantic_metrics",
    "pq_compute": "panoptic_quality",
    "pq_image_stats": "panoptic_quality",
    "run_cocoeval": "coco_mask_ap",
    "sem_seg_image_stats": "semantic_metrics",
    "sem_seg_metrics": "semantic_metrics",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS)
