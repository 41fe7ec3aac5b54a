"""The CPU thread policy (seg_d2.engine.threads): idle cores read from a /proc/stat written here, the
count it sets, and what a user's own setting overrides."""
import pytest
import torch

import seg_d2  # noqa: F401  (first: makes Detectron2 whole)
from seg_d2.engine import threads
from seg_d2.engine.threads import CPULoad, ThreadPolicy, threads_for_idle_cores, user_thread_setting


@pytest.fixture(autouse=True)
def two_cores_no_env(monkeypatch):
    """A 2-core machine, no thread variables set; torch's thread count restored afterwards."""
    monkeypatch.setattr(threads, "_usable_cores", lambda: 2)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


class FakeMachine:
    """/proc/stat and this process's CPU time under the test's control (100 ticks per second)."""

    def __init__(self, monkeypatch, tmp_path):
        self.path = tmp_path / "stat"
        self.now, self.busy_ticks, self.own_s = 0.0, 0, 0.0
        self.write()
        monkeypatch.setattr(threads.os, "sysconf", lambda name: 100)
        monkeypatch.setattr(threads.os, "times", lambda: type("T", (), {"user": self.own_s, "system": 0.0}))
        monkeypatch.setattr(threads.time, "monotonic", lambda: self.now)

    def write(self):
        # user nice system idle iowait irq softirq steal guest guest_nice
        user, system, steal = self.busy_ticks // 2, self.busy_ticks // 4, self.busy_ticks - self.busy_ticks // 2 - self.busy_ticks // 4
        self.path.write_text(f"cpu  {user} 0 {system} 12345 77 0 0 {steal} 0 0\ncpu0 ...\n")

    def run(self, seconds, others_cores, own_cores):
        self.now += seconds
        self.own_s += seconds * own_cores
        self.busy_ticks += round(100 * seconds * (others_cores + own_cores))
        self.write()


@pytest.mark.parametrize("others, expected", [(0.0, 2), (0.2, 2), (0.3, 1), (1.0, 1), (1.9, 1)])
def test_one_thread_per_core_at_least_three_quarters_idle(others, expected):
    assert threads_for_idle_cores(others, max_threads=8) == expected


def test_never_more_than_max_threads():
    assert threads_for_idle_cores(0.0, max_threads=1) == 1


def test_others_load_excludes_this_process(monkeypatch, tmp_path):
    machine = FakeMachine(monkeypatch, tmp_path)
    load = CPULoad(str(machine.path))
    machine.run(10.0, others_cores=0.5, own_cores=1.5)
    assert load.others_busy_cores() == pytest.approx(0.5)
    machine.run(5.0, others_cores=1.25, own_cores=0.0)
    assert load.others_busy_cores() == pytest.approx(1.25)


def test_no_proc_stat_keeps_torch_threads(tmp_path):
    load = CPULoad(str(tmp_path / "missing"))
    assert not load.available and load.others_busy_cores() is None


@pytest.fixture
def machine(monkeypatch, tmp_path):
    machine = FakeMachine(monkeypatch, tmp_path)
    monkeypatch.setattr(threads, "CPULoad", lambda: CPULoad(str(machine.path)))
    monkeypatch.setattr(threads.time, "sleep", lambda s: machine.run(s, others_cores=0.0, own_cores=0.0))
    return machine


def test_by_default_the_count_is_chosen_once_and_kept(machine):
    policy = ThreadPolicy(num_threads=0, period_s=20.0, max_threads=2)
    policy.before_train()
    assert torch.get_num_threads() == 2 and policy.threads == 2  # idle machine
    machine.run(25.0, others_cores=1.0, own_cores=1.0)
    policy.after_step()
    assert torch.get_num_threads() == 2  # another job took a core: kept, so the run stays reproducible


def test_a_resumed_run_keeps_its_checkpoints_count(machine):
    policy = ThreadPolicy(num_threads=0, max_threads=2)
    policy.resume_with(1)
    policy.before_train()  # the machine is idle, yet the count of the run being resumed is kept
    assert torch.get_num_threads() == 1 and policy.threads == 1
    fixed = ThreadPolicy(num_threads=2, max_threads=2)
    fixed.resume_with(1)
    fixed.before_train()
    assert torch.get_num_threads() == 2  # the user's own setting wins


def test_minus_one_follows_the_load(machine):
    policy = ThreadPolicy(num_threads=-1, period_s=20.0, max_threads=2)
    policy.before_train()
    assert policy.threads is None
    assert torch.get_num_threads() == 2  # idle machine
    machine.run(10.0, others_cores=1.0, own_cores=1.0)
    policy.after_step()
    assert torch.get_num_threads() == 2  # not re-checked before period_s
    machine.run(15.0, others_cores=1.0, own_cores=1.0)
    policy.after_step()
    assert torch.get_num_threads() == 1  # another job took a core
    machine.run(25.0, others_cores=0.1, own_cores=1.0)
    policy.after_step()
    assert torch.get_num_threads() == 2  # and gave it back


def test_user_settings_win(monkeypatch):
    assert user_thread_setting(0) is None
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert user_thread_setting(0) == 3
    assert user_thread_setting(2) == 2  # the config's SEG_D2.NUM_THREADS before the environment
    ThreadPolicy(num_threads=0, max_threads=2).before_train()
    assert torch.get_num_threads() == 3


def test_torch_threads_restored_after_training():
    torch.set_num_threads(2)
    policy = ThreadPolicy(num_threads=1)
    policy.before_train()
    assert torch.get_num_threads() == 1
    policy.after_train()
    assert torch.get_num_threads() == 2
