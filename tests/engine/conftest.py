"""Fixtures: run tools/train_net.py in a subprocess, to completion or until killed with SIGKILL (the tests use
pytest's importlib mode, so helpers shared by test modules are fixtures)."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _command(args):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return [sys.executable, str(ROOT / "tools" / "train_net.py"), *map(str, args)], env


def _train_net(*args, timeout=900):
    """The finished run of ``tools/train_net.py args`` (stdout, stderr, returncode)."""
    command, env = _command(args)
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def _train_net_killed(*args, when, delay, skip=0, timeout=900):
    """Run ``tools/train_net.py args`` and SIGKILL it (with its DataLoader workers) ``delay`` seconds after it
    logs a line containing ``when`` (after ``skip`` such lines); returns the log. Fails if the run ended first."""
    command, env = _command(args)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                               cwd=ROOT, start_new_session=True)
    log, deadline = [], time.monotonic() + timeout
    try:
        for line in process.stdout:
            log.append(line)
            if when in line and (skip := skip - 1) < 0:
                time.sleep(delay)
                os.killpg(process.pid, signal.SIGKILL)
                break
            assert time.monotonic() < deadline, "timed out waiting for " + when
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    text = "".join(log)
    assert process.returncode == -signal.SIGKILL, f"the run ended ({process.returncode}) before the kill:\n{text[-3000:]}"
    return text


@pytest.fixture(scope="session")
def train_net():
    return _train_net


@pytest.fixture(scope="session")
def train_net_killed():
    return _train_net_killed
