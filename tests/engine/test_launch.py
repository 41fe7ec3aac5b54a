"""Multi-process launch on CPU (Gloo): ranks, torchrun, and failures that end the job instead of hanging."""
import os
import subprocess
import sys
from pathlib import Path

CASES = Path(__file__).with_name("dist_cases.py")
ROOT = Path(__file__).resolve().parents[2]


def run(*command, timeout=240):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def test_two_cpu_processes_get_ranks_and_local_group():
    out = run(sys.executable, str(CASES), "ranks")
    assert out.returncode == 0, out.stderr
    assert "RANKS 2 [(0, 0, 2, 'gloo'), (1, 1, 2, 'gloo')]" in out.stdout


def test_torchrun_env_rendezvous():
    torchrun = Path(sys.executable).with_name("torchrun")
    out = run(str(torchrun), "--standalone", "--nproc_per_node", "2", str(CASES), "torchrun")
    assert out.returncode == 0, out.stderr
    assert "RANKS 2 [(0, 0, 2, 'gloo'), (1, 1, 2, 'gloo')]" in out.stdout


def test_crashing_worker_ends_the_job():
    out = run(sys.executable, str(CASES), "crash", timeout=120)
    assert out.returncode != 0
    assert "worker one failed on purpose" in out.stderr


def test_bad_dist_url_is_refused():
    out = run(sys.executable, str(CASES), "bad-url", timeout=60)
    assert out.returncode != 0
    assert "--dist-url 'udp://nowhere'" in out.stderr


def test_port_in_use_fails_clearly():
    out = run(sys.executable, str(CASES), "port-in-use", timeout=180)
    assert out.returncode != 0
    assert "process group initialisation failed" in out.stderr
