"""CPU speed-ups for the models Detectron2's DefaultTrainer and DefaultPredictor build, with the same outputs.

`fold_norms` turns every Detectron2 ``Conv2d`` followed by a fixed affine norm (FrozenBatchNorm2d, or
BatchNorm in eval mode) into a `FoldedNormConv2d`: the norm is applied through the conv's weight and bias
(w * s, b * s + t), which saves a full pass over the conv's output, forward and backward. Parameters,
buffers and state_dict keys are untouched (the norm stays a submodule), so checkpoints load before or after
folding and load_state_dict / .to() are seen (the folded weights are cached per tensor version). Outputs
equal stock up to float32 rounding (tests/modeling/test_fast_inference.py states the tolerance).

``import seg_d2`` wraps ``detectron2.engine.defaults.build_model`` (used by DefaultTrainer, hence seg_d2's
Trainer, and by DefaultPredictor, hence tools/predict.py) so that the models it builds are folded unless
``SEG_D2.FOLD_NORMS`` is False. `unfold_norms` gives back stock modules (e.g. before
``torch.jit.script``, which cannot compile the cache).
"""
import functools
import importlib

import torch
import torch.nn.functional as F
from detectron2.layers import Conv2d, FrozenBatchNorm2d

__all__ = ["FoldedNormConv2d", "fold_norms", "unfold_norms", "speed_up_built_models"]


def _is_fixed_affine(norm):
    """True when ``norm`` is a per-channel affine map at this moment: frozen, or BatchNorm with running stats
    in eval mode."""
    if isinstance(norm, FrozenBatchNorm2d):
        return True
    return (isinstance(norm, (torch.nn.BatchNorm2d, torch.nn.SyncBatchNorm)) and not norm.training
            and norm.track_running_stats and norm.running_var is not None)


def _norm_scale_shift(norm):
    """(s, t) with norm(x) == x * s + t per channel."""
    scale = (norm.running_var + norm.eps).rsqrt()
    if norm.weight is not None:
        scale = scale * norm.weight
    shift = -norm.running_mean * scale
    if norm.bias is not None:
        shift = shift + norm.bias
    return scale, shift


class FoldedNormConv2d(Conv2d):
    """Detectron2's Conv2d -> norm -> activation, computed as one conv with the norm folded into it.

    In training the folded weight is recomputed at each call (gradients reach the conv's own weight); at
    inference it is cached until a parameter or buffer it comes from changes. A norm that is not a fixed
    affine map at call time (BatchNorm in train mode) runs as stock.
    """

    def forward(self, x):
        if not _is_fixed_affine(self.norm):
            return super().forward(x)
        weight, bias = self._folded_weight_and_bias()
        x = F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)
        if self.activation is not None:
            x = self.activation(x)
        return x

    def _sources(self):
        return [t for t in (self.weight, self.bias, self.norm.weight, self.norm.bias,
                            self.norm.running_mean, self.norm.running_var) if t is not None]

    def _folded_weight_and_bias(self):
        sources = self._sources()
        needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in sources)
        if needs_grad:
            return self._fold()
        key = tuple((t.data_ptr(), t._version) for t in sources)
        cached = self.__dict__.get("_folded_cache")
        if cached is None or cached[0] != key:
            with torch.no_grad():
                cached = (key, *self._fold())
            self.__dict__["_folded_cache"] = cached
        return cached[1], cached[2]

    def _fold(self):
        scale, shift = _norm_scale_shift(self.norm)
        weight = self.weight * scale.reshape(-1, *([1] * (self.weight.dim() - 1)))
        bias = shift if self.bias is None else self.bias * scale + shift
        return weight, bias


def fold_norms(model):
    """Makes each Detectron2 ``Conv2d`` of ``model`` whose norm is FrozenBatchNorm2d or BatchNorm a
    `FoldedNormConv2d` (in place; BatchNorm folds only while in eval mode). Returns how many were made."""
    count = 0
    for module in model.modules():
        if type(module) is Conv2d and isinstance(
                module.norm, (FrozenBatchNorm2d, torch.nn.BatchNorm2d, torch.nn.SyncBatchNorm)):
            module.__class__ = FoldedNormConv2d
            count += 1
    return count


def unfold_norms(model):
    """Undoes `fold_norms` (in place): every `FoldedNormConv2d` becomes a stock ``Conv2d`` again."""
    for module in model.modules():
        if type(module) is FoldedNormConv2d:
            module.__dict__.pop("_folded_cache", None)
            module.__class__ = Conv2d
    return model


def _fold_norms_enabled(cfg):
    return cfg.get("SEG_D2", {}).get("FOLD_NORMS", True)  # True also for configs without seg_d2's keys


def speed_up_built_models(defaults_module):
    """Wraps ``defaults_module.build_model`` (``detectron2.engine.defaults``) so the models it builds get
    `fold_norms` when the config asks for it (the default)."""
    build_model = defaults_module.build_model
    if getattr(build_model, "folds_norms", False):
        return

    @functools.wraps(build_model)
    def build_model_with_folded_norms(cfg):
        model = build_model(cfg)
        if _fold_norms_enabled(cfg):
            fold_norms(model)
        return model

    build_model_with_folded_norms.folds_norms = True
    defaults_module.build_model = build_model_with_folded_norms


# Applied here rather than through a seg_d2.compat ModulePatch because this module needs Detectron2 built
# (imported right away, the wrap applies at once); DefaultTrainer and DefaultPredictor look build_model up
# in that module at call time, so every later call goes through the wrap.
speed_up_built_models(importlib.import_module("detectron2.engine.defaults"))
