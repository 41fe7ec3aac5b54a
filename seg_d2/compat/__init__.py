"""Make Detectron2 v0.6 work on today's numpy, Pillow, setuptools, Python and PyTorch.

Everything here is applied once by ``import seg_d2`` and does nothing where Detectron2 is already
whole. seg_d2's own build of Detectron2 (tools/install_detectron2.py) imports seg_d2 at the end of
``detectron2/__init__.py``, so any import order works; with another Detectron2, import seg_d2 first.
Applying installs import hooks only (it imports neither torch nor Detectron2); each fix takes effect
when the module it fixes is imported:

- a missing compiled ``detectron2._C`` is replaced by :mod:`seg_d2.compat.c_ops` (PyTorch versions of
  every op it has) when ``detectron2._C`` is first imported, and ``torch.ops.detectron2.nms_rotated`` is
  registered then, as loading the compiled extension registers it (``detectron2.layers`` imports ``_C``);
- the other fixes are patches applied to one Detectron2 module each, right after that module is
  imported (see :mod:`seg_d2.compat.patches`), so nothing outside Detectron2 is changed.
"""
import importlib.util
import sys

from .import_hooks import finds_elsewhere, install_patches, supply_if_missing
from .patches import PATCHES

__all__ = ["apply", "has_compiled_ops"]

_applied = False


def has_compiled_ops() -> bool:
    """True when Detectron2's own compiled extension is installed (then seg_d2 leaves it alone)."""
    module = sys.modules.get("detectron2._C")
    if module is not None:
        return not getattr(module, "IS_SEG_D2_COMPAT", False)
    package = importlib.util.find_spec("detectron2")  # finds the package without importing it
    return package is not None and finds_elsewhere("detectron2._C", package.submodule_search_locations)


def _compat_ops():
    """seg_d2's PyTorch versions of the compiled ops, with ``torch.ops.detectron2.nms_rotated`` registered."""
    from . import c_ops

    c_ops.register_torch_ops()
    return c_ops


def apply() -> None:
    """Apply every fix; idempotent."""
    global _applied
    if _applied:
        return
    _applied = True
    supply_if_missing("detectron2._C", _compat_ops)  # a compiled _C, when found, is imported as usual
    install_patches(PATCHES)
