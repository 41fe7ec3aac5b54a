#!/usr/bin/env python
"""Run Detectron2 v0.6's own test suite against the installed Detectron2 with ``import seg_d2``.

  run_detectron2_tests.py [--suite DIR] [--exclusions FILE] [--junit-xml FILE] [-- PYTEST_ARGS...]

The suite (``../shared/detectron2-v0.6-tests`` beside the repository by default, or $SEG_D2_D2_TESTS) is
copied into a temporary folder with a conftest that imports seg_d2, refuses network connections and
points the model-zoo cache and ``datasets/`` at empty folders, so every machine sees the same failures.
Fails (exit 1) on any failure or error not in the exclusion list, and on any exclusion that did not
fail (it passed, or names no test): the list must stay exactly the set of tests that cannot pass here.
Exits 0 with a message when the suite is absent (a user's clone has no ../shared).
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SUITE = REPO.parent / "shared" / "detectron2-v0.6-tests"
DEFAULT_EXCLUSIONS = REPO / "tests" / "detectron2_v0.6_exclusions.txt"
CATEGORIES = ("network", "coco-files", "caffe2", "other")

CONFTEST = '''"""Written by seg_d2's tools/run_detectron2_tests.py for Detectron2's own suite."""
import socket

import seg_d2  # noqa: F401  (makes Detectron2 v0.6 whole on today's stack)

_LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "0.0.0.0")


def _refuse_remote(host):
    if host is not None and str(host) not in _LOCAL_HOSTS and not str(host).startswith("127."):
        raise OSError(f"no network in Detectron2's suite under seg_d2 (tools/run_detectron2_tests.py): {host}")


def _local_only(connect):
    def local_connect(sock, address):
        if sock.family != socket.AF_UNIX:
            _refuse_remote(address[0])
        return connect(sock, address)

    return local_connect


def _local_getaddrinfo(host, *args, _getaddrinfo=socket.getaddrinfo, **kwargs):
    _refuse_remote(host)
    return _getaddrinfo(host, *args, **kwargs)


socket.socket.connect = _local_only(socket.socket.connect)
socket.socket.connect_ex = _local_only(socket.socket.connect_ex)
socket.getaddrinfo = _local_getaddrinfo
'''


class ExclusionError(ValueError):
    pass


@dataclass(frozen=True)
class Exclusion:
    test_id: str
    category: str
    reason: str


def read_exclusions(path):
    """``test id | category | reason`` lines; blank lines and ``#`` comments are ignored."""
    exclusions = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = [f.strip() for f in line.split("|")]
        where = f"{path}:{number}"
        if len(fields) != 3 or not all(fields):
            raise ExclusionError(f"{where}: expected 'test id | category | reason', got {line!r}")
        test_id, category, reason = fields
        if category not in CATEGORIES:
            raise ExclusionError(f"{where}: category {category!r} is not one of {', '.join(CATEGORIES)}")
        if test_id in exclusions:
            raise ExclusionError(f"{where}: {test_id} is listed twice")
        exclusions[test_id] = Exclusion(test_id, category, reason)
    return exclusions


def _test_id(case):
    """pytest's node id from a junit (xunit1) testcase: file::Class::name, or file::name."""
    file, classname, name = case.get("file"), case.get("classname", ""), case.get("name", "")
    if not file:  # a collection error: its name is the module
        return name
    module = file[: -len(".py")].replace("/", ".")
    cls = classname[len(module) + 1 :] if classname.startswith(module + ".") else ""
    return "::".join(part for part in (file, cls, name) if part)


def read_outcomes(junit_xml):
    """{test id: (outcome, first line of its message)}, outcome in passed/failed/error/skipped."""
    outcomes = {}
    for case in ET.parse(junit_xml).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed"}.get(child.tag, child.tag)
                message = (child.get("message") or child.text or "").strip().splitlines()[:1]
                message = message[0] if message else ""
                break
        outcomes[_test_id(case)] = (outcome, message)
    return outcomes


def compare(outcomes, exclusions, whole_suite):
    """(unexpected failures, stale exclusions): failures not excluded, exclusions that did not fail."""
    failing = {t for t, (outcome, _) in outcomes.items() if outcome in ("failed", "error")}
    unexpected = sorted(failing - exclusions.keys())
    stale = []
    for test_id in sorted(exclusions.keys() - failing):
        if test_id in outcomes:
            stale.append((test_id, outcomes[test_id][0]))
        elif whole_suite:
            stale.append((test_id, "not in the suite"))
    return unexpected, stale


def _prepare(suite, workdir):
    shutil.copytree(suite / "tests", workdir / "tests", copy_function=shutil.copyfile)
    for folder, _, _ in os.walk(workdir / "tests"):  # the shared copy may be read-only; pytest writes caches
        os.chmod(folder, 0o755)
    (workdir / "conftest.py").write_text(CONFTEST)
    for empty in ("cache", "datasets"):
        (workdir / empty).mkdir()


def run_suite(workdir, pytest_args):
    junit = workdir / "junit.xml"
    env = dict(os.environ, FVCORE_CACHE=str(workdir / "cache"), DETECTRON2_DATASETS=str(workdir / "datasets"))
    # The suite skips its COCO-file tests when $CI is set; datasets/ is empty on every machine here, so
    # they run (and fail, as excluded) everywhere, and CI sees the outcomes a developer sees.
    env.pop("CI", None)
    command = [sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider",
               "--continue-on-collection-errors", "-o", "junit_family=xunit1", f"--junitxml={junit}",
               *(pytest_args or ["tests"])]
    subprocess.run(command, cwd=workdir, env=env, check=False)
    if not junit.is_file():
        raise RuntimeError(f"pytest wrote no {junit}; see its output above")
    return junit


def report(outcomes, exclusions, unexpected, stale, seconds):
    counts = {k: sum(1 for o, _ in outcomes.values() if o == k) for k in ("passed", "failed", "error", "skipped")}
    excluded = [exclusions[t].category for t, (o, _) in outcomes.items() if o in ("failed", "error") and t in exclusions]
    by_category = ", ".join(f"{c} {excluded.count(c)}" for c in CATEGORIES if c in excluded) or "none"
    print(f"\nDetectron2 v0.6's suite on seg_d2: {counts['passed']} passed, {counts['failed']} failed, "
          f"{counts['error']} errors, {counts['skipped']} skipped in {seconds:.0f} s; "
          f"{len(excluded)} failures on the exclusion list ({by_category}), {len(unexpected)} unexpected")
    for test_id in unexpected:
        print(f"UNEXPECTED {outcomes[test_id][0].upper()}: {test_id}: {outcomes[test_id][1]}")
    for test_id, outcome in stale:
        print(f"STALE EXCLUSION ({outcome}): {test_id} -- remove it from {DEFAULT_EXCLUSIONS.name} or fix why")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", type=Path, default=Path(os.environ.get("SEG_D2_D2_TESTS", DEFAULT_SUITE)))
    parser.add_argument("--exclusions", type=Path, default=DEFAULT_EXCLUSIONS)
    parser.add_argument("--junit-xml", type=Path, help="also keep pytest's junit XML here")
    parser.add_argument("pytest_args", nargs="*", help="after --: pytest arguments (default: the whole suite)")
    args = parser.parse_args(argv)
    if not (args.suite / "tests").is_dir():
        print(f"Skipping Detectron2's own test suite: {args.suite / 'tests'} is absent "
              "(it lies beside the repository on seg_d2's dev and CI machines; see docs/compat.md).")
        return 0
    exclusions = read_exclusions(args.exclusions)
    with tempfile.TemporaryDirectory(prefix="seg_d2-detectron2-tests-") as tmp:
        workdir = Path(tmp)
        _prepare(args.suite, workdir)
        start = time.perf_counter()
        junit = run_suite(workdir, args.pytest_args)
        seconds = time.perf_counter() - start
        if args.junit_xml:
            shutil.copyfile(junit, args.junit_xml)
        outcomes = read_outcomes(junit)
    unexpected, stale = compare(outcomes, exclusions, whole_suite=not args.pytest_args)
    report(outcomes, exclusions, unexpected, stale, seconds)
    return 1 if unexpected or stale else 0


if __name__ == "__main__":
    sys.exit(main())
