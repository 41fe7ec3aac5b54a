"""Command-line image inputs: files, folders and glob patterns, with every problem named, never dropped."""
import argparse
import glob
import os
import re

__all__ = ["IMAGE_EXTENSIONS", "add_overrides_argument", "check_overrides", "expand_inputs", "looks_like_config_key",
           "parse_tool_args"]

# What a folder is searched for (seg_d2.data.image_io reads all of these); a file named explicitly is
# always tried, whatever its extension.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".npy")
_CONFIG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+$")


def looks_like_config_key(text):
    """True for "MODEL.WEIGHTS"-like tokens: a config override passed where an input was expected."""
    return bool(_CONFIG_KEY.match(text)) and not os.path.exists(text)


def add_overrides_argument(parser, example):
    """``--opts KEY VALUE ...``: config overrides, last on the command line (as in Detectron2's demo.py)."""
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], metavar="KEY VALUE",
                        help=f"config overrides, e.g. --opts {example} (must come last)")


def parse_tool_args(parser, argv=None):
    """``parser.parse_args(argv)``, checked by :func:`check_overrides`."""
    args = parser.parse_args(argv)
    check_overrides(parser, args)
    return args


def check_overrides(parser, args):
    """Exit 2 (``parser.error``) before anything runs when a config override is among ``args.input`` (it would
    be taken for an image and the model would run without it) or ``args.opts`` is not KEY VALUE pairs."""
    overrides = [item for item in args.input if looks_like_config_key(item)]
    if overrides:
        parser.error(f"--input {overrides[0]} looks like a config override, not an image: put overrides after "
                     f"--opts, e.g. --opts {overrides[0]} VALUE (nothing was run)")
    if len(args.opts) % 2:
        parser.error(f"--opts takes KEY VALUE pairs, got {len(args.opts)} items: {args.opts}")


def _folder_images(folder, extensions):
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(extensions))
    return [os.path.join(folder, n) for n in names if os.path.isfile(os.path.join(folder, n))]


def expand_inputs(items, extensions=IMAGE_EXTENSIONS):
    """(files, problems): the image files ``items`` name, in order and without repeats, and one
    (item, reason) per item that names none (missing path, empty folder, pattern matching nothing)."""
    files, problems, seen = [], [], set()
    for item in items:
        if os.path.isfile(item):
            found = [item]
        elif os.path.isdir(item):
            found = _folder_images(item, extensions)
            if not found:
                problems.append((item, f"folder holds no image ({', '.join(extensions)})"))
        elif glob.has_magic(item):
            found = [p for p in sorted(glob.glob(item, recursive=True)) if os.path.isfile(p)]
            if not found:
                problems.append((item, "pattern matches no file"))
        else:
            found = []
            problems.append((item, "no such file or folder"))
        for path in found:
            key = os.path.realpath(path)
            if key not in seen:
                seen.add(key)
                files.append(path)
    return files, problems
