"""One `ModulePatch` per Detectron2 v0.6 module that breaks on today's libraries.

Each patch changes only the module it names, a Detectron2 one but for two functions Detectron2 relies on
(fvcore's polygon crop, pycocotools' loadRes; both only where they broke): numpy, Pillow, setuptools and
Python's ``random`` are left as they are for everyone else.
"""
import functools
import importlib
import importlib.util
import logging
import os
import random
import sys
import types

import numpy as np

from .import_hooks import ModulePatch

# ---- numpy >= 1.24 removed the aliases np.bool/np.int/np.float/np.str/np.object ----------------
_NUMPY_ALIASES = {"bool": bool, "int": int, "float": float, "str": str, "object": object}


class _NumpyWithAliases(types.ModuleType):
    """numpy, plus the builtin-type aliases that numpy 1.24 removed (they meant the builtins)."""

    def __getattr__(self, name):
        if name in _NUMPY_ALIASES:
            return _NUMPY_ALIASES[name]
        return getattr(np, name)


_numpy_with_aliases = _NumpyWithAliases("numpy")


def _use_numpy_aliases(module):
    module.np = _numpy_with_aliases


_MODULES_USING_NUMPY_ALIASES = (
    "detectron2.data.build",
    "detectron2.data.datasets.pascal_voc",
    "detectron2.evaluation.pascal_voc_evaluation",
    "detectron2.evaluation.sem_seg_evaluation",
    "detectron2.structures.masks",
    "detectron2.utils.video_visualizer",
    "detectron2.utils.visualizer",
)


# ---- Pillow >= 10 removed Image.LINEAR (== BILINEAR), read as a default argument at import ------
def _pillow_linear_during_import(spec):
    from PIL import Image

    if hasattr(Image, "LINEAR"):
        return None
    Image.LINEAR = Image.BILINEAR

    def undo():
        del Image.LINEAR

    return undo


# ---- setuptools >= 81 has no pkg_resources; model_zoo only needs resource_filename -------------
class _PkgResources(types.ModuleType):
    @staticmethod
    def resource_filename(package, resource):
        package_dir = os.path.dirname(importlib.import_module(package).__file__)
        return os.path.join(package_dir, resource)


def _pkg_resources_during_import(spec):
    if importlib.util.find_spec("pkg_resources") is not None:
        return None
    sys.modules["pkg_resources"] = _PkgResources("pkg_resources")

    def undo():
        del sys.modules["pkg_resources"]  # visible to detectron2.model_zoo only

    return undo


# ---- Python 3.11: Random.sample no longer accepts a set (MapDataset's fallback pool is one) -----
class _SetSamplingRandom(random.Random):
    """random.Random whose sample() takes a set as Python < 3.11 did (through tuple(population))."""

    def sample(self, population, k, **kwargs):
        if isinstance(population, (set, frozenset)):
            population = tuple(population)
        return super().sample(population, k, **kwargs)


def _map_dataset_sampling_sets(module):
    original_init = module.MapDataset.__init__

    @functools.wraps(original_init)
    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self._rng = _SetSamplingRandom(42)  # the seed MapDataset itself uses

    module.MapDataset.__init__ = __init__


# ---- torch 2 has no caffe2: detectron2.export must still give TracingAdapter and scripting -------
_CAFFE2_MESSAGE = (
    "{} needs caffe2, which PyTorch 2 removed. Export with detectron2.export.TracingAdapter + "
    "torch.jit.trace / torch.onnx.export, or detectron2.export.scripting_with_instances."
)


def _caffe2_unavailable(name):
    def unavailable(*args, **kwargs):
        raise RuntimeError(_CAFFE2_MESSAGE.format(name))

    unavailable.__name__ = name
    return unavailable


def _export_api_without_caffe2():
    api = types.ModuleType("detectron2.export.api", "Detectron2's caffe2 export API (caffe2 absent).")

    def add_export_config(cfg):
        # What v0.6's add_export_config does; it needs no caffe2.
        from detectron2.config import CfgNode

        is_frozen = cfg.is_frozen()
        cfg.defrost()
        cfg.EXPORT_CAFFE2 = CfgNode()
        cfg.EXPORT_CAFFE2.USE_HEATMAP_MAX_KEYPOINT = False
        if is_frozen:
            cfg.freeze()
        return cfg

    api.add_export_config = add_export_config
    for name in ("export_caffe2_model", "export_onnx_model", "Caffe2Model", "Caffe2Tracer"):
        setattr(api, name, _caffe2_unavailable(name))
    api.__all__ = ["add_export_config", "export_caffe2_model", "Caffe2Model", "export_onnx_model", "Caffe2Tracer"]
    return api


def _export_without_caffe2(spec):
    if importlib.util.find_spec("caffe2") is None:
        sys.modules["detectron2.export.api"] = _export_api_without_caffe2()
    return None


# ---- configs may `_BASE_` on the installed model zoo: "model_zoo://COCO-.../x.yaml" -------------
MODEL_ZOO_SCHEME = "model_zoo://"


def _model_zoo_config_path(filename):
    """Map a path containing model_zoo://REL (fvcore joins it onto the including file's folder, and
    model-zoo files' own relative `_BASE_`s onto it) to the installed model-zoo config file."""
    relative = os.path.normpath(filename.split(MODEL_ZOO_SCHEME, 1)[1])
    from detectron2 import model_zoo

    path = os.path.join(os.path.dirname(model_zoo.__file__), "configs", relative)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{MODEL_ZOO_SCHEME}{relative} is not a Detectron2 model-zoo config ({path})")
    return path


def _model_zoo_bases(module):
    original_open = module.CfgNode._open_cfg.__func__

    def _open_cfg(cls, filename):
        if MODEL_ZOO_SCHEME in filename:
            filename = _model_zoo_config_path(filename)
        return original_open(cls, filename)

    module.CfgNode._open_cfg = classmethod(_open_cfg)


# ---- DistributedDataParallel takes device_ids=None for a CPU model; v0.6 always passes the rank --
def _ddp_on_cpu(module):
    original = module.create_ddp_model

    @functools.wraps(original)
    def create_ddp_model(model, *, fp16_compression=False, **kwargs):
        on_cpu = next(model.parameters()).device.type == "cpu"
        if on_cpu and "device_ids" not in kwargs:
            kwargs["device_ids"] = None
        return original(model, fp16_compression=fp16_compression, **kwargs)

    module.create_ddp_model = create_ddp_model


# ---- v0.6's deformable convs raise on CPU (no backward, no deformable_groups > 1, no modulated) ---
def _deform_conv_on_cpu(module):
    from torchvision.ops import deform_conv2d

    cuda_deform_conv, cuda_modulated = module.deform_conv, module.modulated_deform_conv

    def deform_conv(input, offset, weight, stride=1, padding=0, dilation=1, groups=1, deformable_groups=1,
                    im2col_step=64):
        if input.is_cuda:
            return cuda_deform_conv(input, offset, weight, stride, padding, dilation, groups, deformable_groups,
                                    im2col_step)
        # torchvision reads groups from weight.shape[1] and deformable groups from offset's channels,
        # with the same (dy, dx) offset layout as Detectron2; it has a CPU backward.
        return deform_conv2d(input, offset, weight, stride=stride, padding=padding, dilation=dilation)

    def modulated_deform_conv(input, offset, mask, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
                              deformable_groups=1):
        if input.is_cuda:
            return cuda_modulated(input, offset, mask, weight, bias, stride, padding, dilation, groups,
                                  deformable_groups)
        return deform_conv2d(input, offset, weight, bias, stride=stride, padding=padding, dilation=dilation,
                             mask=mask)

    module.deform_conv, module.modulated_deform_conv = deform_conv, modulated_deform_conv


# ---- torch 2's schedulers subclass LRScheduler, not _LRScheduler: v0.6's hook never checkpointed them --
def _has_scheduler_state(scheduler):
    return callable(getattr(scheduler, "state_dict", None)) and callable(getattr(scheduler, "load_state_dict", None))


def _scheduler_state_in_checkpoints(module):
    """LRScheduler hook: save and restore any scheduler that has state_dict/load_state_dict (v0.6 only
    did for isinstance(_, torch.optim.lr_scheduler._LRScheduler), which torch >= 2.0's StepLR, OneCycleLR,
    ReduceLROnPlateau, ... are not, so a resumed run restarted their schedule)."""
    hook = module.LRScheduler

    def state_dict(self):
        return self.scheduler.state_dict() if _has_scheduler_state(self.scheduler) else {}

    def load_state_dict(self, state_dict):
        if _has_scheduler_state(self.scheduler):
            logging.getLogger(module.__name__).info("Loading scheduler from state_dict ...")
            self.scheduler.load_state_dict(state_dict)

    hook.state_dict, hook.load_state_dict = state_dict, load_state_dict


# ---- GEOS >= 3.9 (shapely 2) starts a cropped polygon's ring at another vertex than GEOS < 3.9 did --
def _signed_area(ring):
    x, y = ring[:, 0], ring[:, 1]
    return (x * np.roll(y, -1) - np.roll(x, -1) * y).sum() / 2


def _in_canonical_order(ring, original):
    """The crop output ring clockwise for y up (as GEOS makes shells, and as Detectron2 v0.6's tests expect),
    starting at the first vertex of the uncropped polygon that it keeps, else at its smallest (x, y)."""
    if _signed_area(ring) > 0:
        ring = ring[::-1]
    same = (ring[:, None, :] == original[None, :, :]).all(2)  # (ring vertex, original vertex)
    kept = np.flatnonzero(same.any(0))
    start = np.argmax(same[:, kept[0]]) if len(kept) else np.lexsort((ring[:, 1], ring[:, 0]))[0]
    return np.roll(ring, -start, axis=0)


def _order_stable_polygon_crop(module):
    """CropTransform.apply_polygons (fvcore's, which Detectron2's crops use) returns the same vertex order
    whatever order GEOS's intersection returns: a polygon the crop does not cut keeps its start vertex."""
    original_apply = module.CropTransform.apply_polygons

    @functools.wraps(original_apply)
    def apply_polygons(self, polygons):
        cropped = []
        for polygon in polygons:
            shifted = self.apply_coords(np.array(polygon, dtype=float))  # the frame of the output
            cropped += [_in_canonical_order(ring, shifted) for ring in original_apply(self, [polygon])]
        return cropped

    module.CropTransform.apply_polygons = apply_polygons


# ---- numpy >= 1.25: COCO.loadRes fails on results that an earlier loadRes gave an ndarray "bbox" ----------
def _results_reloadable(module):
    """COCO.loadRes picks its branch with ``anns[0]["bbox"] == []``; on segmentation-only results it stores
    ``maskUtils.toBbox``'s ndarray there, which that comparison then raises on (numpy < 1.25 said False).
    Loading the same result dicts again (as COCOeval_opt's test does, once per evaluator) failed."""
    original_load = module.COCO.loadRes

    @functools.wraps(original_load)
    def loadRes(self, resFile):
        for ann in resFile if isinstance(resFile, list) else ():
            if isinstance(ann, dict) and isinstance(ann.get("bbox"), np.ndarray):
                ann["bbox"] = ann["bbox"].tolist()  # the result format's [x, y, w, h]; loadRes edits anns anyway
        return original_load(self, resFile)

    module.COCO.loadRes = loadRes


PATCHES = (
    *(ModulePatch(name, _use_numpy_aliases) for name in _MODULES_USING_NUMPY_ALIASES),
    ModulePatch("detectron2.data.transforms.transform", before=_pillow_linear_during_import),
    ModulePatch("detectron2.model_zoo.model_zoo", before=_pkg_resources_during_import),
    ModulePatch("detectron2.data.common", _map_dataset_sampling_sets),
    ModulePatch("detectron2.export", before=_export_without_caffe2),
    ModulePatch("detectron2.config.config", _model_zoo_bases),
    ModulePatch("detectron2.engine.defaults", _ddp_on_cpu),
    ModulePatch("detectron2.layers.deform_conv", _deform_conv_on_cpu),
    ModulePatch("detectron2.engine.hooks", _scheduler_state_in_checkpoints),
    ModulePatch("fvcore.transforms.transform", _order_stable_polygon_crop),
    ModulePatch("pycocotools.coco", _results_reloadable),
)
