#!/usr/bin/env python
"""Convert labels between the formats users bring and the COCO forms seg_d2 trains on.

  convert.py rasters-to-coco   --images IMG/ --masks MASKS/ --out ann.json [--polygons] [--category nucleus]
  convert.py coco-to-semantic  --coco ann.json --out LABELS/ [--drop _background_] [--background background]
  convert.py coco-to-panoptic  --coco ann.json [--stuff stuff.json] [--background-stuff background] \\
                               [--drop _background_] --out pan.json --png-folder PAN/
  convert.py labelme-to-coco   --input LABELME/ --out ann.json [--image-root IMG/] [--classes a b ...]
  convert.py yolo-to-coco      --labels LABELS/ --images IMG/ --names names.txt --out ann.json
  convert.py coco-to-yolo      --coco ann.json --out LABELS/
  convert.py flat-polygons     --coco ann.json --out fixed.json

Every output registers with DATASETS.REGISTER (docs/own_data.md). What each conversion keeps and loses is
in seg_d2/data/converters.py's docstring; whatever is lost (filled holes, overlaps, shapes without area) is
counted on stderr. Exit status 2 and a message naming the file on bad input.
"""
import argparse
import glob
import json
import logging
import os
import sys

import seg_d2  # noqa: F401  (before detectron2)
from seg_d2.data import converters
from seg_d2.utils.progress import progress


def _write_json(data, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f)
    return path


def _read_coco(path):
    return converters.read_json(path, ("images", "annotations", "categories"))


def _summary(coco, path):
    return f"{path}: {len(coco['images'])} images, {len(coco['annotations'])} annotations, " \
           f"{len(coco['categories'])} categories"


def rasters_to_coco(args):
    coco = converters.instance_rasters_to_coco(
        args.images, args.masks, args.category, args.polygons,
        progress=lambda pairs: progress(pairs, "instance rasters", unit="image"))
    return _summary(coco, _write_json(coco, args.out))


def coco_to_semantic(args):
    classes = converters.coco_to_semantic(_read_coco(args.coco), args.out, args.background, args.drop)
    _write_json(classes, os.path.join(args.out, "classes.json"))
    return f"{args.out}: label PNGs of {len(classes)} classes, names in {os.path.join(args.out, 'classes.json')}"


def coco_to_panoptic(args):
    stuff = _read_coco(args.stuff) if args.stuff else None
    panoptic = converters.coco_to_panoptic(_read_coco(args.coco), args.png_folder, stuff, args.background_stuff,
                                           args.drop)
    _write_json(panoptic, args.out)
    return f"{args.out}: {len(panoptic['annotations'])} panoptic images, PNGs in {args.png_folder}"


def labelme_to_coco(args):
    files = sorted(glob.glob(os.path.join(args.input, "**", "*.json"), recursive=True)) if os.path.isdir(
        args.input) else [args.input]
    if not files:
        raise ValueError(f"{args.input}: no labelme .json files")
    image_root = args.image_root or (args.input if os.path.isdir(args.input) else os.path.dirname(args.input))
    coco = converters.labelme_to_coco(files, image_root, args.classes)
    return _summary(coco, _write_json(coco, args.out)) + f"; file names relative to {image_root}"


def yolo_to_coco(args):
    names = _read_names(args.names)
    coco = converters.yolo_to_coco(args.labels, args.images, names)
    return _summary(coco, _write_json(coco, args.out))


def _read_names(path):
    """Class names: one per line (names.txt), or a YOLO data.yaml's ``names`` (list or {index: name})."""
    if path.endswith((".yaml", ".yml")):
        import yaml

        with open(path) as f:
            names = yaml.safe_load(f).get("names")
        return [names[k] for k in sorted(names)] if isinstance(names, dict) else list(names)
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def coco_to_yolo(args):
    names = converters.coco_to_yolo(_read_coco(args.coco), args.out)
    return f"{args.out}: YOLO-seg labels of {len(names)} classes, names in {os.path.join(args.out, 'names.txt')}"


def flat_polygons(args):
    coco, fixed = converters.nest_flat_polygons(_read_coco(args.coco))
    _write_json(coco, args.out)
    return f"{args.out}: {len(fixed)} flat polygon list(s) nested" + (
        f" (annotation ids {converters.few(map(str, fixed))})" if fixed else "")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("rasters-to-coco", help="instance-id rasters (PNG/TIFF/NPY, 0 = background) -> COCO")
    s.add_argument("--images", required=True, help="image folder (file_name is relative to it)")
    s.add_argument("--masks", required=True, help="raster folder, files named as the images")
    s.add_argument("--out", required=True, help="COCO JSON to write")
    s.add_argument("--category", default="object", help="the one category's name (default: object)")
    s.add_argument("--polygons", action="store_true", help="polygons instead of RLE (holes are filled)")
    s.set_defaults(run=rasters_to_coco)

    s = sub.add_parser("coco-to-semantic", help="COCO instances -> semantic label PNGs + classes.json")
    s.add_argument("--coco", required=True)
    s.add_argument("--out", required=True, help="folder of label PNGs")
    s.add_argument("--background", default="background", help="name of label 0 (pixels of no instance)")
    s.add_argument("--drop", nargs="*", default=[], help="category names to leave out (e.g. _background_)")
    s.set_defaults(run=coco_to_semantic)

    s = sub.add_parser("coco-to-panoptic", help="COCO instances (+ stuff) -> COCO panoptic JSON + PNGs")
    s.add_argument("--coco", required=True, help="instances JSON (the thing classes)")
    s.add_argument("--stuff", help="optional stuff annotations in COCO form (same image ids)")
    s.add_argument("--background-stuff", help="optional stuff class for the pixels nothing labels")
    s.add_argument("--drop", nargs="*", default=[], help="thing category names to leave out (e.g. _background_)")
    s.add_argument("--out", required=True, help="panoptic JSON to write")
    s.add_argument("--png-folder", required=True, help="folder of panoptic PNGs to write")
    s.set_defaults(run=coco_to_panoptic)

    s = sub.add_parser("labelme-to-coco", help="labelme JSON files -> COCO")
    s.add_argument("--input", required=True, help="a labelme .json or a folder of them (recursive)")
    s.add_argument("--out", required=True)
    s.add_argument("--image-root", help="folder file_name is relative to (default: the input folder)")
    s.add_argument("--classes", nargs="*", help="class names in category order (default: labels, sorted)")
    s.set_defaults(run=labelme_to_coco)

    s = sub.add_parser("yolo-to-coco", help="YOLO-seg polygon .txt files -> COCO")
    s.add_argument("--labels", required=True, help="folder of .txt files named as the images")
    s.add_argument("--images", required=True)
    s.add_argument("--names", required=True, help="names.txt (one per line) or a YOLO data.yaml")
    s.add_argument("--out", required=True)
    s.set_defaults(run=yolo_to_coco)

    s = sub.add_parser("coco-to-yolo", help="COCO -> YOLO-seg polygon .txt files + names.txt")
    s.add_argument("--coco", required=True)
    s.add_argument("--out", required=True, help="folder of .txt files")
    s.set_defaults(run=coco_to_yolo)

    s = sub.add_parser("flat-polygons", help="nest flat polygon lists ([x, y, ...] -> [[x, y, ...]])")
    s.add_argument("--coco", required=True)
    s.add_argument("--out", required=True)
    s.set_defaults(run=flat_polygons)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s", stream=sys.stderr)
    try:
        print(args.run(args))
    except (OSError, ValueError) as e:
        source = getattr(args, "coco", None) or getattr(args, "input", None) or getattr(args, "labels", None) or args.masks
        print(f"convert.py {args.command} ({source}): {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
