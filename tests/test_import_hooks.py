"""seg_d2.compat.import_hooks on small packages written by each test (unique names, removed afterwards)."""
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import textwrap
import uuid

import pytest

from seg_d2.compat.import_hooks import (
    ModulePatch,
    call_when_imported,
    finds_elsewhere,
    install_patches,
    lazy_attributes,
    supply_if_missing,
)


@pytest.fixture
def make_package(tmp_path, monkeypatch):
    """write(files) -> a fresh top-level name; files {relative path: source} go under that package."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))  # finders a test installs go with it
    names = []

    def write(files):
        name = f"hooktest_{uuid.uuid4().hex[:8]}"
        names.append(name)
        for path, source in {"__init__.py": "", **files}.items():
            target = tmp_path / name / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(textwrap.dedent(source).replace("PKG", name))
        importlib.invalidate_caches()
        return name

    yield write
    for module in [m for m in sys.modules if m.split(".")[0] in names]:
        del sys.modules[module]


def test_call_waits_until_the_package_module_that_imported_the_trigger_is_complete(make_package):
    """The case seg_d2 meets: ``import seg_d2.config`` imports Detectron2 before it defines its names, and the
    registration called on Detectron2's import imports seg_d2.config's names."""
    trigger = make_package({})
    pkg = make_package({
        "first.py": f"import {trigger}\nNAME = 'defined after the trigger import'\n",
        "second.py": "from PKG.first import NAME\n",
    })
    calls = []

    def callback():
        calls.append(importlib.import_module(f"{pkg}.second").NAME)

    finders = list(sys.meta_path)
    call_when_imported(trigger, callback, pkg)
    assert calls == [] and len(sys.meta_path) == len(finders) + 1
    importlib.import_module(f"{pkg}.first")
    assert calls == ["defined after the trigger import"]
    assert sys.meta_path == finders  # called: nothing more is watched


def test_call_on_the_trigger_import_and_only_once(make_package):
    trigger, pkg = make_package({"sub.py": ""}), make_package({})
    calls = []
    call_when_imported(trigger, lambda: calls.append(sys.modules[trigger].__name__), pkg)
    importlib.import_module(trigger)
    importlib.import_module(f"{trigger}.sub")
    assert calls == [trigger]


def test_call_at_once_when_the_trigger_is_already_imported(make_package):
    trigger, pkg = make_package({}), make_package({})
    importlib.import_module(trigger)
    calls = []
    call_when_imported(trigger, lambda: calls.append(1), pkg)
    assert calls == [1]


def test_supply_if_missing_supplies_only_a_missing_module(make_package):
    pkg = make_package({"present.py": "ORIGIN = 'file'\n", "replacement.py": "ORIGIN = 'supplied'\n"})
    supplied = lambda: importlib.import_module(f"{pkg}.replacement")  # noqa: E731
    supply_if_missing(f"{pkg}.missing", supplied)
    supply_if_missing(f"{pkg}.present", supplied)
    path = importlib.import_module(pkg).__path__
    assert not finds_elsewhere(f"{pkg}.missing", path) and finds_elsewhere(f"{pkg}.present", path)
    from_missing = importlib.import_module(f"{pkg}.missing")
    assert from_missing is sys.modules[f"{pkg}.replacement"] and from_missing.ORIGIN == "supplied"
    assert sys.modules[f"{pkg}.missing"] is from_missing
    assert importlib.import_module(f"{pkg}.present").ORIGIN == "file"


class _MemoryFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves one module from a string, as an editable install's finder serves its package (not on sys.path)."""

    def __init__(self, name, source):
        self.name, self.source = name, source

    def find_spec(self, fullname, path=None, target=None):
        return importlib.util.spec_from_loader(fullname, self) if fullname == self.name else None

    def exec_module(self, module):
        exec(self.source, module.__dict__)

    def get_source(self, fullname):
        return self.source


def test_patches_reach_a_module_only_another_meta_path_finder_finds(monkeypatch):
    name = f"hooktest_memory_{uuid.uuid4().hex[:8]}"
    monkeypatch.setattr(sys, "meta_path", sys.meta_path + [_MemoryFinder(name, "VALUE = 1\n")])
    seen = []
    install_patches([ModulePatch(name, after=lambda m: seen.append(m.VALUE), before=lambda spec: seen.append(spec.name))])
    try:
        module = importlib.import_module(name)
        assert seen == [name, 1]
        assert module.__loader__.get_source(name) == "VALUE = 1\n"  # other loader methods: the module's own
    finally:
        sys.modules.pop(name, None)


def test_lazy_attributes_import_names_and_submodules_on_first_use(make_package):
    pkg = make_package({
        "__init__.py": ("from seg_d2.compat.import_hooks import lazy_attributes\n"
                        "__getattr__, __dir__ = lazy_attributes(__name__, {'thing': 'things'})\n"),
        "things.py": "thing = 'a thing'\n",
        "other.py": "",
    })
    package = importlib.import_module(pkg)
    assert f"{pkg}.things" not in sys.modules and "thing" in dir(package)
    assert package.thing == "a thing" and f"{pkg}.things" in sys.modules
    assert package.other is sys.modules[f"{pkg}.other"]
    with pytest.raises(AttributeError, match="no attribute 'absent'"):
        package.absent  # noqa: B018
    assert not hasattr(package, "__wrapped__")

