"""Start training/evaluation on one or many processes, on GPUs (NCCL) or CPUs (Gloo).

Detectron2 v0.6's ``launch`` requires CUDA; this one also runs CPU-only process groups, and runs
under ``torchrun`` (env:// rendezvous), which is how SLURM/Kubernetes jobs start workers. On a
CPU-only machine ``num_processes_per_machine`` (``--num-gpus`` in tools/train_net.py) counts processes.
"""
import gc
import logging
import os
import socket
import sys
import traceback
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from detectron2.utils import comm

__all__ = ["launch", "default_backend", "running_under_torchrun", "DEFAULT_TIMEOUT"]

DEFAULT_TIMEOUT = timedelta(minutes=30)
logger = logging.getLogger(__name__)


def default_backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def running_under_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ and not dist.is_initialized()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _check_dist_url(dist_url: str, num_machines: int) -> str:
    if dist_url == "auto":
        if num_machines != 1:
            raise ValueError('--dist-url "auto" only works on one machine; give tcp://HOST:PORT of machine 0')
        return f"tcp://127.0.0.1:{_free_port()}"
    if not (dist_url.startswith("tcp://") or dist_url.startswith("file://") or dist_url == "env://"):
        raise ValueError(f"--dist-url {dist_url!r}: expected 'auto', 'env://', 'tcp://HOST:PORT' or 'file:///path'")
    return dist_url


def _make_local_group(num_per_machine: int, num_machines: int, machine_rank: int) -> None:
    # Detectron2's comm.get_local_rank()/get_local_size() read this group; every rank must create all.
    for machine in range(num_machines):
        ranks = list(range(machine * num_per_machine, (machine + 1) * num_per_machine))
        group = dist.new_group(ranks)
        if machine == machine_rank:
            comm._LOCAL_PROCESS_GROUP = group


def _barrier_before_teardown():
    # A rank that tears its Gloo connections down while a peer still sends on them can abort the peer
    # ("terminate called without an active exception"); finish together, then destroy.
    comm.synchronize()


def _destroy_process_groups():
    # Detectron2's comm keeps its own references to process groups (the local group, and the
    # lru_cached Gloo group). A group that outlives destroy_process_group is freed during interpreter
    # finalisation, where Gloo's threads abort the process ("terminate called without an active
    # exception": 3 of 40 two-rank torchrun runs under load before this, 0 of 75 after).
    dist.destroy_process_group()
    comm._LOCAL_PROCESS_GROUP = None
    comm._get_global_gloo_group.cache_clear()
    gc.collect()


def _init_worker(local_rank, world_size, num_per_machine, num_machines, machine_rank, dist_url, backend, timeout):
    global_rank = machine_rank * num_per_machine + local_rank
    try:
        dist.init_process_group(
            backend=backend, init_method=dist_url, world_size=world_size, rank=global_rank, timeout=timeout
        )
    except Exception as e:
        raise RuntimeError(f"process group initialisation failed for rank {global_rank} at {dist_url}: {e}") from e
    _make_local_group(num_per_machine, num_machines, machine_rank)
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    comm.synchronize()


def _worker(local_rank, main_func, world_size, num_per_machine, num_machines, machine_rank, dist_url, backend,
            timeout, args):
    _init_worker(local_rank, world_size, num_per_machine, num_machines, machine_rank, dist_url, backend, timeout)
    try:
        main_func(*args)
        _barrier_before_teardown()
    except Exception:
        # The parent re-raises whichever failure it sees first, often a peer's "connection closed";
        # print each rank's own traceback so the root cause is always in the log.
        rank = machine_rank * num_per_machine + local_rank
        print(f"seg_d2.engine.launch: rank {rank} failed:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
        raise
    finally:
        _destroy_process_groups()


def _run_under_torchrun(main_func, backend, timeout, args):
    world_size = int(os.environ["WORLD_SIZE"])
    local_size = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    machine_rank = int(os.environ.get("GROUP_RANK", int(os.environ["RANK"]) // local_size))
    _init_worker(int(os.environ["LOCAL_RANK"]), world_size, local_size, world_size // local_size, machine_rank,
                 "env://", backend, timeout)
    try:
        result = main_func(*args)
        _barrier_before_teardown()
        return result
    finally:
        _destroy_process_groups()


def launch(main_func, num_processes_per_machine, num_machines=1, machine_rank=0, dist_url="auto", args=(),
           backend=None, timeout=DEFAULT_TIMEOUT):
    """Run ``main_func(*args)`` on every process; returns its result when there is one process.

    A worker that raises ends the whole job: the others are terminated and the error is re-raised.
    """
    backend = backend or default_backend()
    if running_under_torchrun():
        return _run_under_torchrun(main_func, backend, timeout, args)
    world_size = num_processes_per_machine * num_machines
    if world_size <= 1:
        return main_func(*args)
    if backend == "nccl" and torch.cuda.device_count() < num_processes_per_machine:
        raise ValueError(f"{num_processes_per_machine} processes per machine with NCCL need as many GPUs; "
                         f"{torch.cuda.device_count()} visible")
    dist_url = _check_dist_url(dist_url, num_machines)
    logger.info("launching %d processes (%s) at %s", world_size, backend, dist_url)
    mp.start_processes(
        _worker,
        nprocs=num_processes_per_machine,
        args=(main_func, world_size, num_processes_per_machine, num_machines, machine_rank, dist_url, backend,
              timeout, args),
        join=True,
        start_method="spawn",
    )
