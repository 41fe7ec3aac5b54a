#!/usr/bin/env python
"""Run a trained seg_d2 model on images; write overlay PNGs and print the instances.

  predict.py --config-file cfg.yaml --input a.png b.png --output out/ MODEL.WEIGHTS model_final.pth
  predict.py ... --points "120,85,1;140,90,0"     # SAM-style point prompt: x,y,label (1 = on the object)

Without --points every predicted instance is drawn; with --points only the instances that answer the
prompt (seg_d2.prompting.select_instances), best first, plus the points (green positive, red negative).
"""
import argparse
import os
import sys

import seg_d2  # noqa: F401  (before detectron2)
from detectron2.data import MetadataCatalog
from detectron2.data.detection_utils import read_image
from detectron2.engine import DefaultPredictor
from detectron2.utils.visualizer import Visualizer

from seg_d2.engine.trainer import setup_cfg
from seg_d2.prompting import NoMatchingInstance, select_instances


def parse_points(text):
    """"x,y,label;x,y,label" -> ([[x, y], ...], [label, ...])."""
    coords, labels = [], []
    for item in filter(None, (s.strip() for s in text.split(";"))):
        parts = item.split(",")
        if len(parts) != 3 or parts[2].strip() not in ("0", "1"):
            raise argparse.ArgumentTypeError(f"--points: {item!r} is not 'x,y,label' with label 0 or 1")
        try:
            coords.append([float(parts[0]), float(parts[1])])
        except ValueError:
            raise argparse.ArgumentTypeError(f"--points: {item!r}: x and y must be numbers") from None
        labels.append(int(parts[2]))
    if not coords:
        raise argparse.ArgumentTypeError("--points: no point given")
    return coords, labels


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--input", nargs="+", required=True, help="image file(s)")
    p.add_argument("--output", required=True, help="directory for the overlay PNGs")
    p.add_argument("--points", type=parse_points, help='point prompt "x,y,label;..." (label 1 on, 0 off the object)')
    p.add_argument("--max-candidates", type=int, default=3, help="with --points: masks drawn at most")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, e.g. MODEL.WEIGHTS model.pth")
    return p.parse_args(argv)


def _metadata(cfg):
    return MetadataCatalog.get(cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else "__unused")


def _describe(instances, metadata):
    names = metadata.get("thing_classes", None)
    lines = []
    for i in range(len(instances)):
        cls = int(instances.pred_classes[i]) if instances.has("pred_classes") else -1
        name = names[cls] if names and 0 <= cls < len(names) else str(cls)
        box = [round(v, 1) for v in instances.pred_boxes.tensor[i].tolist()] if instances.has("pred_boxes") else []
        lines.append(f"  {name} score={float(instances.scores[i]):.3f} box={box}")
    return lines


def _draw_prompt(vis, candidates, points):
    for rank, (mask, score) in enumerate(candidates):
        # The best candidate stands out; the alternatives stay faint.
        vis.draw_binary_mask(mask, color="lime" if rank == 0 else "yellow", text=f"#{rank + 1} {score:.2f}",
                             alpha=0.5 if rank == 0 else 0.25)
    for (x, y), label in zip(*points):
        vis.draw_circle((x, y), color="green" if label else "red", radius=4)
    return vis.get_output()


def predict_image(predictor, cfg, path, args):
    """Predict one image, write its overlay PNG; return the printed lines."""
    image = read_image(path, format=cfg.INPUT.FORMAT)
    instances = predictor(image)["instances"].to("cpu")
    rgb = image[:, :, ::-1] if cfg.INPUT.FORMAT == "BGR" else image
    metadata = _metadata(cfg)
    vis = Visualizer(rgb, metadata)
    lines = [f"{path}: {len(instances)} instances"] + _describe(instances, metadata)
    if args.points is None:
        out = vis.draw_instance_predictions(instances)
    else:
        try:
            candidates = select_instances(instances, *args.points, max_candidates=args.max_candidates)
        except NoMatchingInstance as e:
            candidates = []
            lines.append(f"  prompt: {e}")
        lines += [f"  prompt candidate #{r + 1}: score={s:.3f} area={int(m.sum())}" for r, (m, s) in
                  enumerate(candidates)]
        out = _draw_prompt(vis, candidates, args.points)
    os.makedirs(args.output, exist_ok=True)
    out.save(os.path.join(args.output, os.path.splitext(os.path.basename(path))[0] + ".png"))
    return lines


def main(argv=None):
    args = parse_args(argv)
    cfg = setup_cfg(args.config_file, args.opts)
    predictor = DefaultPredictor(cfg)
    for path in args.input:
        if not os.path.isfile(path):
            sys.exit(f"--input {path}: no such file")
        print("\n".join(predict_image(predictor, cfg, path, args)))


if __name__ == "__main__":
    main()
