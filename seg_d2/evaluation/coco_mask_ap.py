"""COCO box / mask AP through the fastest exact engine installed.

pycocotools' COCOeval defines the numbers (and stays the test oracle). ultrafast-pycocotools and hotcoco
reproduce them bit for bit, many times faster; ``engine="auto"`` takes the fastest installed for the input,
as measured side by side in bench/bench_evaluation.py: for a results file whose detections all have boxes,
ultrafast (1.0-1.16x hotcoco's speed there), otherwise hotcoco (masks without boxes: 1.8-3.1x ultrafast's
speed; in memory: 2x), then pycocotools.

Every engine is given the same checked input (:mod:`seg_d2.evaluation.coco_inputs`), so every engine
gives the same numbers on every input, or the same error naming the file and the id.

Kept on purpose: pycocotools' ``loadRes`` takes a detection's area from its ``bbox`` when it has one,
also for mask AP, which moves APs/m/l. Offline evaluation keeps that quirk (a results file means what
pycocotools says it means); Detectron2's COCOEvaluator drops the boxes for mask AP, and so does
:class:`~seg_d2.evaluation.coco_evaluator.FastCOCOEvaluator` (``drop_bbox_for_segm``) so that it
reproduces Detectron2's numbers. Nothing here imports torch or Detectron2.
"""
import contextlib
import importlib
import io

import numpy as np

from .coco_inputs import ResultsFile, ground_truth, results_for_engine
from .validation import gc_paused

# engine name -> (module with COCO, module with COCOeval), fastest first (bench/bench_evaluation.py)
_ENGINES = {
    "hotcoco": ("hotcoco", "hotcoco"),
    "ultrafast": ("ultrafast_pycocotools", "ultrafast_pycocotools"),
    "pycocotools": ("pycocotools.coco", "pycocotools.cocoeval"),
}
ENGINES = ("auto",) + tuple(_ENGINES)
BOX_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
RECALL_METRICS = ("AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def resolve_engine(engine="auto", boxed_file=False):
    """The engine name to use; "auto" is the first importable of hotcoco, ultrafast, pycocotools, or of
    ultrafast, hotcoco, pycocotools for a results file whose detections all have boxes (``boxed_file``)."""
    if engine not in ENGINES:
        raise ValueError(f"unknown COCO engine {engine!r}; choose from {ENGINES}")
    candidates = [engine] if engine != "auto" else ["ultrafast", "hotcoco", "pycocotools"] if boxed_file else list(_ENGINES)
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


def _check_arguments(iou_type, max_dets):
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}")
    if len(max_dets) != 3 or list(max_dets) != sorted(set(max_dets)):
        raise ValueError(f"max_dets must be 3 increasing numbers, got {max_dets}")


def run_cocoeval(gt, results, iou_type, engine="auto", max_dets=(1, 10, 100), img_ids=None,
                 drop_bbox_for_segm=False, gt_source=None, results_source="results"):
    """Evaluate COCO results; returns a :class:`CocoEvalResult`.

    Args:
        gt: ground truth as a JSON path, a dict or a COCO API object.
        results (list[dict] or str): COCO results (RLE or polygon masks), or the path of their JSON.
        iou_type (str): "bbox" or "segm".
        max_dets (tuple[int]): COCOeval's maxDets (3 entries; AP uses the third).
        gt_source, results_source (str): how messages name in-memory ``gt`` / ``results`` (a path names
            itself).

    Raises:
        EvaluationInputError: malformed input, the same for every engine; the message names file and id.
    """
    _check_arguments(iou_type, max_dets)
    name = resolve_engine(engine)
    with contextlib.redirect_stdout(io.StringIO()), gc_paused():
        dataset = ground_truth(gt, iou_type, gt_source)
        ready = results_for_engine(results, dataset, results_source, iou_type, name, drop_bbox_for_segm)
        if isinstance(ready, ResultsFile):
            name, results = resolve_engine(engine, ready.boxed), ready.path
        else:
            results = ready
        coco_cls = importlib.import_module(_ENGINES[name][0]).COCO
        eval_cls = importlib.import_module(_ENGINES[name][1]).COCOeval
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
    accumulated = ev.eval  # hotcoco builds this dict anew on each access
    precision, recall = np.asarray(accumulated["precision"]), np.asarray(accumulated["recall"])
    return CocoEvalResult(_summary_stats(precision, recall, ev.params), precision, recall, ev.params)


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
