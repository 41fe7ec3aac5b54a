#!/usr/bin/env python
"""Assisted labelling: images -> COCO instances JSON with Segment Anything masks, ready for DATASETS.REGISTER.

  annotate.py --config-file cfg.yaml --input images/ --output ann.json --prompts clicks.csv \\
      --opts MODEL.SAM.CHECKPOINT sam_vit_h_4b8939.pth                 # points / boxes from a file
  annotate.py --config-file detector.yaml --input images/ --output ann.json --detector \\
      --opts MODEL.WEIGHTS model_final.pth MODEL.SAM.CHECKPOINT sam_vit_h_4b8939.pth   # a detector's boxes -> SAM
  annotate.py --config-file cfg.yaml --input images/ --output ann.json --auto \\
      --opts MODEL.SAM.CHECKPOINT sam_vit_h_4b8939.pth                 # SAM's automatic mask generator

Prompt files (.json / .csv): seg_d2/prompting/annotation.py. Without MODEL.SAM.CHECKPOINT, --prompts selects
among the config's own model's instances instead. Images are read as tools/predict.py reads them
(INPUT.FORMAT, INPUT.NORMALIZE, INPUT.BANDS). file_name in the JSON is relative to --image-root (default: the
inputs' common folder), so ("name", "coco", ann.json, image_root) registers it. --overlays draws every image's
masks for review. Exit 1 when some image or prompt failed (all listed), 2 on a bad command or prompt file.
"""
import argparse
import os
import sys

import seg_d2  # noqa: F401  (before detectron2)
from detectron2.data.catalog import Metadata
from detectron2.engine import DefaultPredictor
from detectron2.structures import BoxMode
from detectron2.utils.logger import setup_logger
from detectron2.utils.visualizer import Visualizer

from seg_d2.data.image_io import Normalization, read_image
from seg_d2.engine.trainer import setup_cfg
from seg_d2.inference.outputs import prediction_metadata
from seg_d2.prompting import NoMatchingInstance, SamPrompter, build_prompter
from seg_d2.prompting.annotation import CocoBuilder, match_prompts, read_prompts
from seg_d2.prompting.sam import to_rgb_uint8
from seg_d2.utils.inputs import add_overrides_argument, expand_inputs, parse_tool_args
from seg_d2.utils.progress import progress


def _parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--input", nargs="+", required=True, help="image files, folders and glob patterns")
    p.add_argument("--output", required=True, help="the COCO instances JSON to write")
    p.add_argument("--image-root", help="file_name is relative to this folder (default: the inputs' common folder)")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--prompts", help="points / boxes per object, .json or .csv")
    mode.add_argument("--detector", action="store_true", help="the config's detector's boxes prompt SAM")
    mode.add_argument("--auto", action="store_true", help="SAM's automatic mask generator (pre-labelling)")
    p.add_argument("--category", default="object", help="category of prompts without one, and of --auto masks")
    p.add_argument("--polygons", action="store_true", help="exact polygons instead of RLE")
    p.add_argument("--score-thresh", type=float, default=0.5, help="--detector: keep detections scoring this much")
    p.add_argument("--points-per-side", type=int, default=32, help="--auto: SAM's point grid (32: SAM's default)")
    p.add_argument("--pred-iou-thresh", type=float, default=0.88, help="--auto: keep masks SAM scores this much")
    p.add_argument("--stability-score-thresh", type=float, default=0.95, help="--auto: and this stable")
    p.add_argument("--min-area", type=int, default=0, help="--auto: remove holes and islands below this area")
    p.add_argument("--overlays", help="folder for one review picture per image (Detectron2's Visualizer)")
    add_overrides_argument(p, "MODEL.SAM.CHECKPOINT sam_vit_h_4b8939.pth")
    return p


def parse_args(argv=None):
    return parse_tool_args(_parser(), argv)


def _config(args):
    cfg = setup_cfg(args.config_file, ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", str(args.score_thresh),
                                       "MODEL.RETINANET.SCORE_THRESH_TEST", str(args.score_thresh), *args.opts])
    if args.detector and cfg.MODEL.META_ARCHITECTURE != "SamDetector":  # any detector config: its boxes -> SAM
        cfg.defrost()
        cfg.MODEL.SAM.DETECTOR, cfg.MODEL.META_ARCHITECTURE = cfg.MODEL.META_ARCHITECTURE, "SamDetector"
        cfg.freeze()
    if (args.detector or args.auto) and not cfg.MODEL.SAM.CHECKPOINT:
        raise ValueError(f"--{'detector' if args.detector else 'auto'} needs SAM: set MODEL.SAM.CHECKPOINT (and "
                         "MODEL.SAM.TYPE) after --opts to a local SAM checkpoint, e.g. sam_vit_h_4b8939.pth (docs/sam.md)")
    return cfg


class Annotator:
    """Masks for one image by the chosen mode, added to the COCO file; failures collected, never dropped."""

    def __init__(self, cfg, args):
        self.args = args
        self.failures = []
        self.empty = []
        if args.detector:
            self.predictor = DefaultPredictor(cfg)
            self.class_names = prediction_metadata(cfg).thing_classes
        elif args.auto:
            self.sam = SamPrompter(cfg)
        else:
            self.prompter = build_prompter(cfg)

    def annotate(self, image, image_id, coco, prompts):
        if self.args.detector:
            instances = self.predictor(image)["instances"].to("cpu")
            for mask, score, cls, iou in zip(instances.pred_masks.numpy(), instances.scores.tolist(),
                                             instances.pred_classes.tolist(), instances.sam_ious.tolist()):
                self._add(coco, image_id, self.class_names[cls], mask, score, f"image {image_id} detection", sam_iou=iou)
        elif self.args.auto:
            records = self.sam.automatic_masks(image, points_per_side=self.args.points_per_side,
                                               pred_iou_thresh=self.args.pred_iou_thresh,
                                               stability_score_thresh=self.args.stability_score_thresh,
                                               min_mask_region_area=self.args.min_area)
            for k, r in enumerate(records):
                self._add(coco, image_id, self.args.category, r["segmentation"], r["predicted_iou"],
                          f"image {image_id} automatic mask #{k}", stability_score=r["stability_score"])
        else:
            for prompt in prompts:
                try:
                    mask, score = self.prompter.predict(image, **prompt.as_prompt()).best()
                except (NoMatchingInstance, ValueError) as e:
                    self.failures.append((prompt.where, f"{type(e).__name__}: {e}"))
                    continue
                self._add(coco, image_id, prompt.category, mask, score, prompt.where)

    def _add(self, coco, image_id, category, mask, score, where, **fields):
        if not coco.add(image_id, category, mask, score, **fields):
            self.empty.append(where)


def _overlay(image, cfg, coco, image_id, path):
    """The image's annotations drawn as Detectron2 draws a registered dataset's (Visualizer.draw_dataset_dict)."""
    names = [c["name"] for c in coco.categories]
    record = {"annotations": [dict(a, bbox_mode=BoxMode.XYWH_ABS, category_id=a["category_id"] - 1)
                              for a in coco.annotations if a["image_id"] == image_id]}
    vis = Visualizer(to_rgb_uint8(image, cfg.INPUT.FORMAT), Metadata(name="annotate", thing_classes=names))
    vis.draw_dataset_dict(record).save(path)


def _image_root(args, paths):
    if args.image_root:
        return os.path.abspath(args.image_root)
    return os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])


def run(args):
    """Annotate every input; returns (COCO builder, failures, empty masks)."""
    cfg = _config(args)
    paths, failures = expand_inputs(args.input)
    root = _image_root(args, paths) if paths else os.getcwd()
    listed = read_prompts(args.prompts, args.category) if args.prompts else []
    prompts = match_prompts(listed, paths, root)
    # category ids in the order the prompt file names them
    coco = CocoBuilder([args.category] if args.auto else [p.category for p in listed], polygons=args.polygons)
    annotator = Annotator(cfg, args)
    if args.overlays:
        os.makedirs(args.overlays, exist_ok=True)
    for path in progress(paths, desc="annotating", unit="image"):
        if args.prompts and not prompts[path]:
            continue  # an input without prompts is not part of this labelling
        try:
            image = read_image(path, format=cfg.INPUT.FORMAT, normalize=Normalization.from_config(cfg),
                               bands=tuple(cfg.INPUT.BANDS) or None)
        except OSError as e:
            failures.append((path, str(e)))
            continue
        image_id = coco.add_image(os.path.relpath(os.path.abspath(path), root), *image.shape[:2])
        annotator.annotate(image, image_id, coco, prompts.get(path, ()))
        if args.overlays:
            name = os.path.splitext(os.path.relpath(os.path.abspath(path), root))[0].replace(os.sep, "__")
            _overlay(image, cfg, coco, image_id, os.path.join(args.overlays, name + ".png"))
    return coco, failures + annotator.failures, annotator.empty


def main(argv=None):
    args = parse_args(argv)
    setup_logger(name="seg_d2")
    try:
        coco, failures, empty = run(args)
    except (ValueError, ImportError, OSError) as e:  # a bad command, prompt file, checkpoint or missing package
        print(f"annotate.py: {e}", file=sys.stderr)
        return 2
    coco.write(args.output)
    print(f"wrote {len(coco.annotations)} annotations of {len(coco.images)} images ({len(coco.categories)} "
          f"categories) to {args.output}")
    if empty:
        print(f"{len(empty)} empty masks not written: " + "; ".join(empty[:20]) + (" ..." if len(empty) > 20 else ""))
    for where, reason in failures:
        print(f"FAILED {where}: {reason}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
