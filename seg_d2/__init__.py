"""seg_d2: instance, panoptic and semantic segmentation for Detectron2.

``import seg_d2`` makes Detectron2 v0.6 whole on today's stack (:mod:`seg_d2.compat`) and registers every
seg_d2 model part, loss and dataset in Detectron2's registries, catalogs and ``get_cfg()`` defaults as soon
as Detectron2 is imported (at once if it already is), before any of them can be used. Itself it imports
neither torch nor Detectron2: a tool that uses none of them (e.g. COCO AP from files with
``seg_d2.evaluation``) does not pay for them. Subpackages and names are imported on first use.
"""
import importlib

from . import compat
from .compat.import_hooks import call_when_imported, lazy_attributes

compat.apply()  # import hooks only: in place before any Detectron2 module executes

__version__ = "0.1.0"
__all__ = ["add_seg_d2_config"]
__getattr__, __dir__ = lazy_attributes(__name__, {"add_seg_d2_config": "config"})

# Modules whose import registers seg_d2's parts (Detectron2 registries, the built-in datasets' catalog entries).
_REGISTERING = ("baselines", "data.builtin", "losses", "modeling", "prompting")


def _register_with_detectron2():
    from .config import extend_detectron2_defaults

    for name in _REGISTERING:
        importlib.import_module(f".{name}", __name__)
    extend_detectron2_defaults()  # get_cfg() has seg_d2's keys: stock tools read seg_d2's configs


call_when_imported("detectron2", _register_with_detectron2, __name__)
