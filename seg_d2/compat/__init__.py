"""Make Detectron2 v0.6 work on today's numpy, Pillow, setuptools, Python and PyTorch.

Everything here is applied once by ``import seg_d2`` and does nothing where Detectron2 is already
whole. seg_d2's own build of Detectron2 (tools/install_detectron2.py) imports seg_d2 at the end of
``detectron2/__init__.py``, so any import order works; with another Detectron2, import seg_d2 first.

- a missing compiled ``detectron2._C`` is replaced by :mod:`seg_d2.compat.c_ops` (PyTorch versions of
  every op it has), and ``torch.ops.detectron2.nms_rotated`` is registered;
- the other fixes are patches applied to one Detectron2 module each, right after that module is
  imported (see :mod:`seg_d2.compat.patches`), so nothing outside Detectron2 is changed.
"""
import importlib.util
import sys

from .import_hooks import install_patches
from .patches import PATCHES

__all__ = ["apply", "has_compiled_ops"]

_applied = False


def has_compiled_ops() -> bool:
    """True when Detectron2's own compiled extension is installed (then seg_d2 leaves it alone)."""
    module = sys.modules.get("detectron2._C")
    if module is not None:
        return not getattr(module, "IS_SEG_D2_COMPAT", False)
    return importlib.util.find_spec("detectron2._C") is not None


def apply() -> None:
    """Apply every fix; idempotent."""
    global _applied
    if _applied:
        return
    _applied = True
    if not has_compiled_ops():
        from . import c_ops

        sys.modules["detectron2._C"] = c_ops
        c_ops.register_torch_ops()
    install_patches(PATCHES)
