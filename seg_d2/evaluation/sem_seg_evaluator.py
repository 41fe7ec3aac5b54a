"""SemSegMetricsEvaluator: Detectron2's SemSegEvaluator with Dice and Boundary IoU
(:mod:`seg_d2.evaluation.semantic_metrics` defines the metrics and the ``predicted_only`` convention)."""
import json
import logging
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager

from .semantic_metrics import SemSegStats, check_predicted_only, read_label_png, sem_seg_image_stats, sem_seg_metrics
from .validation import EvaluationInputError

logger = logging.getLogger(__name__)


def _record_key(record):
    """What identifies a record's ground truth: its file and, for a tile of a large image (the ``tiles``
    datasets: every tile keeps its source's file_name), its window."""
    window = record.get("window")
    return record["file_name"], None if window is None else tuple(window)


def _ground_truth_files(dataset_name):
    """{record key: sem_seg_file_name}; two records of one key naming different files are refused (one would
    be scored against the other's labels)."""
    files = {}
    for record in DatasetCatalog.get(dataset_name):
        key, path = _record_key(record), record.get("sem_seg_file_name")
        if files.setdefault(key, path) != path:
            raise EvaluationInputError(f"dataset {dataset_name!r}: two records of {record['file_name']}"
                                       f"{'' if key[1] is None else f' window {list(key[1])}'} name different "
                                       f"label files ({files[key]}, {path})")
    return files


class SemSegMetricsEvaluator(DatasetEvaluator):
    """Drop-in for Detectron2's SemSegEvaluator that adds mean Dice and Boundary IoU.

    Same constructor; reads ``sem_seg_file_name`` from the dataset dicts, ``stuff_classes`` and
    ``ignore_label`` from the metadata. Gathers only the small per-class sums across processes.
    ``predicted_only``: how a class only predicted scores (see :mod:`.semantic_metrics`; default "zero").
    """

    def __init__(self, dataset_name, distributed=True, output_dir=None, *, num_classes=None,
                 ignore_label=None, dilation_ratio=0.02, predicted_only="zero"):
        meta = MetadataCatalog.get(dataset_name)
        self._distributed = distributed
        self._output_dir = output_dir
        self._class_names = list(meta.stuff_classes)
        self._num_classes = num_classes or len(self._class_names)
        self._ignore_label = ignore_label if ignore_label is not None else meta.get("ignore_label", 255)
        self._dilation_ratio = dilation_ratio
        check_predicted_only(predicted_only)  # a bad value fails here, not after the whole evaluation
        self._predicted_only = predicted_only
        self._gt_file = _ground_truth_files(dataset_name)

    def reset(self):
        self._stats = SemSegStats.zeros(self._num_classes)

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            pred = out["sem_seg"].argmax(dim=0).cpu().numpy()
            gt_path = self._gt_file.get(_record_key(inp))
            if gt_path is None:
                raise EvaluationInputError(f"{inp['file_name']}: no sem_seg_file_name in the dataset")
            with PathManager.open(gt_path, "rb") as f:
                gt = read_label_png(f)
            self._stats += sem_seg_image_stats(
                gt, pred, self._num_classes, self._ignore_label, self._dilation_ratio, source=gt_path
            )

    def evaluate(self):
        stats = self._stats
        if self._distributed:
            comm.synchronize()
            gathered = comm.gather(self._stats, dst=0)
            if not comm.is_main_process():
                return {}
            stats = SemSegStats.zeros(self._num_classes)
            for s in gathered:
                stats += s
        res = sem_seg_metrics(stats, self._class_names, self._predicted_only)
        if self._output_dir:
            PathManager.mkdirs(self._output_dir)
            with PathManager.open(os.path.join(self._output_dir, "sem_seg_metrics.json"), "w") as f:
                json.dump(res, f, indent=1)
        logger.info(res)
        return {"sem_seg": res}
