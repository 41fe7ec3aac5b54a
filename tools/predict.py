#!/usr/bin/env python
"""Run a seg_d2 model (instance, semantic or panoptic) on images of any size; write overlays and outputs.

  predict.py --config-file cfg.yaml --input a.png photos/ "scans/*.tif" --output out/ --opts MODEL.WEIGHTS m.pth
  predict.py ... --score-thresh 0.3           # instances below 0.3 are neither drawn nor written
  predict.py ... --tile 512 --tile-overlap 0.25   # sliding windows (large images are tiled automatically)
  predict.py ... --gt instances_val.json      # the JSONs use the image ids of that COCO file
  predict.py ... --points "120,85,1;140,90,0" # point prompt: x,y,label (1 = on the object)

Writes into --output: <name>.png (overlay) for every image, and by model type sem_seg/<name>.png (label
PNG), panoptic/<name>.png + panoptic.json (COCO panoptic), instances_results.json (COCO results, RLE);
``tools/evaluate.py`` scores them. Config overrides go after --opts (KEY VALUE ...), never among the
inputs. A bad input is reported and skipped; the summary at the end lists them and the exit code is 1.
"""
import argparse
import json
import os
import sys
import traceback

import numpy as np
import torch

import seg_d2  # noqa: F401  (before detectron2)
from detectron2.config import get_cfg
from detectron2.engine import DefaultPredictor
from detectron2.projects.deeplab import add_deeplab_config
from detectron2.projects.panoptic_deeplab import add_panoptic_deeplab_config
from detectron2.projects.point_rend import add_pointrend_config
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger

from seg_d2.data.image_io import ImageReadError, Normalization, read_image
from seg_d2.engine.trainer import prepare_cfg
from seg_d2.inference import SlidingWindowPredictor
from seg_d2.inference.outputs import PredictionWriter, prediction_metadata
from seg_d2.inference.overlay import draw_prediction, draw_prompt
from seg_d2.prompting import NoMatchingInstance, select_instances
from seg_d2.utils.inputs import expand_inputs, looks_like_config_key
from seg_d2.utils.memory import release_free_heap
from seg_d2.utils.progress import progress

_MAX_LISTED = 20  # instances printed per image


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


def _parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--input", nargs="+", required=True, help="image files, folders and glob patterns")
    p.add_argument("--output", required=True, help="folder for the overlays, label PNGs and JSON files")
    p.add_argument("--score-thresh", type=float, default=0.5,
                   help="drop instances scoring below this (ROI heads, RetinaNet, panoptic fusion); default 0.5")
    p.add_argument("--tile", type=int, help="tile side in pixels for sliding-window inference of every image; "
                   "0: never tile (default: SEG_D2.INFERENCE, which tiles images above TILE_ABOVE_PIXELS)")
    p.add_argument("--tile-overlap", type=float, help="fraction of the tile side neighbours share (default 0.25)")
    p.add_argument("--gt", help="COCO JSON of these images: written JSONs use its image ids (matched by file name)")
    p.add_argument("--overlay-max-side", type=int, default=1600, help="overlays larger than this are drawn "
                   "downscaled (0: full size)")
    p.add_argument("--max-drawn", type=int, default=300, help="instances drawn per overlay at most (best first)")
    p.add_argument("--points", type=parse_points, help='point prompt "x,y,label;..." (label 1 on, 0 off the object)')
    p.add_argument("--max-candidates", type=int, default=3, help="with --points: masks drawn at most")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], metavar="KEY VALUE",
                   help="config overrides, e.g. --opts MODEL.WEIGHTS model.pth (must come last)")
    return p


def parse_args(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    overrides = [item for item in args.input if looks_like_config_key(item)]
    if overrides:
        parser.error(f"--input {overrides[0]} looks like a config override, not an image: put overrides after "
                     f"--opts, e.g. --opts {overrides[0]} VALUE (nothing was predicted)")
    if len(args.opts) % 2:
        parser.error(f"--opts takes KEY VALUE pairs, got {len(args.opts)} items: {args.opts}")
    return args


def _config_overrides(args):
    """The command-line flags as config overrides, before --opts (which win)."""
    t = str(args.score_thresh)
    opts = ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", t, "MODEL.RETINANET.SCORE_THRESH_TEST", t,
            "MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH", t]
    if args.tile is not None:
        opts += ["SEG_D2.INFERENCE.TILE_ABOVE_PIXELS", "-1"] if args.tile == 0 else \
            ["SEG_D2.INFERENCE.TILE_SIZE", str(args.tile), "SEG_D2.INFERENCE.TILE_ABOVE_PIXELS", "0"]
    if args.tile_overlap is not None:
        opts += ["SEG_D2.INFERENCE.TILE_OVERLAP", str(args.tile_overlap)]
    return opts + list(args.opts)


def load_config(config_file, opts):
    """As seg_d2.engine.setup_cfg (defaults with seg_d2's keys, file, overrides, prepare_cfg, seed), plus the
    keys of the Detectron2 projects seg_d2's build ships (PointRend, DeepLab, Panoptic-DeepLab; see
    configs/projects/), which their own tools add, so that their configs predict here too."""
    cfg = get_cfg()  # seg_d2's keys are in Detectron2's defaults once seg_d2 is imported
    for add_project_config in (add_pointrend_config, add_deeplab_config, add_panoptic_deeplab_config):
        add_project_config(cfg)
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"--config-file {config_file}: no such file")
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(opts)
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        print(f"MODEL.DEVICE is {cfg.MODEL.DEVICE!r} but no CUDA device is available: predicting on the CPU",
              file=sys.stderr)
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    prepare_cfg(cfg)
    seed_all_rng(None if cfg.SEED < 0 else cfg.SEED)  # random-weight runs repeat
    return cfg


def _image_ids(gt_json):
    """{file name: image id} of a COCO (instances or panoptic) JSON's images."""
    with open(gt_json) as f:
        images = json.load(f)["images"]
    return {os.path.basename(image["file_name"]): image["id"] for image in images}


def _output_name(path, used):
    """The file's stem, made unique among this run's outputs (two folders may hold a.png)."""
    stem = base = os.path.splitext(os.path.basename(path))[0]
    k = 1
    while stem in used:
        stem, k = f"{base}_{k}", k + 1
    used.add(stem)
    return stem


def _describe(path, prediction, metadata):
    lines = [f"{path}: {prediction.height}x{prediction.width}" +
             (f" in {prediction.num_tiles} tiles" if prediction.num_tiles > 1 else "")]
    if prediction.panoptic_seg is not None:
        things = sum(s["isthing"] for s in prediction.segments_info)
        lines.append(f"  {len(prediction.segments_info)} panoptic segments ({things} things)")
    elif prediction.sem_seg is not None:
        counts = sorted(((c, int(n)) for c, n in enumerate(np.bincount(prediction.sem_seg.ravel())) if n),
                        key=lambda x: -x[1])
        names = metadata.stuff_classes
        shares = ", ".join(f"{names[c] if c < len(names) else c} {100 * n / prediction.sem_seg.size:.1f}%"
                           for c, n in counts[:8])
        lines.append(f"  semantic: {shares}")
    instances = prediction.instances
    if instances is not None:
        lines[0] += f": {len(instances)} instances"
        names = metadata.thing_classes
        for i in range(min(len(instances), _MAX_LISTED)):
            cls = int(instances.classes[i])
            name = names[cls] if 0 <= cls < len(names) else str(cls)
            box = [round(float(v), 1) for v in instances.boxes[i]]
            lines.append(f"  {name} score={instances.scores[i]:.3f} box={box}")
        if len(instances) > _MAX_LISTED:
            lines.append(f"  ... and {len(instances) - _MAX_LISTED} more")
    return lines


def _prompt_overlay(image, input_format, prediction, args, metadata, lines):
    """Overlay of the instances answering --points (seg_d2.prompting.select_instances)."""
    if prediction.instances is None:
        raise ValueError("--points needs an instance or panoptic model")
    positives = [p for p, label in zip(*args.points) if label]
    # Only instances holding a positive point can answer (alone or in a union): keep those, dense.
    holds = np.zeros(len(prediction.instances), dtype=bool)
    for x, y in positives:
        holds |= prediction.instances.contains(int(np.floor(x)), int(np.floor(y)))
    dense = prediction.instances.select(np.flatnonzero(holds)).to_instances(prediction.height, prediction.width)
    try:
        candidates = select_instances(dense, *args.points, max_candidates=args.max_candidates)
    except NoMatchingInstance as e:
        candidates = []
        lines.append(f"  prompt: {e}")
    lines += [f"  prompt candidate #{r + 1}: score={s:.3f} area={int(m.sum())}" for r, (m, s) in enumerate(candidates)]
    return draw_prompt(image, input_format, candidates, args.points, metadata, args.overlay_max_side)


def predict_image(predictor, cfg, path, name, args, writer, image_id):
    """Predict one image, write its overlay and outputs; return the lines to print."""
    image = read_image(path, format=cfg.INPUT.FORMAT, normalize=Normalization.from_config(cfg),
                       bands=tuple(cfg.INPUT.BANDS) or None)
    prediction = predictor(image)
    writer.add(prediction, name, os.path.basename(path), image_id)
    release_free_heap()  # the outputs' temporaries, before drawing
    lines = _describe(path, prediction, writer.metadata)
    if args.points is None:
        overlay = draw_prediction(image, cfg.INPUT.FORMAT, prediction, writer.metadata, args.overlay_max_side,
                                  args.max_drawn)
    else:
        overlay = _prompt_overlay(image, cfg.INPUT.FORMAT, prediction, args, writer.metadata, lines)
    overlay.save(os.path.join(args.output, name + ".png"))
    return lines


def _summary(done, failures, output):
    lines = [f"predicted {done} of {done + len(failures)} inputs into {output}"]
    if failures:
        lines[0] += f"; {len(failures)} failed:"
        lines += [f"  {item}: {reason}" for item, reason in failures]
    return lines


def main(argv=None):
    args = parse_args(argv)
    setup_logger(name="seg_d2")
    cfg = load_config(args.config_file, _config_overrides(args))
    paths, failures = expand_inputs(args.input)
    image_ids = _image_ids(args.gt) if args.gt else None
    done = 0
    if paths:
        predictor = SlidingWindowPredictor(cfg, predictor=DefaultPredictor(cfg))
        writer = PredictionWriter(args.output, prediction_metadata(cfg))
        used = set()
        for index, path in enumerate(progress(paths, desc="predicting", unit="image")):
            image_id = index + 1 if image_ids is None else image_ids.get(os.path.basename(path))
            if image_id is None:
                failures.append((path, f"not among the images of --gt {args.gt}"))
                continue
            try:
                lines = predict_image(predictor, cfg, path, _output_name(path, used), args, writer, image_id)
                print("\n".join(lines), flush=True)
                done += 1
            except Exception as e:  # one bad image must not stop the batch; the summary names it
                failures.append((path, f"{type(e).__name__}: {e}"))
                print(f"{path}: FAILED: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
                if not isinstance(e, ImageReadError):  # not the file's fault: show where it happened
                    traceback.print_exc()
        for written in writer.close():
            print(f"wrote {written}")
    print("\n".join(_summary(done, failures, args.output)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
