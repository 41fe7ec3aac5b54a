#!/usr/bin/env python
"""Run a seg_d2 model (instance, semantic or panoptic) on images of any size; write overlays and outputs.

  predict.py --config-file cfg.yaml --input a.png photos/ "scans/*.tif" --output out/ --opts MODEL.WEIGHTS m.pth
  predict.py ... --score-thresh 0.3           # instances below 0.3 are neither drawn nor written
  predict.py ... --tile 512 --tile-overlap 0.25   # sliding windows (large images are tiled automatically)
  predict.py ... --gt instances_val.json      # the JSONs use the image ids of that COCO file
  predict.py ... --points "120,85,1;140,90,0" # one point prompt: x,y,label (1 = on the object, 0 = off it)
  predict.py ... --boxes "10,20,80,90;5,5,40,40"   # box prompts x0,y0,x1,y1, each answered alone

Writes into --output: <name>.png (overlay) for every image, and by model type sem_seg/<name>.png (label
PNG), panoptic/<name>.png + panoptic.json (COCO panoptic), instances_results.json (COCO results, RLE);
``tools/evaluate.py`` scores them. With prompts (seg_d2.prompting: SAM when MODEL.SAM.CHECKPOINT is set,
else the model's own instances), the overlay shows the answers and prompt_masks.json holds them (RLE).
Config overrides go after --opts (KEY VALUE ...), never among the inputs. A bad input is reported and
skipped; the summary at the end lists them and the exit code is 1.
"""
import argparse
import json
import os
import sys
import traceback

import numpy as np
import torch

import seg_d2  # noqa: F401  (before detectron2)
from detectron2.engine import DefaultPredictor
from detectron2.utils.logger import setup_logger

from seg_d2.data.converters import mask_to_rle
from seg_d2.data.image_io import ImageReadError, Normalization, read_image
from seg_d2.engine.trainer import setup_cfg
from seg_d2.inference import SlidingWindowPredictor
from seg_d2.inference.outputs import PredictionWriter, prediction_metadata
from seg_d2.inference.overlay import draw_prediction, draw_prompt
from seg_d2.prompting import CachedPredictor, NoMatchingInstance, build_prompter
from seg_d2.prompting.annotation import parse_boxes, parse_points
from seg_d2.utils.inputs import add_overrides_argument, expand_inputs, parse_tool_args
from seg_d2.utils.memory import release_free_heap
from seg_d2.utils.progress import progress

_MAX_LISTED = 20  # instances printed per image


def _argument(parse):
    """An argparse type from ``parse`` (which raises ValueError): its message, after argparse's
    "argument --flag:" (argparse words a plain ValueError as "invalid value", dropping it)."""

    def convert(text):
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return convert


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
    p.add_argument("--points", type=_argument(parse_points),
                   help='one point prompt "x,y,label;..." (label 1 on, 0 off the object)')
    p.add_argument("--boxes", type=_argument(parse_boxes),
                   help='box prompts "x0,y0,x1,y1;...", each answered on its own')
    p.add_argument("--max-candidates", type=int, default=3,
                   help="candidate masks per prompt drawn and written at most (SAM gives 3)")
    add_overrides_argument(p, "MODEL.WEIGHTS model.pth")
    return p


def parse_args(argv=None):
    return parse_tool_args(_parser(), argv)


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
    """seg_d2.engine.setup_cfg's config; one asking for CUDA on a machine without it predicts on the CPU."""
    cfg = setup_cfg(config_file, opts)
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        print(f"MODEL.DEVICE is {cfg.MODEL.DEVICE!r} but no CUDA device is available: predicting on the CPU",
              file=sys.stderr)
        cfg.defrost()
        cfg.MODEL.DEVICE = "cpu"
        cfg.freeze()
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


def command_line_prompts(args):
    """SAM-style prompts from the command line: the --points together as one, then each --boxes box alone."""
    prompts = []
    if args.points is not None:
        prompts.append({"point_coords": args.points[0], "point_labels": args.points[1]})
    return prompts + [{"box": box} for box in args.boxes or ()]


class PromptAnswers:
    """The command line's prompts answered on each image by ``prompter`` (seg_d2.prompting), kept for
    prompt_masks.json: one record per candidate mask (image, prompt number, rank, score, RLE)."""

    def __init__(self, prompter, prompts, max_candidates):
        self.prompter, self.prompts, self.max_candidates = prompter, prompts, max_candidates
        self.records = []

    def answer(self, image, file_name, image_id, lines):
        """Per prompt its (mask, score) candidates, best first; a line for each is added to ``lines``."""
        answers = []
        for number, prompt in enumerate(self.prompts, 1):
            try:
                candidates = self.prompter.predict(image, multimask_output=True, **prompt).ranked()
            except NoMatchingInstance as e:
                candidates = []
                lines.append(f"  prompt {number}: {e}")
            answers.append(candidates[: self.max_candidates])
            for rank, (mask, score) in enumerate(answers[-1], 1):
                lines.append(f"  prompt {number} candidate #{rank}: score={score:.3f} area={int(mask.sum())}")
                self.records.append({"image_id": image_id, "file_name": file_name, "prompt": number, "rank": rank,
                                     "score": score, "segmentation": mask_to_rle(mask)})
        return answers

    def write(self, output):
        path = os.path.join(output, "prompt_masks.json")
        with open(path, "w") as f:
            json.dump(self.records, f)
        return path


def predict_image(predictor, cfg, path, name, args, writer, image_id, prompts=None):
    """Predict one image, write its overlay and outputs (and answer ``prompts``, a PromptAnswers); return the
    lines to print."""
    image = read_image(path, format=cfg.INPUT.FORMAT, normalize=Normalization.from_config(cfg),
                       bands=tuple(cfg.INPUT.BANDS) or None)
    prediction = predictor(image)
    writer.add(prediction, name, os.path.basename(path), image_id)
    release_free_heap()  # the outputs' temporaries, before drawing
    lines = _describe(path, prediction, writer.metadata)
    if prompts is None:
        overlay = draw_prediction(image, cfg.INPUT.FORMAT, prediction, writer.metadata, args.overlay_max_side,
                                  args.max_drawn)
    else:
        answers = prompts.answer(image, os.path.basename(path), image_id, lines)
        overlay = draw_prompt(image, cfg.INPUT.FORMAT, answers, prompts.prompts, writer.metadata,
                              args.overlay_max_side)
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
        # cached: a prompt answered by the model's own instances reuses the image's prediction
        predictor = CachedPredictor(SlidingWindowPredictor(cfg, predictor=DefaultPredictor(cfg)))
        prompts = command_line_prompts(args)
        prompts = PromptAnswers(build_prompter(cfg, predictor), prompts, args.max_candidates) if prompts else None
        writer = PredictionWriter(args.output, prediction_metadata(cfg))
        used = set()
        for index, path in enumerate(progress(paths, desc="predicting", unit="image")):
            image_id = index + 1 if image_ids is None else image_ids.get(os.path.basename(path))
            if image_id is None:
                failures.append((path, f"not among the images of --gt {args.gt}"))
                continue
            try:
                lines = predict_image(predictor, cfg, path, _output_name(path, used), args, writer, image_id, prompts)
                print("\n".join(lines), flush=True)
                done += 1
            except Exception as e:  # one bad image must not stop the batch; the summary names it
                failures.append((path, f"{type(e).__name__}: {e}"))
                print(f"{path}: FAILED: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
                if not isinstance(e, ImageReadError):  # not the file's fault: show where it happened
                    traceback.print_exc()
        for written in writer.close() + ([prompts.write(args.output)] if prompts else []):
            print(f"wrote {written}")
    print("\n".join(_summary(done, failures, args.output)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
