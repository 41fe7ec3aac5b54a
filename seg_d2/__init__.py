"""seg_d2: instance, panoptic and semantic segmentation for Detectron2.

``import seg_d2`` makes Detectron2 v0.6 whole on today's stack
(:mod:`seg_d2.compat`) and registers every seg_d2 model part, loss and dataset in Detectron2's registries.
"""
from . import compat

compat.apply()

# Detectron2 may only be imported after compat.apply(); importing these modules registers their parts.
from . import baselines, data, evaluation, losses, modeling, prompting  # noqa: E402,F401
from .config import add_seg_d2_config, extend_detectron2_defaults  # noqa: E402

extend_detectron2_defaults()  # get_cfg() has seg_d2's keys: stock tools read seg_d2's configs

__version__ = "0.1.0"
__all__ = ["add_seg_d2_config"]
