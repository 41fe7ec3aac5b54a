#!/usr/bin/env python
"""Score the classical watershed baseline on a registered dataset with seg_d2's evaluators.

  watershed_baseline.py --dataset seg_d2_shapes_val [--dark] [--min-distance 5] [--min-area 10] \
      [--opening-radius 1] [--class-id 0] [--config-file cfg.yaml] [KEY VALUE ...]
  watershed_baseline.py --dataset cells DATASETS.REGISTER '(("cells","image_mask_folders","img","masks"),)'

Images go through seg_d2's test loader and reader (16-bit and float images normalised as INPUT.NORMALIZE
says; INPUT.MIN_SIZE_TEST defaults to 0 here, i.e. no resize) and every instance gets ``--class-id``;
prints the mask AP (and box AP). Datasets declared in DATASETS.REGISTER are registered first.
"""
import argparse
import os

import seg_d2  # noqa: F401  (before detectron2)
from detectron2.config import get_cfg
from detectron2.data import build_detection_test_loader
from detectron2.evaluation import DatasetEvaluators, inference_on_dataset

from seg_d2.baselines import WatershedSegmenter
from seg_d2.data.dataset_mappers import build_mapper
from seg_d2.engine.trainer import prepare_cfg
from seg_d2.evaluation import FastCOCOEvaluator, build_evaluators


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, help="a registered Detectron2 dataset name")
    p.add_argument("--config-file", default="", help="optional: INPUT.* and SEG_D2.EVALUATION.* come from it")
    p.add_argument("--dark", action="store_true", help="objects are darker than the background")
    p.add_argument("--min-distance", type=int, default=5, help="min pixels between two object centres")
    p.add_argument("--min-area", type=int, default=10, help="drop instances with fewer pixels")
    p.add_argument("--opening-radius", type=int, default=1, help="binary opening disk radius (0: none)")
    p.add_argument("--class-id", type=int, default=0, help="contiguous class id given to every instance")
    p.add_argument("--output-dir", default="./output/watershed_baseline")
    p.add_argument("--coco-only", action="store_true", help="FastCOCOEvaluator only, whatever the dataset type")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    return p.parse_args(argv)


def setup_cfg(args):
    cfg = get_cfg()
    seg_d2.add_seg_d2_config(cfg)
    cfg.INPUT.MIN_SIZE_TEST = 0  # no resize: thresholds and distances are in original pixels
    cfg.DATALOADER.NUM_WORKERS = 0  # the segmenter is the bottleneck, not image reading
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    prepare_cfg(cfg)
    return cfg


def main(argv=None):
    args = parse_args(argv)
    cfg = setup_cfg(args)
    model = WatershedSegmenter(
        bright_foreground=not args.dark,
        min_distance=args.min_distance,
        min_area=args.min_area,
        opening_radius=args.opening_radius,
        class_id=args.class_id,
    )
    out_dir = os.path.join(args.output_dir, args.dataset)
    if args.coco_only:
        evaluators = [FastCOCOEvaluator(args.dataset, output_dir=out_dir, engine=cfg.SEG_D2.EVALUATION.COCO_ENGINE)]
    else:
        evaluators = build_evaluators(cfg, args.dataset, out_dir)
    loader = build_detection_test_loader(cfg, args.dataset, mapper=build_mapper(cfg, is_train=False))
    results = inference_on_dataset(model, loader, DatasetEvaluators(evaluators))
    for task, metrics in results.items():
        print(f"== {task} ==")
        for name, value in metrics.items():
            print(f"  {name}: {value:.2f}")
    if "segm" in results:
        print(f"watershed mask AP on {args.dataset}: {results['segm']['AP']:.2f}")
    return results


if __name__ == "__main__":
    main()
