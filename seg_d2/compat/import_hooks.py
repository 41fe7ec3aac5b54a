"""Run a function on a module right after it is imported (or at once, if it already is).

A fix for a Detectron2 module is a `ModulePatch`: an optional ``before(spec)`` run just before the
module's code executes (for values read at import time, e.g. default arguments) and an optional
``after(module)`` run right after.
"""
import importlib.abc
import importlib.machinery
import sys
from dataclasses import dataclass
from typing import Callable, Dict, Optional


@dataclass(frozen=True)
class ModulePatch:
    module: str
    after: Optional[Callable] = None
    before: Optional[Callable] = None

    def apply_after(self, module):
        if self.after is not None:
            self.after(module)


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, loader, patch: ModulePatch):
        self._loader = loader
        self._patch = patch

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        undo = self._patch.before(module.__spec__) if self._patch.before else None
        try:
            self._loader.exec_module(module)
        finally:
            if undo is not None:
                undo()
        self._patch.apply_after(module)


class _PatchingFinder(importlib.abc.MetaPathFinder):
    def __init__(self, patches: Dict[str, ModulePatch]):
        self._patches = patches

    def find_spec(self, fullname, path=None, target=None):
        patch = self._patches.get(fullname)
        if patch is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _PatchingLoader(spec.loader, patch)
        return spec


def install_patches(patches):
    """Patch the modules already imported now, and the others when they are imported."""
    pending = {}
    for patch in patches:
        module = sys.modules.get(patch.module)
        if module is None:
            pending[patch.module] = patch
        else:
            patch.apply_after(module)
    if pending:
        sys.meta_path.insert(0, _PatchingFinder(pending))
