#!/usr/bin/env python
"""Evaluate predictions on disk against a ground truth: COCO AP, Panoptic Quality, semantic metrics.

  evaluate.py instances --gt instances_val.json --results segm.json [--iou-type segm bbox]
  evaluate.py panoptic  --gt panoptic_val.json --pred panoptic_pred.json [--gt-folder D --pred-folder D]
  evaluate.py semantic  --gt-dir labels/ --pred-dir preds/ --num-classes 19 [--ignore-label 255]

Prints a table; ``--output FILE`` also writes the metrics as JSON. Exits 2 with a message naming the
file and id on bad input.
"""
import argparse
import json
import math
import os
import sys
from collections import Counter

from seg_d2.evaluation import EvaluationInputError, evaluate_sem_seg_files, pq_compute, run_cocoeval
from seg_d2.evaluation.coco_mask_ap import ENGINES, coco_metrics
from seg_d2.evaluation.panoptic_quality import PQ_ENGINES
from seg_d2.evaluation.semantic_metrics import PREDICTED_ONLY
from seg_d2.evaluation.validation import load_json


def _instances(args):
    gt = load_json(args.gt)  # read once, for every IoU type and the class names
    results = {iou_type: run_cocoeval(gt, args.results, iou_type, args.engine, gt_source=args.gt)
               for iou_type in args.iou_type}
    names = _class_names(gt["categories"])  # a checked ground truth by now
    return {iou_type: coco_metrics(result, iou_type, names) for iou_type, result in results.items()}


def _class_names(categories):
    """Names in category-id order, "name (id N)" where a name repeats, so that no AP-<name> hides another."""
    repeats = Counter(c["name"] for c in categories)
    return [c["name"] if repeats[c["name"]] == 1 else f"{c['name']} (id {c['id']})"
            for c in sorted(categories, key=lambda c: c["id"])]


def _panoptic(args):
    res = pq_compute(args.gt, args.pred, args.gt_folder, args.pred_folder, num_workers=args.workers,
                     engine=args.engine)
    names = {c["id"]: c.get("name", str(c["id"])) for c in load_json(args.gt)["categories"]}
    table = {f"{k.upper()}{s}": 100 * res[n][k] for n, s in (("All", ""), ("Things", "_th"), ("Stuff", "_st"))
             for k in ("pq", "sq", "rq")}
    for cat, r in res["per_class"].items():
        table.update({f"{k.upper()}-{names[cat]}": 100 * r[k] for k in ("pq", "sq", "rq")})
    return {"panoptic_seg": table}


def _semantic(args):
    preds = sorted(f for f in os.listdir(args.pred_dir) if f.endswith(".png"))
    if not preds:
        raise EvaluationInputError(f"{args.pred_dir}: no PNG predictions")
    pairs = []
    for f in preds:
        gt = os.path.join(args.gt_dir, f)
        if not os.path.exists(gt):
            raise EvaluationInputError(f"{os.path.join(args.pred_dir, f)}: no ground truth {gt}")
        pairs.append((gt, os.path.join(args.pred_dir, f)))
    names = args.class_names.split(",") if args.class_names else None
    return {"sem_seg": evaluate_sem_seg_files(pairs, args.num_classes, names, args.ignore_label, args.dilation_ratio,
                                              args.predicted_only)}


def _print_table(results):
    for task, metrics in results.items():
        print(f"== {task} ==")
        width = max(len(k) for k in metrics)
        for k, v in metrics.items():
            print(f"  {k:<{width}}  {'nan' if math.isnan(v) else f'{v:8.3f}'}")


def _parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", help="also write the metrics to this JSON file")
    sub = p.add_subparsers(dest="task", required=True)
    ins = sub.add_parser("instances", help="COCO box/mask AP from a COCO results JSON")
    ins.add_argument("--gt", required=True)
    ins.add_argument("--results", required=True)
    ins.add_argument("--iou-type", nargs="+", default=["segm"], choices=["segm", "bbox"])
    ins.add_argument("--engine", default="auto", choices=ENGINES)
    ins.set_defaults(run=_instances)
    pan = sub.add_parser("panoptic", help="PQ from COCO panoptic JSON + PNGs")
    pan.add_argument("--gt", required=True)
    pan.add_argument("--pred", required=True)
    pan.add_argument("--gt-folder")
    pan.add_argument("--pred-folder")
    pan.add_argument("--workers", type=int, default=None, help="threads (default: all cores)")
    pan.add_argument("--engine", default="auto", choices=PQ_ENGINES,
                     help="auto: seg_d2's input checks, then hotcoco; seg_d2: seg_d2's own engine")
    pan.set_defaults(run=_panoptic)
    sem = sub.add_parser("semantic", help="mIoU, Dice, accuracy, Boundary IoU from label PNGs (same names)")
    sem.add_argument("--gt-dir", required=True)
    sem.add_argument("--pred-dir", required=True)
    sem.add_argument("--num-classes", type=int, required=True)
    sem.add_argument("--ignore-label", type=int, default=255)
    sem.add_argument("--class-names", help="comma-separated")
    sem.add_argument("--dilation-ratio", type=float, default=0.02)
    sem.add_argument("--predicted-only", choices=sorted(PREDICTED_ONLY), default="zero",
                     help="a class only predicted: zero = IoU 0, in the means (Detectron2's mIoU); "
                          "nan = left out of the means (echoed as predicted_only_IoU)")
    sem.set_defaults(run=_semantic)
    return p


def main(argv=None):
    args = _parser().parse_args(argv)
    try:
        results = args.run(args)
    except EvaluationInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    _print_table(results)
    if args.output:
        with open(args.output, "w") as f:
            json.dump(results, f, indent=1, allow_nan=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
