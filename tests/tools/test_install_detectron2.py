"""tools/install_detectron2.py: which Detectron2 it finds, and what it leaves alone."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "install_detectron2.py"


def _state_with(tmp_path, *files):
    package = tmp_path / "detectron2"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    for name, text in files:
        (package / name).write_text(text)
    code = ("import importlib.util, sys\n"
            f"spec = importlib.util.spec_from_file_location('installer', {str(TOOL)!r})\n"
            "installer = importlib.util.module_from_spec(spec); spec.loader.exec_module(installer)\n"
            "print(installer.installed_state(), installer.BUILD_ID)\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_compiled_detectron2_is_left_untouched(tmp_path):
    state, _ = _state_with(tmp_path, ("_C.cpython-311-x86_64-linux-gnu.so", ""))
    assert state == "compiled"


def test_current_build_is_recognised_and_older_recipe_is_stale(tmp_path):
    state, build_id = _state_with(tmp_path / "old", ("SEG_D2_BUILD_ID", "not-this-recipe\n"))
    assert state == "stale"
    assert _state_with(tmp_path / "new", ("SEG_D2_BUILD_ID", build_id + "\n"))[0] == "current"
