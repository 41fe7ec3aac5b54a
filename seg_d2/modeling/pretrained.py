"""Pretrained weights from a local file, with a report of what loaded and what did not.

:func:`load_weights` loads into a whole model any of:

- a Detectron2 checkpoint: ``.pth`` of a trained model, or a model-zoo ``.pkl`` (Detectron2's own format, or
  Caffe2 blobs matched by its name heuristics) — read and converted by Detectron2's ``DetectionCheckpointer``;
- a backbone / classification checkpoint (a torchvision or timm ``state_dict`` of an ImageNet model): loaded
  into the model's backbone (the sub-module its keys fit best), torchvision ResNet names renamed to
  Detectron2's (``layer1.0.bn1`` -> ``res2.0.conv1.norm``) and timm's feature-net names matched to the
  full model's (``stages_0`` / ``stages.0``, ``model.`` prefixes).

:func:`load_into` does the second for one module (timm, MobileNetV2 and MiT backbones use it for their
``WEIGHTS`` / ``PRETRAINED`` keys). Nothing is downloaded. Every load returns and logs a :class:`LoadReport`:
the tensors loaded, the model's tensors the file lacks (they keep their initial values), the file's tensors the
model does not use, and shape mismatches (not loaded); a file of which nothing fits is a
:class:`WeightsMismatchError` naming it.

Importing this module (``import seg_d2`` does) also makes Detectron2's ``DetectionCheckpointer`` read backbone
checkpoints this way (:func:`as_detectron2_checkpoint`), so ``MODEL.WEIGHTS`` may name one in DefaultPredictor,
DefaultTrainer, seg_d2's Trainer and every tool: Detectron2 v0.6 loaded none of such a file's tensors (their
names are not the model's) and only logged them as unused.
"""
import functools
import logging
import os
import pickle
import re
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

import numpy as np
import torch
from torch import nn

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling.backbone import ResNet

__all__ = ["LoadReport", "WeightsMismatchError", "as_detectron2_checkpoint", "load_into", "load_weights", "match_keys",
           "read_state_dict", "torchvision_resnet_name"]

logger = logging.getLogger(__name__)

# Containers that checkpoints wrap their state_dict in (Lightning, timm's train script, torchvision refs).
_CONTAINER_KEYS = ("model", "state_dict", "model_state", "module")
_TENSOR_PREFIXES = ("module.", "model.")  # DistributedDataParallel / wrapper prefixes


class WeightsMismatchError(ValueError):
    """A weights file of which no tensor fits the model; the message names the file."""


class LoadReport(NamedTuple):
    source: str
    loaded: List[str]
    missing: List[str]  # in the model, not in the file: initial values kept
    unexpected: List[str]  # in the file, not used by the model
    mismatched: List[str]  # in both with different shapes: not loaded

    def summary(self) -> str:
        def few(keys):
            return f"{len(keys)}" + (f" ({', '.join(keys[:6])}{', ...' if len(keys) > 6 else ''})" if keys else "")

        return (f"{self.source}: loaded {len(self.loaded)} tensors; missing from the file (initial values kept): "
                f"{few(self.missing)}; unused from the file: {few(self.unexpected)}; shape mismatch (not loaded): "
                f"{few(self.mismatched)}")


def _unwrap(state: dict) -> Dict[str, torch.Tensor]:
    while isinstance(state, dict) and not any(isinstance(v, (torch.Tensor, np.ndarray)) for v in state.values()):
        inner = next((state[k] for k in _CONTAINER_KEYS if isinstance(state.get(k), dict)), None)
        if inner is None:
            break
        state = inner
    return {k: torch.as_tensor(v) for k, v in state.items() if isinstance(v, (torch.Tensor, np.ndarray))}


def read_state_dict(path: str, key: str = "") -> Dict[str, torch.Tensor]:
    """The tensors of a checkpoint file: ``.safetensors``, ``.pkl`` (pickled numpy, Detectron2 model zoo
    style) or anything ``torch.load`` reads (``weights_only``), unwrapped from {"model": ...}-style
    containers. ``key``: the config key that names the file, for the error."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{key + ' ' if key else ''}{path}: no such weights file")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    if path.endswith(".pkl"):
        with open(path, "rb") as f:
            return _unwrap(pickle.load(f, encoding="latin1"))
    return _unwrap(torch.load(path, map_location="cpu", weights_only=True))


def _normalised(key: str) -> str:
    for prefix in _TENSOR_PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix):]
    # timm's feature nets flatten "stages.0" into "stages_0"; match either spelling
    return key.replace("_", ".")


def match_keys(own: List[str], available: List[str], rename: Optional[Callable[[str], str]] = None) -> Dict[str, str]:
    """{model key: file key}: equal keys, else keys equal after ``rename`` (applied to file keys), dropped
    wrapper prefixes and "_" / "." spelled alike, where that match is unique."""
    rename = rename or (lambda k: k)
    matched = {k: k for k in own if k in set(available)}
    by_form: Dict[str, List[str]] = {}
    for key in available:
        by_form.setdefault(_normalised(rename(key)), []).append(key)
    used = set(matched.values())
    for key in own:
        if key in matched:
            continue
        candidates = [k for k in by_form.get(_normalised(key), []) if k not in used]
        if len(candidates) == 1:
            matched[key] = candidates[0]
            used.add(candidates[0])
    return matched


def load_into(module: nn.Module, state: Dict[str, torch.Tensor], source: str,
              rename: Optional[Callable[[str], str]] = None) -> LoadReport:
    """Load the tensors of ``state`` that fit ``module`` (:func:`match_keys`); log and return the report.
    Raises a ValueError naming ``source`` when none fits."""
    own = module.state_dict()
    matched = match_keys(list(own), list(state), rename)
    mismatched = sorted(k for k, f in matched.items() if state[f].shape != own[k].shape)
    loadable = {k: state[f].to(own[k].dtype) for k, f in matched.items() if k not in mismatched}
    if not loadable:
        raise WeightsMismatchError(
            f"{source}: no tensor of the file fits {type(module).__name__} (file keys start {sorted(state)[:3]}, "
            f"model keys start {sorted(own)[:3]}; {len(mismatched)} shape mismatches)")
    module.load_state_dict(loadable, strict=False)
    used = set(matched.values())
    report = LoadReport(source, sorted(loadable), sorted(own.keys() - matched.keys()),
                        sorted(k for k in state if k not in used), mismatched)
    (logger.warning if report.missing or report.mismatched else logger.info)(report.summary())
    return report


_TORCHVISION_RESNET = [
    (re.compile(r"^conv1\.weight$"), "stem.conv1.weight"),
    (re.compile(r"^bn1\."), "stem.conv1.norm."),
    (re.compile(r"^layer(\d)\.(\d+)\.conv(\d)\."), lambda m: f"res{int(m[1]) + 1}.{m[2]}.conv{m[3]}."),
    (re.compile(r"^layer(\d)\.(\d+)\.bn(\d)\."), lambda m: f"res{int(m[1]) + 1}.{m[2]}.conv{m[3]}.norm."),
    (re.compile(r"^layer(\d)\.(\d+)\.downsample\.0\."), lambda m: f"res{int(m[1]) + 1}.{m[2]}.shortcut."),
    (re.compile(r"^layer(\d)\.(\d+)\.downsample\.1\."), lambda m: f"res{int(m[1]) + 1}.{m[2]}.shortcut.norm."),
]


def torchvision_resnet_name(key: str) -> str:
    """A torchvision ResNet parameter name in Detectron2's ResNet naming (``layer{i}`` is ``res{i+1}``,
    ``bn{k}`` the norm of ``conv{k}``, ``downsample`` the ``shortcut``); other names unchanged."""
    for pattern, replacement in _TORCHVISION_RESNET:
        if pattern.search(key):
            return pattern.sub(replacement, key, count=1)
    return key


def _backbone_candidates(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """(name, module) of the backbone and the modules it wraps (FPN's bottom_up, a feature net's body)."""
    found, queue = [], [("backbone", getattr(model, "backbone", model))]
    while queue:
        name, module = queue.pop(0)
        found.append((name, module))
        queue += [(f"{name}.{n}", getattr(module, n)) for n in ("bottom_up", "body") if hasattr(module, n)]
    return found


def _backbone_state(model: nn.Module, state: Dict[str, torch.Tensor], path: str) -> Tuple[str, Dict[str, torch.Tensor]]:
    """(name of the backbone module the file fits best, the file's tensors under the model's names); tensors
    that fit nothing keep their own names. Raises :class:`WeightsMismatchError` when no tensor fits."""
    best = None
    for name, module in _backbone_candidates(model):
        rename = torchvision_resnet_name if isinstance(module, ResNet) else None
        own = module.state_dict()
        matched = match_keys(list(own), list(state), rename)
        fitting = sum(state[f].shape == own[k].shape for k, f in matched.items())
        if fitting and (best is None or fitting > best[0]):
            best = (fitting, name, matched)
    if best is None:
        raise WeightsMismatchError(
            f"{path}: no tensor of the file fits the model or its backbone (file keys start {sorted(state)[:3]}, "
            f"model keys start {sorted(model.state_dict())[:3]})")
    _, name, matched = best
    renamed = {f"{name}.{k}": state[f] for k, f in matched.items()}
    used = set(matched.values())
    renamed.update((k, v) for k, v in state.items() if k not in used)
    return name, renamed


def _has_model_names(model: nn.Module, state: dict) -> bool:
    own = model.state_dict().keys()
    return any(k in own or k.removeprefix("module.") in own for k in state)  # fvcore drops DDP's "module."


def as_detectron2_checkpoint(model: nn.Module, checkpoint: dict, path: str) -> dict:
    """``checkpoint`` as ``DetectionCheckpointer._load_file`` returned it, with a backbone checkpoint's tensors
    renamed to ``model``'s names, so that Detectron2 loads them (and lists the model's tensors it lacks and the
    file's it does not use, as for its own ImageNet files). A Detectron2 checkpoint (one that shares names with
    ``model``, or that Detectron2 matches by its heuristics) is returned as it is."""
    state = checkpoint["model"]
    if checkpoint.get("matching_heuristics") or _has_model_names(model, state):
        return checkpoint
    name, renamed = _backbone_state(model, _unwrap(state), path)
    logger.info(f"{path}: not a Detectron2 checkpoint of this model; its tensors are matched by name to {name}")
    return {**{k: v for k, v in checkpoint.items() if k != "model"}, "model": renamed, "matched_to": name}


def _read_backbone_checkpoints(checkpointer_class):
    """Make ``checkpointer_class._load_file`` (Detectron2's ``DetectionCheckpointer``) return backbone
    checkpoints under the model's names (:func:`as_detectron2_checkpoint`). Subclasses and every instance,
    DefaultPredictor's included, read through it."""
    read = checkpointer_class._load_file
    if getattr(read, "reads_backbone_checkpoints", False):
        return

    @functools.wraps(read)
    def _load_file(self, filename):
        return as_detectron2_checkpoint(self.model, read(self, filename), filename)

    _load_file.reads_backbone_checkpoints = True
    checkpointer_class._load_file = _load_file


def load_weights(model: nn.Module, path: str) -> LoadReport:
    """Load a Detectron2 checkpoint, or a backbone / classification checkpoint into the backbone (see the
    module docstring); log and return the report."""
    checkpointer = DetectionCheckpointer(model)
    checkpoint = checkpointer._load_file(path)  # Detectron2's reading: .pkl zoo / Caffe2 names, .pth; backbones
    source = f"{path} -> {checkpoint['matched_to']}" if "matched_to" in checkpoint else path
    own = model.state_dict()
    incompatible = checkpointer._load_model(checkpoint)  # converts, renames, loads what fits
    mismatched = sorted(k for k, _, _ in incompatible.incorrect_shapes)
    missing = sorted(incompatible.missing_keys)
    report = LoadReport(source, sorted(own.keys() - set(missing) - set(mismatched)), missing,
                        sorted(incompatible.unexpected_keys), mismatched)
    (logger.warning if report.missing or report.mismatched else logger.info)(report.summary())
    return report


# Applied here rather than through a seg_d2.compat ModulePatch: the reading needs this module, which needs
# Detectron2 built (seg_d2.compat comes first and imports nothing of seg_d2's); import seg_d2 imports this module.
_read_backbone_checkpoints(DetectionCheckpointer)
