"""FastCOCOEvaluator: Detectron2's COCOEvaluator with box/mask AP from seg_d2's exact fast engines."""
import itertools
import json
import os

from detectron2.evaluation import COCOEvaluator
from detectron2.evaluation.coco_evaluation import _evaluate_predictions_on_coco
from detectron2.utils.file_io import PathManager

from .coco_mask_ap import resolve_engine, run_cocoeval
from .validation import EvaluationInputError


class FastCOCOEvaluator(COCOEvaluator):
    """Detectron2's COCOEvaluator with box/mask AP from a fast exact engine.

    Same constructor and outputs as COCOEvaluator (``use_fast_impl`` is replaced by ``engine``);
    keypoints stay with pycocotools. Numbers equal COCOEvaluator(use_fast_impl=False).
    """

    def __init__(self, dataset_name, tasks=None, distributed=True, output_dir=None, *, engine="auto", **kwargs):
        kwargs.pop("use_fast_impl", None)
        super().__init__(dataset_name, tasks, distributed, output_dir, use_fast_impl=False, **kwargs)
        self._engine = resolve_engine(engine)

    def _eval_predictions(self, predictions, img_ids=None):
        coco_results = list(itertools.chain(*[x["instances"] for x in predictions]))
        self._unmap_category_ids(coco_results)
        self._dump_results(coco_results)
        if not self._do_evaluation:
            self._logger.info("Annotations are not available for evaluation.")
            return
        tasks = self._tasks or self._tasks_from_predictions(coco_results)
        self._logger.info(f"Evaluating predictions with the exact '{self._engine}' COCO engine ...")
        for task in sorted(tasks):
            if not coco_results:
                coco_eval = None  # as COCOEvaluator: no predictions -> NaN
            elif task == "keypoints":
                coco_eval = _evaluate_predictions_on_coco(
                    self._coco_api, coco_results, task, kpt_oks_sigmas=self._kpt_oks_sigmas,
                    use_fast_impl=False, img_ids=img_ids, max_dets_per_image=self._max_dets_per_image,
                )
            else:
                coco_eval = run_cocoeval(
                    self._coco_api, coco_results, task, self._engine, max_dets=self._max_dets_per_image,
                    img_ids=img_ids, drop_bbox_for_segm=True, gt_source=self._metadata.json_file,
                    results_source=f"predictions on {self._metadata.name}",
                )
            self._results[task] = self._derive_coco_results(
                coco_eval, task, class_names=self._metadata.get("thing_classes")
            )

    def _unmap_category_ids(self, coco_results):
        """Contiguous training ids back to the dataset's category ids."""
        mapping = getattr(self._metadata, "thing_dataset_id_to_contiguous_id", None)
        if mapping is None:
            return
        reverse = {v: k for k, v in mapping.items()}
        for r in coco_results:
            if r["category_id"] not in reverse:
                raise EvaluationInputError(
                    f"a prediction has class {r['category_id']}, but the dataset has {len(reverse)} classes"
                )
            r["category_id"] = reverse[r["category_id"]]

    def _dump_results(self, coco_results):
        if not self._output_dir:
            return
        path = os.path.join(self._output_dir, "coco_instances_results.json")
        self._logger.info(f"Saving results to {path}")
        with PathManager.open(path, "w") as f:
            json.dump(coco_results, f)
