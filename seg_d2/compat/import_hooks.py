"""Import machinery: run a function on a module right after it is imported (or at once, if it already is),
supply a module that is missing, run a function once a module is imported, and import a package's names
on first use.

A fix for a Detectron2 module is a `ModulePatch`: an optional ``before(spec)`` run just before the
module's code executes (for values read at import time, e.g. default arguments) and an optional
``after(module)`` run right after.
"""
import contextlib
import importlib
import importlib.abc
import importlib.util
import sys
import threading
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

    def __getattr__(self, name):  # get_source, get_resource_reader, is_package, ...: the module's own loader
        if name.startswith("__"):  # e.g. copy's and pickle's probes, made before _loader is set
            raise AttributeError(name)
        return getattr(self._loader, name)

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


class _Finder(importlib.abc.MetaPathFinder):
    """A finder of this module; each asks only the others (see _find_elsewhere)."""


def _find_elsewhere(fullname, path, target=None):
    """The spec the other finders in sys.meta_path give (PathFinder, or an editable install's finder), as
    if this module's finders were not there: each of them wraps or replaces only what those find."""
    for other in list(sys.meta_path):
        if isinstance(other, _Finder) or not hasattr(other, "find_spec"):
            continue
        spec = other.find_spec(fullname, path, target)
        if spec is not None:
            return spec
    return None


class _HookFinder(_Finder):
    """Finds a module as the other finders would, and wraps its loader to apply ``patch_for(name)``."""

    def patch_for(self, fullname) -> Optional[ModulePatch]:
        raise NotImplementedError

    def find_spec(self, fullname, path=None, target=None):
        patch = self.patch_for(fullname)
        if patch is None:
            return None
        spec = _find_elsewhere(fullname, path, target)
        if spec is not None and spec.loader is not None:
            spec.loader = _PatchingLoader(spec.loader, patch)
        return spec


class _PatchingFinder(_HookFinder):
    def __init__(self, patches: Dict[str, ModulePatch]):
        self._patches = patches

    def patch_for(self, fullname):
        return self._patches.get(fullname)


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


# ---------------------------------------------------------------------------------------------- missing modules
class _SupplyingLoader(importlib.abc.Loader):
    def __init__(self, supply):
        self._supply = supply

    def create_module(self, spec):
        return None  # a plain module, replaced below

    def exec_module(self, module):
        # The import system returns what sys.modules holds once this returns: the supplied module.
        sys.modules[module.__name__] = self._supply()


class _SupplyingFinder(_Finder):
    def __init__(self, name, supply):
        self._name, self._supply = name, supply

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self._name or _find_elsewhere(fullname, path, target) is not None:
            return None
        return importlib.util.spec_from_loader(fullname, _SupplyingLoader(self._supply))


def supply_if_missing(name, supply):
    """When module ``name`` is first imported and no finder finds it, import ``supply()``'s module as ``name``
    (``supply`` runs then, not now: it may import what ``name``'s importers import anyway)."""
    sys.meta_path.insert(0, _SupplyingFinder(name, supply))


def finds_elsewhere(name, path):
    """Whether a finder other than this module's finds module ``name`` in ``path`` (its package's __path__)."""
    return _find_elsewhere(name, path) is not None


# ---------------------------------------------------------------------------------------------- deferred calls
class _CallWhenImported(_HookFinder):
    """Calls ``callback`` once ``trigger`` is imported and no module of ``package`` is executing.

    A module of ``package`` whose import imported ``trigger`` is incomplete until its own code has run; a
    callback that imports that package's modules would meet it half-built (``from package.x import y``
    failing on a name defined further down). So the call waits for the outermost such import to finish.
    """

    def __init__(self, trigger, callback, package):
        self._trigger, self._callback, self._prefix = trigger, callback, package + "."
        self._executing = 0  # modules of ``package`` being executed, in any thread
        self._lock = threading.Lock()
        self._called = False
        self._trigger_patch = ModulePatch(trigger, after=self.call_if_due)

    def patch_for(self, fullname):
        if fullname == self._trigger:
            return self._trigger_patch
        if fullname.startswith(self._prefix):
            return ModulePatch(fullname, after=self.call_if_due, before=self._executing_one)
        return None

    def _executing_one(self, spec):
        with self._lock:
            self._executing += 1

        def done():
            with self._lock:
                self._executing -= 1

        return done

    def call_if_due(self, module=None):
        with self._lock:
            if self._called or self._executing or self._trigger not in sys.modules:
                return
            self._called = True
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)  # nothing more to watch
        self._callback()


def call_when_imported(trigger, callback, package):
    """Call ``callback()`` once, as soon as module ``trigger`` has been imported and no import of a module of
    ``package`` is under way (see :class:`_CallWhenImported`); at once if that holds now."""
    finder = _CallWhenImported(trigger, callback, package)
    sys.meta_path.insert(0, finder)
    finder.call_if_due()


# ---------------------------------------------------------------------------------------------- lazy names
def lazy_attributes(module_name, attributes):
    """``__getattr__`` and ``__dir__`` for module ``module_name`` (PEP 562): each name of ``attributes``
    ({name: submodule}) is imported from its submodule on first use, and so is any submodule by its name."""
    module = sys.modules[module_name]

    def __getattr__(name):
        if name in attributes:
            value = getattr(importlib.import_module(f".{attributes[name]}", module_name), name)
        elif not name.startswith("__") and importlib.util.find_spec(f"{module_name}.{name}") is not None:
            value = importlib.import_module(f".{name}", module_name)
        else:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        setattr(module, name, value)  # later look-ups skip this function
        return value

    def __dir__():
        return sorted(set(vars(module)) | set(attributes))

    return __getattr__, __dir__
