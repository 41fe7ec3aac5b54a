#!/usr/bin/env python
"""Install Detectron2 v0.6 from its PyPI sdist (`pb1-detectron2`), reproducibly and idempotently.

The sdist has no C++/CUDA sources, so its own setup.py cannot build; pip also refuses it because its
metadata has a direct-URL extra. We fetch the pinned file from the package index, check its hash, and
build it with a setup script of our own: the same packages (plus `detectron2.projects.*`), the
model-zoo configs included, no extension. Its `detectron2/__init__.py` ends by importing seg_d2, which
supplies the missing compiled ops and fixes v0.6 on today's stack, so `detectron2.*` may be imported
before or without `import seg_d2`. A Detectron2 that already has a compiled `_C` is left as is.

Usage: python tools/install_detectron2.py [--force]
"""
import argparse
import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PIN_FILE = ROOT / "requirements" / "detectron2.txt"
CACHE = ROOT / ".cache" / "sdist"

# Our build script for the unpacked sdist: pure Python, configs as package data.
SETUP_PY = '''
from setuptools import find_packages, setup

PROJECTS = {{
    "detectron2.projects.point_rend": "projects/PointRend/point_rend",
    "detectron2.projects.deeplab": "projects/DeepLab/deeplab",
    "detectron2.projects.panoptic_deeplab": "projects/Panoptic-DeepLab/panoptic_deeplab",
}}
setup(
    name="{name}",
    version="{version}",
    description="Detectron2 v0.6 Python sources, built without the C++ extension (ops from seg_d2.compat)",
    packages=find_packages(include=["detectron2", "detectron2.*"]) + list(PROJECTS),
    package_dir=PROJECTS,
    package_data={{"detectron2": ["SEG_D2_BUILD_ID"], "detectron2.model_zoo": ["configs/**/*.yaml", "configs/**/*.py"]}},
    python_requires=">=3.7",
)
'''


# Appended to this build's detectron2/__init__.py (see the module docstring).
INIT_TAIL = """
# seg_d2's build of Detectron2 v0.6 has no compiled extension: seg_d2.compat provides detectron2._C's
# ops in PyTorch and fixes v0.6 on today's numpy / Pillow / setuptools / Python / torch.
import seg_d2  # noqa: E402,F401
"""
# Changes whenever the build recipe does, so `make setup` rebuilds an install made by an older recipe.
BUILD_ID = hashlib.sha256((SETUP_PY + INIT_TAIL).encode()).hexdigest()[:16]
BUILD_MARKER = "SEG_D2_BUILD_ID"


def read_pin():
    text = PIN_FILE.read_text()
    m = re.search(r"^([\w.-]+)==([\w.]+)\s+--hash=sha256:([0-9a-f]{64})", text, re.M)
    if not m:
        sys.exit(f"{PIN_FILE}: expected a line 'NAME==VERSION --hash=sha256:HEX'")
    return m.group(1), m.group(2), m.group(3)


def installed_state():
    """'compiled', 'current' (this recipe's build), 'stale' (another pure-Python build) or None."""
    spec = importlib.util.find_spec("detectron2")  # finds the package without importing it
    if spec is None:
        return None
    package_dir = Path(spec.origin).parent
    if list(package_dir.glob("_C.*")):
        return "compiled"
    marker = package_dir / BUILD_MARKER
    return "current" if marker.is_file() and marker.read_text().strip() == BUILD_ID else "stale"


def index_url():
    env = os.environ.get("PIP_INDEX_URL")
    if env:
        return env.rstrip("/")
    out = subprocess.run(
        [sys.executable, "-m", "pip", "config", "get", "global.index-url"], capture_output=True, text=True
    )
    if out.returncode == 0 and out.stdout.strip():
        return out.stdout.strip().rstrip("/")
    from pip._internal.models.index import PyPI  # pip's default index, as `pip download` would use

    return PyPI.simple_url.rstrip("/")


def fetch_sdist(name, version, sha256):
    """Download (or reuse from .cache/) the pinned sdist through the PEP 691 simple API, hash-checked."""
    filename = f"{name}-{version}.tar.gz"
    target = CACHE / filename
    if target.exists() and hashlib.sha256(target.read_bytes()).hexdigest() == sha256:
        return target
    request = urllib.request.Request(
        f"{index_url()}/{name}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    with urllib.request.urlopen(request, timeout=120) as resp:
        files = json.load(resp)["files"]
    matches = [f for f in files if f["filename"] == filename]
    if not matches:
        sys.exit(f"{filename} is not on the package index")
    with urllib.request.urlopen(matches[0]["url"], timeout=300) as resp:
        data = resp.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        sys.exit(f"{filename}: sha256 {digest} does not match the pin {sha256} in {PIN_FILE}")
    CACHE.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return target


def build_and_install(sdist, name, version):
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp, filter="data")
        src = Path(tmp) / f"{name}-{version}"
        (src / "setup.py").write_text(SETUP_PY.format(name=name, version=version))
        init = src / "detectron2" / "__init__.py"
        init.write_text(init.read_text() + INIT_TAIL)
        (src / "detectron2" / BUILD_MARKER).write_text(BUILD_ID + "\n")
        for stale in ("setup.cfg", "pyproject.toml"):
            (src / stale).unlink(missing_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-q", str(src)],
            check=True,
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="reinstall even if Detectron2 is present")
    args = parser.parse_args()
    state = installed_state()
    if state == "compiled":
        print("detectron2 with a compiled _C is installed; leaving it untouched")
        return
    if state == "current" and not args.force:
        print("detectron2 (seg_d2's pure Python build) already installed")
        return
    name, version, sha256 = read_pin()
    build_and_install(fetch_sdist(name, version, sha256), name, version)
    print(f"installed {name}=={version} (pure Python; compiled ops provided by seg_d2.compat)")


if __name__ == "__main__":
    main()
