"""Scenarios for tests/engine/test_launch.py, run as a script so spawned workers can import them."""
import socket
import sys
from datetime import timedelta

import seg_d2  # noqa: F401

import torch.distributed as dist
from detectron2.utils import comm

from seg_d2.engine import launch


def report_ranks():
    world = comm.get_world_size()
    gathered = comm.all_gather((comm.get_rank(), comm.get_local_rank(), comm.get_local_size(), dist.get_backend()))
    if comm.is_main_process():
        print("RANKS", world, sorted(gathered))


def crash_on_rank_one():
    if comm.get_rank() == 1:
        raise RuntimeError("worker one failed on purpose")
    comm.synchronize()  # rank 0 would wait here forever if the failure were not propagated


def main(case):
    short = timedelta(seconds=60)
    if case == "ranks":
        launch(report_ranks, 2, dist_url="auto", timeout=short)
    elif case == "crash":
        launch(crash_on_rank_one, 2, dist_url="auto", timeout=short)
    elif case == "bad-url":
        launch(report_ranks, 2, dist_url="udp://nowhere", timeout=short)
    elif case == "port-in-use":
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            launch(report_ranks, 2, dist_url=f"tcp://127.0.0.1:{busy.getsockname()[1]}", timeout=short)
    elif case == "torchrun":
        launch(report_ranks, 1)  # the process count comes from torchrun's environment


if __name__ == "__main__":
    main(sys.argv[1])
