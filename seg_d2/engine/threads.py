"""How many CPU threads torch uses while training: one per core that other processes leave idle.

By default the count is chosen once, before training, and kept for the whole run (and by a run resumed from
its checkpoints): on a CPU the thread count decides the order of floating-point sums, so a count that changed
mid-run would make a seeded run, and a resumed one, differ from itself in the last bits. ``SEG_D2.NUM_THREADS
-1`` follows the load instead (re-checked every 20 s), for speed on a machine whose load changes.

Why: on a shared machine an OpenMP thread without a core of its own stalls every parallel region of its
process, so torch's default (one thread per core) can run several times slower than one thread (measured
3.1x on 2 cores beside other jobs, see docs/speed.md), while on an idle machine the extra threads pay.
The other processes' load is read from ``/proc/stat`` (busy time of all CPUs) minus this process's own
CPU time, so our own threads never count as load. Where ``/proc/stat`` is missing (not Linux) the policy
keeps torch's setting.
"""
import logging
import math
import os
import time

import torch
from detectron2.engine import HookBase

__all__ = ["CPULoad", "ThreadPolicy", "threads_for_idle_cores", "user_thread_setting"]

logger = logging.getLogger(__name__)

# A thread is added only for a core that is at least this idle: a core busy a quarter of the time
# already makes the second thread the slow one that every parallel region waits for.
_MIN_IDLE_SHARE = 0.75


def user_thread_setting(num_threads=0):
    """The thread count the user chose: ``num_threads`` (> 0, e.g. SEG_D2.NUM_THREADS), else the one an
    OMP_NUM_THREADS / MKL_NUM_THREADS environment variable set; None when it is left to the policy."""
    if num_threads > 0:
        return num_threads
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return None


def _usable_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class CPULoad:
    """Cores kept busy by *other* processes since the previous call (or since construction)."""

    def __init__(self, stat_path="/proc/stat"):
        self._stat_path = stat_path
        self._ticks_per_s = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._last = self._sample()

    @property
    def available(self):
        return self._last is not None

    def _sample(self):
        try:
            with open(self._stat_path) as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        # user nice system idle iowait irq softirq steal ...: idle and iowait are free time; steal (the
        # hypervisor running other machines) is a core this process cannot have either.
        busy_s = (sum(fields[:8]) - fields[3] - fields[4]) / self._ticks_per_s
        own = os.times()
        return time.monotonic(), busy_s, own.user + own.system

    def seconds_since_sample(self):
        return time.monotonic() - self._last[0]

    def others_busy_cores(self):
        """Mean number of cores other processes used since the last call; None without /proc/stat or
        when no time has passed."""
        now = self._sample()
        last, self._last = self._last, now
        if now is None or last is None or now[0] <= last[0]:
            return None
        others_s = (now[1] - last[1]) - (now[2] - last[2])
        return max(0.0, others_s / (now[0] - last[0]))


def threads_for_idle_cores(others_busy_cores, max_threads):
    """One thread per core that is at least ``_MIN_IDLE_SHARE`` idle, at least 1, at most ``max_threads``."""
    idle_cores = _usable_cores() - others_busy_cores
    return max(1, min(max_threads, math.floor(idle_cores + 1 - _MIN_IDLE_SHARE)))


class ThreadPolicy(HookBase):
    """Training hook: sets torch's CPU threads before training and restores the count torch had once
    training (and an evaluation hook registered before this one) is done.

    Args:
        num_threads: > 0 fixes the count (config SEG_D2.NUM_THREADS); 0 chooses one thread per idle core once,
            before training, and keeps it (:meth:`resume_with` keeps a resumed run's); -1 re-checks the load every
            ``period_s`` seconds. OMP_NUM_THREADS / MKL_NUM_THREADS, when set, fix the count for 0 and -1.
        period_s: seconds between checks when following the load.
        max_threads: most threads used (default: torch's own count when the hook is made).
    """

    def __init__(self, num_threads=0, period_s=20.0, max_threads=None):
        self._fixed = user_thread_setting(num_threads)
        self._follow_load = self._fixed is None and num_threads < 0
        self._period_s = period_s
        self._max_threads = max_threads or torch.get_num_threads()
        self._load = CPULoad()
        self._next_check = 0.0
        self._kept = None

    @property
    def fixed_by_user(self):
        return self._fixed

    @property
    def threads(self):
        """The count this run keeps: the user's, the chosen one (None before training starts), or None when it
        follows the load."""
        return None if self._follow_load else (self._fixed or self._kept)

    def resume_with(self, threads):
        """Keep ``threads``, the count of the run a resume continues, unless the user fixed one or the policy
        follows the load."""
        if self._fixed is None and not self._follow_load and threads:
            self._kept = threads

    def before_train(self):
        self._threads_before = torch.get_num_threads()
        if self._fixed is not None:
            self._set(self._fixed, "as set by the user")
        elif self._kept is not None:
            self._set(self._kept, "as in the run this one resumes")
        elif not self._load.available:
            logger.info("No /proc/stat: keeping torch's %d CPU threads", torch.get_num_threads())
            self._kept = torch.get_num_threads()
        else:
            # the first look at the other processes' load spans at least half a second (this one idle meanwhile)
            time.sleep(max(0.0, 0.5 - self._load.seconds_since_sample()))
            self._check()
            self._kept = None if self._follow_load else torch.get_num_threads()

    def after_step(self):
        if self._follow_load and self._load.available and time.monotonic() >= self._next_check:
            self._check()

    def after_train(self):
        # Registered after the evaluation hook: the final evaluation ran with the policy's threads; the
        # process (e.g. a test session running many trainings) gets torch's own setting back.
        torch.set_num_threads(self._threads_before)

    def _check(self):
        self._next_check = time.monotonic() + self._period_s
        others = self._load.others_busy_cores()
        if others is not None:
            threads = threads_for_idle_cores(others, self._max_threads)
            self._set(threads, f"other processes keep {others:.1f} of {_usable_cores()} cores busy")

    @staticmethod
    def _set(threads, reason):
        if threads != torch.get_num_threads():
            logger.info("CPU threads: %d -> %d (%s)", torch.get_num_threads(), threads, reason)
            torch.set_num_threads(threads)
