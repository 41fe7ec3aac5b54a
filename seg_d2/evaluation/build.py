"""build_evaluators: the seg_d2 evaluators for a dataset's evaluator_type, configured from cfg.SEG_D2.EVALUATION."""
from detectron2.data import MetadataCatalog
from detectron2.evaluation import COCOPanopticEvaluator

from .coco_evaluator import FastCOCOEvaluator
from .panoptic_evaluator import PanopticQualityEvaluator
from .sem_seg_evaluator import SemSegMetricsEvaluator


def _panoptic(cfg, dataset_name, output_dir):
    if cfg.SEG_D2.EVALUATION.PANOPTIC_ENGINE == "panopticapi":
        return COCOPanopticEvaluator(dataset_name, output_dir)
    if cfg.SEG_D2.EVALUATION.PANOPTIC_ENGINE != "seg_d2":
        raise ValueError("SEG_D2.EVALUATION.PANOPTIC_ENGINE must be 'seg_d2' or 'panopticapi'")
    return PanopticQualityEvaluator(dataset_name, output_dir)


def _coco(cfg, dataset_name, output_dir):
    return FastCOCOEvaluator(dataset_name, output_dir=output_dir, engine=cfg.SEG_D2.EVALUATION.COCO_ENGINE)


def _sem_seg(cfg, dataset_name, output_dir):
    ev = cfg.SEG_D2.EVALUATION
    return SemSegMetricsEvaluator(dataset_name, output_dir=output_dir, dilation_ratio=ev.BOUNDARY_DILATION_RATIO,
                                  predicted_only=ev.SEM_SEG_PREDICTED_ONLY)


_BY_TYPE = {
    "coco": (_coco,),
    "sem_seg": (_sem_seg,),
    "coco_panoptic_seg": (_panoptic, _coco, _sem_seg),
}


def build_evaluators(cfg, dataset_name, output_dir):
    """The seg_d2 evaluators for ``MetadataCatalog.get(dataset_name).evaluator_type``.

    "coco" -> FastCOCOEvaluator; "sem_seg" -> SemSegMetricsEvaluator; "coco_panoptic_seg" (panoptic-separated
    datasets) -> panoptic (PANOPTIC_ENGINE) + COCO instance AP + semantic metrics.
    """
    evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type")
    if evaluator_type not in _BY_TYPE:
        raise NotImplementedError(f"no seg_d2 evaluator for dataset {dataset_name} of type {evaluator_type!r}")
    return [make(cfg, dataset_name, output_dir) for make in _BY_TYPE[evaluator_type]]
