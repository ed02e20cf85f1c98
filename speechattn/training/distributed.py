"""torchrun / DistributedDataParallel helpers (gloo on CPU; on CUDA, NCCL for GPU tensors and gloo for CPU ones).

Launch: ``torchrun --nproc_per_node=2 -m speechattn.bin.train ...``; torchrun sets RANK, WORLD_SIZE,
LOCAL_RANK and MASTER_ADDR/PORT, and this module turns them into a process group.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def backend_for(device: torch.device) -> str:
    """The process group's backend for training on ``device``.

    CPU: ``gloo``. CUDA: ``cpu:gloo,cuda:nccl``, NCCL for the gradients (CUDA tensors) and gloo for the
    loss and accuracy sums of :func:`all_reduce_sum`, which are CPU tensors: plain ``nccl`` has no CPU
    backend and would fail on them at the end of the first epoch.

    Example:
        >>> backend_for(torch.device("cpu")), backend_for(torch.device("cuda", 1))
        ('gloo', 'cpu:gloo,cuda:nccl')
    """
    return "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"


def init_distributed(device: torch.device) -> DistInfo:
    """Initialise the process group when launched by torchrun; a no-op for a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend=backend_for(device))
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def all_reduce_sum(values: list[float], info: DistInfo) -> list[float]:
    """Sum plain numbers over ranks (for loss / accuracy counts)."""
    if not info.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    held_before = t._use_count()
    dist.all_reduce(t)
    wait_until_released(t, held_before)
    return t.tolist()


def wait_until_released(t: torch.Tensor, use_count: int, timeout_s: float = 30.0) -> None:
    """Wait until no one but the caller holds ``t`` (its C++ use count is back to ``use_count``).

    Gloo's ``all_reduce`` returns as soon as the result is in ``t``, while the worker thread that ran it may
    still hold the finished work, and with it ``t``. Releasing a tensor that Python created takes the GIL;
    if the process is already shutting down by then (a rank whose last collective was this one, e.g. rank 1
    right after validation), Python ends that thread and the process aborts (``terminate called without an
    active exception``, SIGABRT: seen in CI under load). Waiting here keeps the last release on this side.
    """
    deadline = time.monotonic() + timeout_s
    while t._use_count() > use_count:
        if time.monotonic() > deadline:
            log.warning("a gloo worker still holds a reduced tensor after %.0f s; going on", timeout_s)
            return
        time.sleep(0.0005)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
