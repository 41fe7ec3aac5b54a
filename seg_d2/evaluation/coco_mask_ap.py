"""COCO box / mask AP through the fastest exact engine installed.

pycocotools' COCOeval defines the numbers (and stays the test oracle). ultrafast-pycocotools and hotcoco
reproduce them bit for bit at 25-30x the speed; ``engine="auto"`` takes hotcoco (fastest side by side in
bench/bench_evaluation.py: 1.5-2x ultrafast's speed), then ultrafast-pycocotools, then pycocotools.

Kept on purpose: pycocotools' ``loadRes`` takes a detection's area from its ``bbox`` when it has one,
also for mask AP, which moves APs/m/l. Offline evaluation keeps that quirk (a results file means what
pycocotools says it means); Detectron2's COCOEvaluator drops the boxes for mask AP, and so does
:class:`FastCOCOEvaluator` (``drop_bbox_for_segm``) so that it reproduces Detectron2's numbers.
"""
import contextlib
import importlib
import io
import itertools
import json
import os

import numpy as np
from detectron2.evaluation import COCOEvaluator
from detectron2.evaluation.coco_evaluation import _evaluate_predictions_on_coco
from detectron2.utils.file_io import PathManager
from pycocotools import mask as mask_util

from .validation import EvaluationInputError, check_coco_ground_truth, check_coco_results, load_json

# engine name -> (module with COCO, module with COCOeval), fastest first (bench/bench_evaluation.py)
_ENGINES = {
    "hotcoco": ("hotcoco", "hotcoco"),
    "ultrafast": ("ultrafast_pycocotools", "ultrafast_pycocotools"),
    "pycocotools": ("pycocotools.coco", "pycocotools.cocoeval"),
}
ENGINES = ("auto",) + tuple(_ENGINES)
BOX_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
RECALL_METRICS = ("AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def resolve_engine(engine="auto"):
    """The engine name to use; "auto" is the first importable of hotcoco, ultrafast, pycocotools."""
    if engine not in ENGINES:
        raise ValueError(f"unknown COCO engine {engine!r}; choose from {ENGINES}")
    candidates = list(_ENGINES) if engine == "auto" else [engine]
    for name in candidates:
        try:
            importlib.import_module(_ENGINES[name][0])
            return name
        except ImportError:
            if engine != "auto":
                raise
    raise ImportError("no COCO evaluation engine is installed")


class CocoEvalResult:
    """What Detectron2 reads from a COCOeval: ``stats`` (12 numbers), ``eval["precision"]``, ``params``."""

    def __init__(self, stats, precision, recall, params):
        self.stats = stats
        self.eval = {"precision": precision, "recall": recall}
        self.params = params


def _summary_stats(precision, recall, params):
    """The 12 numbers of COCOeval.summarize (D2's COCOevalMaxDets form: AP at ``maxDets[2]``)."""
    iou_thrs = np.asarray(params.iouThrs)
    area = {lbl: i for i, lbl in enumerate(params.areaRngLbl)}
    max_dets = list(params.maxDets)

    def mean_valid(x):
        x = x[x > -1]
        return float(np.mean(x)) if x.size else -1.0

    def ap(iou=None, rng="all", m=max_dets[2]):
        p = precision if iou is None else precision[np.flatnonzero(np.isclose(iou_thrs, iou))]
        return mean_valid(p[:, :, :, area[rng], max_dets.index(m)])

    def ar(rng="all", m=max_dets[2]):
        return mean_valid(recall[:, :, area[rng], max_dets.index(m)])

    return np.array(
        [ap(), ap(0.5), ap(0.75), ap(rng="small"), ap(rng="medium"), ap(rng="large")]
        + [ar(m=max_dets[0]), ar(m=max_dets[1]), ar(), ar("small"), ar("medium"), ar("large")]
    )


def _as_dataset(gt, source="ground truth"):
    """A COCO ground truth as a dict, from a path, a dict or any COCO API object."""
    dataset = gt.dataset if hasattr(gt, "dataset") else load_json(gt)
    check_coco_ground_truth(dataset, source)
    return dataset


def run_cocoeval(gt, results, iou_type, engine="auto", max_dets=(1, 10, 100), img_ids=None,
                 drop_bbox_for_segm=False, results_source="results"):
    """Evaluate COCO results; returns a :class:`CocoEvalResult`.

    Args:
        gt: ground truth as a JSON path, a dict or a COCO API object.
        results (list[dict] or str): COCO results (RLE or polygon masks), or the path of their JSON.
        iou_type (str): "bbox" or "segm".
        max_dets (tuple[int]): COCOeval's maxDets (3 entries; AP uses the third).
    """
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}")
    if len(max_dets) != 3 or list(max_dets) != sorted(set(max_dets)):
        raise ValueError(f"max_dets must be 3 increasing numbers, got {max_dets}")
    source = gt if isinstance(gt, (str, os.PathLike)) else "ground truth"
    dataset = _as_dataset(gt, source)
    if isinstance(results, (str, os.PathLike)):
        results_source, results = os.fspath(results), load_json(results)
    key = "segmentation" if iou_type == "segm" else "bbox"
    check_coco_results(results, dataset, results_source, (key,), f" for {iou_type} AP")
    name = resolve_engine(engine)
    if name != "hotcoco":
        # pycocotools' / ultrafast's loadRes write id/area/iscrowd into each detection: work on copies.
        # hotcoco's reads them without writing (tests/evaluation pin that), so only edited ones are copied.
        results = list(map(dict, results))
    if iou_type == "segm":
        results = _segm_results(results, dataset, drop_bbox_for_segm)

    coco_cls = importlib.import_module(_ENGINES[name][0]).COCO
    eval_cls = importlib.import_module(_ENGINES[name][1]).COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = _make_coco(coco_cls, name, dataset)
        if results:
            coco_dt = coco_gt.loadRes(results)
        else:  # pycocotools' loadRes fails on []; no detections still scores (AP 0 where GT exists)
            coco_dt = _make_coco(coco_cls, name, {**dataset, "annotations": []})
        ev = eval_cls(coco_gt, coco_dt, iou_type)
        params = ev.params
        params.maxDets = list(max_dets)
        if img_ids is not None:
            params.imgIds = list(img_ids)
        ev.params = params
        ev.evaluate()
        ev.accumulate()
    precision, recall = np.asarray(ev.eval["precision"]), np.asarray(ev.eval["recall"])
    return CocoEvalResult(_summary_stats(precision, recall, ev.params), precision, recall, ev.params)


def _segm_results(results, dataset, drop_bbox):
    """``results`` with polygons as RLE and (``drop_bbox``) without boxes; edited detections are copies."""
    if not drop_bbox and not any(isinstance(r["segmentation"], list) for r in results):
        return results
    sizes = {im["id"]: (im["height"], im["width"]) for im in dataset["images"]}
    out = []
    for r in results:
        if drop_bbox and "bbox" in r:
            r = {k: v for k, v in r.items() if k != "bbox"}
        if isinstance(r["segmentation"], list):
            r = {**r, "segmentation": _polygons_to_rle(r["segmentation"], *sizes[r["image_id"]])}
        out.append(r)
    return out


def _polygons_to_rle(polygons, h, w):
    """Polygon masks -> RLE, as pycocotools' annToRLE would (its loadRes cannot take polygons alone)."""
    rle = mask_util.merge(mask_util.frPyObjects(polygons, h, w)) if polygons else (
        mask_util.encode(np.zeros((h, w, 1), np.uint8, order="F"))[0])
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def _make_coco(coco_cls, name, dataset):
    """A COCO API object of the engine over an in-memory dataset (pycocotools only reads files)."""
    if name == "hotcoco":
        return coco_cls(dataset)
    if name == "ultrafast":
        return coco_cls(dataset, verbose=False)
    coco = coco_cls()
    coco.dataset = dataset
    coco.createIndex()
    return coco


def coco_metrics(result, iou_type, class_names=None):
    """Detectron2's result layout, in percent: AP..APl, AR1..ARl, and "AP-<class>" per category.

    Metrics COCO leaves undefined (no ground truth in the range) are NaN.
    """
    names = BOX_METRICS + RECALL_METRICS
    out = {m: float(s * 100) if s >= 0 else float("nan") for m, s in zip(names, result.stats)}
    cat_ids = list(result.params.catIds)
    class_names = class_names or [str(c) for c in cat_ids]
    if len(class_names) != len(cat_ids):
        raise ValueError(f"{len(class_names)} class names for {len(cat_ids)} categories")
    m = list(result.params.maxDets).index(result.params.maxDets[2])
    for k, name in enumerate(class_names):
        p = result.eval["precision"][:, :, k, 0, m]
        p = p[p > -1]
        out[f"AP-{name}"] = float(np.mean(p) * 100) if p.size else float("nan")
    return out


def evaluate_coco(gt, results, iou_type="segm", engine="auto", class_names=None, **kwargs):
    """COCO AP of ``results`` against ``gt`` as a flat dict (see :func:`coco_metrics`).

    Example::

        evaluate_coco("instances_val.json", "segm_results.json", "segm")["AP"]
    """
    return coco_metrics(run_cocoeval(gt, results, iou_type, engine, **kwargs), iou_type, class_names)


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
                    img_ids=img_ids, drop_bbox_for_segm=True,
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
