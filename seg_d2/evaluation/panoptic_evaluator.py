"""Panoptic Quality during training, straight from the model's outputs.

Detectron2's COCOPanopticEvaluator encodes every prediction as a PNG, gathers all of them on rank 0,
writes them to a temporary folder and runs panopticapi there (reporting no per-class PQ). Here each
image is scored against its ground-truth PNG (seg_d2's exact PQ engine) by worker threads while the
model runs on the next batch, and only the per-category sums — a few numbers per category — cross
processes. Decoded ground truth is cached across evaluations, so later eval periods decode nothing.
"""
import collections
import json
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager

from .panoptic_png import read_panoptic_png
from .panoptic_quality import PQStats, compact_labels, dense_labels, pq_label_stats
from .validation import EvaluationInputError, check_panoptic_png, check_segments_info, load_json

logger = logging.getLogger(__name__)


def _as_numpy(x):
    return x.cpu().numpy() if hasattr(x, "cpu") else np.asarray(x)


class GroundTruthCache:
    """Ground-truth PNGs decoded to compact labels (:func:`dense_labels`), shared by all evaluators.

    Detectron2 builds a new evaluator every eval period, so the cache lives at module level. An entry is
    reused only while the file's mtime and size and the annotation's segment ids are unchanged. When
    ``max_bytes`` is reached new images are no longer stored (an LRU would evict every entry before its
    reuse when the dataset is scanned in order).
    """

    def __init__(self, max_bytes=2**30):
        self.max_bytes = max_bytes
        self._entries = {}
        self._nbytes = 0
        self._lock = threading.Lock()

    def clear(self):
        with self._lock:
            self._entries.clear()
            self._nbytes = 0

    def labels(self, path, segment_ids, image):
        """The labels of the PNG at ``path``, decoding (and checking its size against ``image``) on a miss."""
        stat = os.stat(path)
        signature = (stat.st_mtime_ns, stat.st_size, tuple(segment_ids))
        entry = self._entries.get(path)
        if entry is not None and entry[0] == signature:
            return entry[1]
        ids = read_panoptic_png(path)
        check_panoptic_png(ids, image, path)
        labels = compact_labels(dense_labels(ids, segment_ids, ids_fit=True), len(segment_ids))
        with self._lock:
            old = self._entries.pop(path, None)
            self._nbytes -= old[1].nbytes if old is not None else 0
            if self._nbytes + labels.nbytes <= self.max_bytes:
                self._entries[path] = (signature, labels)
                self._nbytes += labels.nbytes
        return labels


GT_CACHE = GroundTruthCache()


class PanopticQualityEvaluator(DatasetEvaluator):
    """PQ / SQ / RQ over all, thing and stuff categories, and per category.

    Drop-in for COCOPanopticEvaluator: same constructor, same inputs/outputs, same result keys
    ("PQ", "SQ", "RQ", "PQ_th", ..., "RQ_st"), plus "PQ-<class>", "SQ-<class>", "RQ-<class>".
    Reads the ground truth from the dataset's ``panoptic_json`` / ``panoptic_root`` metadata.

    Args:
        num_workers (int): threads that score images while the model runs; 0 scores in ``process()``.
    """

    def __init__(self, dataset_name, output_dir=None, *, distributed=True, num_workers=2):
        self._metadata = MetadataCatalog.get(dataset_name)
        self._to_dataset_id = {
            True: {v: k for k, v in self._metadata.thing_dataset_id_to_contiguous_id.items()},
            False: {v: k for k, v in self._metadata.stuff_dataset_id_to_contiguous_id.items()},
        }
        self._output_dir = output_dir
        self._distributed = distributed
        gt_json = PathManager.get_local_path(self._metadata.panoptic_json)
        self._gt_root = PathManager.get_local_path(self._metadata.panoptic_root)
        gt = load_json(gt_json)
        self._categories = gt["categories"]
        self._gt_by_image = {a["image_id"]: a for a in gt["annotations"]}
        self._images = {im["id"]: im for im in gt.get("images", [])}
        self._gt_json = gt_json
        self._num_workers = num_workers
        self._pool = None

    def reset(self):
        self._shutdown()
        self._stats = PQStats.zeros([c["id"] for c in self._categories])
        self._num_images = 0
        self._pending = collections.deque()
        if self._num_workers > 0:
            self._pool = ThreadPoolExecutor(self._num_workers, thread_name_prefix="pq")

    def _shutdown(self):
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def _collect(self, keep):
        """Add the results of finished work until at most ``keep`` images are pending."""
        while len(self._pending) > keep:
            self._stats += self._pending.popleft().result()

    def _segments_to_dataset_ids(self, panoptic_img, segments_info):
        """Model output -> (id map with 0 = VOID, segments with dataset category ids), as Detectron2 does."""
        if segments_info is None:
            # ids are category * label_divisor + instance, -1 VOID: shift so that 0 is VOID
            divisor = self._metadata.label_divisor
            things = set(self._metadata.thing_dataset_id_to_contiguous_id.values())
            labels = [int(v) for v in np.unique(panoptic_img) if v != -1]
            segments_info = [
                {"id": v + 1, "category_id": v // divisor, "isthing": v // divisor in things} for v in labels
            ]
            panoptic_img = panoptic_img + 1
        segments = []
        for s in segments_info:
            s = dict(s)
            isthing = s.pop("isthing", None)
            if isthing is not None:  # contiguous training id -> dataset id
                s["category_id"] = self._to_dataset_id[bool(isthing)][s["category_id"]]
            segments.append(s)
        return panoptic_img, segments

    def process(self, inputs, outputs):
        batch = []
        for inp, out in zip(inputs, outputs):
            gt_ann = self._gt_by_image.get(inp["image_id"])
            if gt_ann is None:
                raise EvaluationInputError(f"{self._gt_json}: no ground truth for image id {inp['image_id']}")
            panoptic_img, segments_info = out["panoptic_seg"]
            batch.append((gt_ann, _as_numpy(panoptic_img), segments_info))
        self._num_images += len(batch)
        if self._pool is None:
            self._stats += self._score_batch(batch)
            return
        # a task per batch (not per image) keeps the thread hand-over cost small next to the work
        self._pending.append(self._pool.submit(self._score_batch, batch))
        # bounded, so that predictions do not pile up in memory when scoring is slower than the model
        self._collect(keep=4 * self._num_workers)

    def _score_batch(self, batch):
        stats = PQStats.zeros(self._stats.category_ids)
        for item in batch:
            stats += self._score(*item)
        return stats

    def _score(self, gt_ann, panoptic_img, segments_info):
        image_id = gt_ann["image_id"]
        pred_ids, segments = self._segments_to_dataset_ids(panoptic_img, segments_info)
        check_segments_info(gt_ann["segments_info"], self._stats.category_ids, image_id, "ground truth")
        gt_labels = GT_CACHE.labels(
            os.path.join(self._gt_root, gt_ann["file_name"]),
            [s["id"] for s in gt_ann["segments_info"]],
            self._images.get(image_id),
        )
        category_ids = self._stats.category_ids
        return pq_label_stats(gt_labels, gt_ann["segments_info"], pred_ids, segments, category_ids, image_id)

    def evaluate(self):
        try:
            self._collect(keep=0)
        finally:
            self._shutdown()
        stats, num_images = self._stats, self._num_images
        if self._distributed:
            comm.synchronize()
            gathered = comm.gather((self._stats, self._num_images), dst=0)
            if not comm.is_main_process():
                return {}
            stats = PQStats.zeros(self._stats.category_ids)
            for s, _ in gathered:
                stats += s
            num_images = sum(n for _, n in gathered)
        if num_images == 0:
            logger.warning("[PanopticQualityEvaluator] Did not receive valid predictions.")
            return {}
        summary = stats.summarize(self._categories)
        results = panoptic_results_table(summary, self._categories)
        if self._output_dir:
            PathManager.mkdirs(self._output_dir)
            with PathManager.open(os.path.join(self._output_dir, "panoptic_quality.json"), "w") as f:
                json.dump(results, f, indent=1)
        logger.info("Panoptic Evaluation Results:\n" + format_panoptic_table(summary))
        return {"panoptic_seg": results}


def panoptic_results_table(summary, categories):
    """Detectron2's flat PQ keys in percent, plus "PQ-<class>", "SQ-<class>", "RQ-<class>"."""
    results = {}
    for name, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
        for k in ("pq", "sq", "rq"):
            results[k.upper() + suffix] = 100 * summary[name][k]
    names = {c["id"]: c.get("name", str(c["id"])) for c in categories}
    for cat_id, r in summary["per_class"].items():
        for k in ("pq", "sq", "rq"):
            results[f"{k.upper()}-{names[cat_id]}"] = 100 * r[k]
    return results


def format_panoptic_table(summary):
    """The PQ table panopticapi prints (All / Things / Stuff)."""
    lines = ["{:10s}| {:>5s}  {:>5s}  {:>5s} {:>5s}".format("", "PQ", "SQ", "RQ", "N"), "-" * 38]
    for name in ("All", "Things", "Stuff"):
        r = summary[name]
        lines.append(
            "{:10s}| {:5.1f}  {:5.1f}  {:5.1f} {:5d}".format(name, 100 * r["pq"], 100 * r["sq"], 100 * r["rq"], r["n"])
        )
    return "\n".join(lines)
