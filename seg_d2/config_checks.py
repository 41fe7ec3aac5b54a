"""Settings that a model would silently ignore, or that contradict the data, are refused here.

:func:`check_config` runs before any model or loader is built (``seg_d2.engine.trainer.prepare_cfg``):

- a loss (``MODEL.ROI_MASK_HEAD.LOSS`` / ``MODEL.SEM_SEG_HEAD.LOSS``) changed on a head that does not read
  it is an error naming the key;
- a ``NUM_CLASSES`` the model uses that differs from the class count of a dataset it trains on or is
  evaluated on (DATASETS.TRAIN, DATASETS.TEST) is an error naming both numbers; ``NUM_CLASSES: -1`` is set
  from the training datasets instead (from the test datasets when no training dataset is registered, as
  for evaluation or prediction on another machine);
- any other seg_d2 key changed from its default that the model does not read is a warning naming the key
  (Detectron2's own convention lets unused keys pass).

What reads what is declared once per key group in :data:`KEY_GROUPS`: the model part (a registered name
chosen by a config key, e.g. ``MODEL.ROI_HEADS.NAME``) that reads the group, and the registered names (or
their subclasses) that do. Key groups not declared there are read by seg_d2 whatever the model.
Models seg_d2 does not know (a user's own meta-architecture or part) are never reported.
"""
import logging
from dataclasses import dataclass
from typing import Optional, Tuple

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import (
    BACKBONE_REGISTRY,
    META_ARCH_REGISTRY,
    ROI_HEADS_REGISTRY,
    ROI_MASK_HEAD_REGISTRY,
    SEM_SEG_HEADS_REGISTRY,
)
from detectron2.modeling.roi_heads import Res5ROIHeads, StandardROIHeads
from detectron2.utils.logger import log_first_n

from .config import add_seg_d2_config, stock_detectron2_config

__all__ = ["KEY_GROUPS", "FROM_DATASET", "KeyGroup", "check_config", "model_parts", "unused_keys"]

logger = logging.getLogger(__name__)

# NUM_CLASSES value meaning "as many as the training datasets have".
FROM_DATASET = -1

META = "MODEL.META_ARCHITECTURE"
BACKBONE = "MODEL.BACKBONE.NAME"
ROI_HEADS = "MODEL.ROI_HEADS.NAME"
MASK_HEAD = "MODEL.ROI_MASK_HEAD.NAME"
SEM_SEG_HEAD = "MODEL.SEM_SEG_HEAD.NAME"

_REGISTRIES = {
    META: META_ARCH_REGISTRY,
    BACKBONE: BACKBONE_REGISTRY,
    ROI_HEADS: ROI_HEADS_REGISTRY,
    MASK_HEAD: ROI_MASK_HEAD_REGISTRY,
    SEM_SEG_HEAD: SEM_SEG_HEADS_REGISTRY,
}
# The parts (besides the backbone) each known meta-architecture builds. Unknown ones: nothing is reported.
_META_ARCH_PARTS = {
    "GeneralizedRCNN": (ROI_HEADS,),
    "ProposalNetwork": (),
    "RetinaNet": (),
    "PanopticFPN": (ROI_HEADS, SEM_SEG_HEAD),
    "SegD2PanopticFPN": (ROI_HEADS, SEM_SEG_HEAD),
    "SemanticSegmentor": (SEM_SEG_HEAD,),
    "UNetSegmentor": (SEM_SEG_HEAD,),
    "PanopticDeepLab": (SEM_SEG_HEAD,),  # detectron2.projects.panoptic_deeplab
}
# SamDetector builds the parts of its detector, MODEL.SAM.DETECTOR (seg_d2.modeling.meta_arch.sam_detector).
SAM_DETECTOR = "SamDetector"


@dataclass(frozen=True)
class KeyGroup:
    """Config keys (nodes or leaves) read only by some models: by the part chosen by config key ``part``
    when its registered name is one of ``readers`` (or a subclass of one; ``()``: any part). ``part`` may
    also be a plain setting (its value as a string). ``error``: ignoring them is an error, not a warning."""

    keys: Tuple[str, ...]
    part: str
    readers: Tuple[str, ...]
    error: bool = False


KEY_GROUPS = (
    KeyGroup(("MODEL.ROI_MASK_HEAD.LOSS",), MASK_HEAD, ("MaskRCNNConvUpsampleLossHead", "PointRendLossMaskHead"),
             error=True),
    KeyGroup(("MODEL.SEM_SEG_HEAD.LOSS",), SEM_SEG_HEAD,
             ("FullResolutionSemSegHead", "SemSegLossFromConfig", "DeepLabV3LossHead"), error=True),
    KeyGroup(("MODEL.ROI_MASKIOU_HEAD",), ROI_HEADS, ("MaskScoringROIHeads", "CascadeMaskScoringROIHeads")),
    KeyGroup(("MODEL.UNET",), BACKBONE, ("build_unet_backbone",)),
    KeyGroup(("MODEL.MIT",), BACKBONE, ("build_mit_backbone",)),
    KeyGroup(("MODEL.TIMM",), BACKBONE, ("build_timm_backbone", "build_timm_fpn_backbone")),
    KeyGroup(("MODEL.MOBILENET",), BACKBONE, ("build_mobilenet_v2_backbone", "build_mobilenet_v2_fpn_backbone")),
    KeyGroup(("MODEL.SEM_SEG_HEAD.UNET_DECODER_CHANNELS",), SEM_SEG_HEAD, ("UNetHead",)),
    KeyGroup(
        tuple(f"MODEL.SEM_SEG_HEAD.{k}" for k in ("ASPP_RATES", "LOW_LEVEL_FEATURE", "LOW_LEVEL_CHANNELS")),
        SEM_SEG_HEAD,
        ("DeepLabV3PlusASPPHead",),
    ),
    # the same two keys as Detectron2's DeepLab project (its add_deeplab_config adds them with these defaults)
    KeyGroup(("MODEL.SEM_SEG_HEAD.ASPP_CHANNELS", "MODEL.SEM_SEG_HEAD.ASPP_DROPOUT"), SEM_SEG_HEAD,
             ("DeepLabV3PlusASPPHead", "DeepLabV3PlusHead", "DeepLabV3Head")),
    KeyGroup(("MODEL.SEM_SEG_HEAD.FCN_CONV_DIMS",), SEM_SEG_HEAD, ("FCNHead",)),
    KeyGroup(("MODEL.SEM_SEG_HEAD.CLASSIFIER_DROPOUT",), SEM_SEG_HEAD, ("FCNHead", "SegFormerHead")),
    KeyGroup(("MODEL.SEG_D2_PANOPTIC",), META, ("SegD2PanopticFPN",)),
    # MODEL.SAM.CHECKPOINT and TYPE are read by the prompt tools whatever the model; these by SamDetector only
    KeyGroup(tuple(f"MODEL.SAM.{k}" for k in ("DETECTOR", "MULTIMASK_OUTPUT", "KEEP_DETECTOR_MASKS",
                                              "DETECTOR_MASK_IOU", "BOX_BATCH")), META, (SAM_DETECTOR,)),
    KeyGroup(("INPUT.ALBUMENTATIONS.PIPELINE",), "INPUT.ALBUMENTATIONS.ENABLED", ("True",)),
)

# Each NUM_CLASSES, who reads it, and whether it counts the training datasets' thing or stuff classes.
_NUM_CLASSES = (
    (KeyGroup(("MODEL.ROI_HEADS.NUM_CLASSES",), ROI_HEADS, ()), "thing"),
    (KeyGroup(("MODEL.RETINANET.NUM_CLASSES",), META, ("RetinaNet",)), "thing"),
    (KeyGroup(("MODEL.SEM_SEG_HEAD.NUM_CLASSES",), SEM_SEG_HEAD, ()), "stuff"),
)


def _get(cfg, key):
    for name in key.split("."):
        cfg = cfg[name]
    return cfg


def _set(cfg, key, value):
    *path, leaf = key.split(".")
    setattr(_get(cfg, ".".join(path)), leaf, value)


def _registered(key, name):
    """The object registered as ``name`` in the registry config key ``key`` chooses from, else None."""
    registry = _REGISTRIES.get(key)
    if registry is None or name not in registry:
        return None
    return registry.get(name)


def model_parts(cfg) -> Optional[dict]:
    """{config key choosing a part: its value} for every part ``cfg``'s model is built from; None for a
    meta-architecture seg_d2 does not know."""
    meta = cfg.MODEL.META_ARCHITECTURE
    builds = cfg.MODEL.SAM.DETECTOR if meta == SAM_DETECTOR else meta
    if builds not in _META_ARCH_PARTS:
        return None
    parts = {META: meta, BACKBONE: cfg.MODEL.BACKBONE.NAME}
    for key in _META_ARCH_PARTS[builds]:
        parts[key] = _get(cfg, key)
    roi_heads = _registered(ROI_HEADS, parts.get(ROI_HEADS))
    if cfg.MODEL.MASK_ON and isinstance(roi_heads, type) and issubclass(roi_heads, (StandardROIHeads, Res5ROIHeads)):
        parts[MASK_HEAD] = cfg.MODEL.ROI_MASK_HEAD.NAME
    return parts


def _reads(group: KeyGroup, cfg, parts: Optional[dict]) -> Optional[bool]:
    """Whether ``cfg`` reads ``group``; None when that cannot be known (a model or part seg_d2 does not know)."""
    if group.part not in _REGISTRIES:
        return str(_get(cfg, group.part)) in group.readers
    if parts is None:
        return None
    if group.part not in parts:
        return False  # the model has no such part (e.g. no ROI heads, or masks off)
    name = parts[group.part]
    part = _registered(group.part, name)
    if part is None:
        return None
    if not group.readers or name in group.readers:
        return True
    return isinstance(part, type) and any(c.__name__ in group.readers for c in part.__mro__)


def _leaves(node, prefix):
    if not isinstance(node, dict):
        return {prefix: node}
    return {k: v for name, child in node.items() for k, v in _leaves(child, f"{prefix}.{name}").items()}


def unused_keys(cfg):
    """[(KeyGroup, key, value)] for every seg_d2 key changed from its default that ``cfg``'s model ignores."""
    parts = model_parts(cfg)
    defaults = add_seg_d2_config(stock_detectron2_config())
    found = []
    for group in KEY_GROUPS:
        if _reads(group, cfg, parts) is not False:
            continue
        for key in group.keys:
            default = _leaves(_get(defaults, key), key)
            found += [(group, k, v) for k, v in _leaves(_get(cfg, key), key).items() if default.get(k) != v]
    return found


def _check_unused_keys(cfg):
    parts = model_parts(cfg) or {}
    errors = []
    for group, key, value in unused_keys(cfg):
        readers = f"it is read only with {group.part} in {list(group.readers)} (or a subclass)"
        if group.part in parts or group.part not in _REGISTRIES:
            why = f"{readers}, and this config has {group.part} = {_get(cfg, group.part)!r}"
        else:
            why = f"{readers}, a part this model ({META} = {parts[META]!r}) does not build"
        message = f"{key} = {value!r} has no effect: {why}"
        if group.error:
            errors.append(message)
        else:
            log_first_n(logging.WARNING, message, name=__name__, key="message")
    if errors:
        raise ValueError("; ".join(errors))


def _dataset_class_count(name, kind):
    """Number of thing or stuff classes training dataset ``name`` declares in its metadata, else None."""
    metadata = MetadataCatalog.get(name)
    if kind == "thing":
        # COCO panoptic ("standard") metadata list every class as thing_classes; the id map has the things.
        classes = metadata.get("thing_dataset_id_to_contiguous_id") or metadata.get("thing_classes")
    else:
        classes = metadata.get("stuff_classes")
    return None if classes is None else len(classes)


def _class_counts(names, kind):
    """{dataset: its thing or stuff class count} of the registered ones among ``names`` that declare it."""
    counts = {name: _dataset_class_count(name, kind) for name in names if name in DatasetCatalog}
    return {name: n for name, n in counts.items() if n is not None}


def _check_num_classes(cfg):
    parts = model_parts(cfg)
    for group, kind in _NUM_CLASSES:
        if not _reads(group, cfg, parts):
            continue
        (key,) = group.keys
        scopes = {"training": _class_counts(cfg.DATASETS.TRAIN, kind), "test": _class_counts(cfg.DATASETS.TEST, kind)}
        value = _get(cfg, key)
        if value == FROM_DATASET:
            value = _set_from_datasets(cfg, key, kind, scopes)
        for scope, counts in scopes.items():
            for name, count in counts.items():
                if count != value:
                    raise ValueError(f"{key} = {value}, but {scope} dataset {name!r} has {count} {kind} classes "
                                     f"(set {key} {count}, or {FROM_DATASET} to take it from the dataset)")


def _set_from_datasets(cfg, key, kind, scopes):
    """Set ``key`` to the training datasets' class count (the test datasets' when none is registered)."""
    scope, counts = next(((s, c) for s, c in scopes.items() if c), ("training", {}))
    if not counts:
        raise ValueError(f"{key} = {FROM_DATASET} takes the number of {kind} classes from DATASETS.TRAIN (else "
                         f"DATASETS.TEST), but no dataset there ({list(cfg.DATASETS.TRAIN)}, "
                         f"{list(cfg.DATASETS.TEST)}) is registered with {kind}_classes metadata")
    if len(set(counts.values())) > 1:
        raise ValueError(f"{key} = {FROM_DATASET}: the {scope} datasets disagree on their {kind} classes: {counts}")
    count = next(iter(counts.values()))
    frozen = cfg.is_frozen()
    cfg.defrost()
    _set(cfg, key, count)
    if frozen:
        cfg.freeze()
    logger.info(f"{key} = {count}, from {scope} dataset(s) {list(counts)}")
    return count


def check_config(cfg):
    """Raise ValueError on settings ``cfg``'s model would ignore or that contradict its data; warn
    (once per message) on other seg_d2 keys it ignores; set ``NUM_CLASSES: -1`` from the training data."""
    _check_unused_keys(cfg)
    _check_num_classes(cfg)
