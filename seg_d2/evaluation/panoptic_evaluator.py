"""Panoptic Quality during training, straight from the model's outputs.

Detectron2's COCOPanopticEvaluator encodes every prediction as a PNG, gathers all of them on rank 0,
writes them to a temporary folder and runs panopticapi there (reporting no per-class PQ). Here each
image is scored in ``process()`` against its ground-truth PNG (seg_d2's exact PQ engine), and only the
per-category sums — a few numbers per category — cross processes.
"""
import json
import logging
import os

import numpy as np
from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager

from .panoptic_quality import PQStats, pq_image_stats, read_panoptic_png
from .validation import EvaluationInputError, check_panoptic_png, load_json

logger = logging.getLogger(__name__)


def _as_numpy(x):
    return x.cpu().numpy() if hasattr(x, "cpu") else np.asarray(x)


class PanopticQualityEvaluator(DatasetEvaluator):
    """PQ / SQ / RQ over all, thing and stuff categories, and per category.

    Drop-in for COCOPanopticEvaluator: same constructor, same inputs/outputs, same result keys
    ("PQ", "SQ", "RQ", "PQ_th", ..., "RQ_st"), plus "PQ-<class>", "SQ-<class>", "RQ-<class>".
    Reads the ground truth from the dataset's ``panoptic_json`` / ``panoptic_root`` metadata.
    """

    def __init__(self, dataset_name, output_dir=None, *, distributed=True):
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

    def reset(self):
        self._stats = PQStats.zeros([c["id"] for c in self._categories])
        self._num_images = 0

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
        for inp, out in zip(inputs, outputs):
            image_id = inp["image_id"]
            gt_ann = self._gt_by_image.get(image_id)
            if gt_ann is None:
                raise EvaluationInputError(f"{self._gt_json}: no ground truth for image id {image_id}")
            panoptic_img, segments_info = out["panoptic_seg"]
            pred_ids, segments = self._segments_to_dataset_ids(_as_numpy(panoptic_img), segments_info)
            gt_path = os.path.join(self._gt_root, gt_ann["file_name"])
            gt_ids = read_panoptic_png(gt_path)
            check_panoptic_png(gt_ids, self._images.get(image_id), gt_path)
            self._stats += pq_image_stats(
                gt_ids, gt_ann["segments_info"], pred_ids, segments, self._stats.category_ids, image_id
            )
            self._num_images += 1

    def evaluate(self):
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
