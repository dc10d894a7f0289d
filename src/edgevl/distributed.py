"""torch.distributed process groups: join the one torchrun describes, where this process sits, wait, leave.

Shared by training (`edgevl.train`) and reinforcement (`edgevl.reinforce`); the autograd-aware gathers of the
contrastive loss are in `edgevl.train.distributed`.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from edgevl.errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: global rank, local rank (GPU index on its node), world size, device."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto", timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group described by torchrun's env (`RANK`, `WORLD_SIZE`, `MASTER_ADDR/PORT`).

    Backend: nccl when training on CUDA, gloo otherwise. Without `WORLD_SIZE` > 1 this is a no-op single process.
    """
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise ConfigError(f"unknown device {device!r}; use auto, cpu or cuda[:N]")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        index = local_rank if device in ("auto", "cuda") else int(device.split(":")[1])
        dev = torch.device("cuda", index)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if use_cuda else "gloo",
            init_method="env://",
            timeout=datetime.timedelta(seconds=timeout_s),
        )
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world, device=dev)


def world_info() -> tuple[int, int]:
    """(rank, world_size) of the initialised process group, or (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if world_info()[1] > 1:
        dist.barrier()


def cleanup() -> None:
    """Leave the process group if one was joined, after the other ranks (gloo: at most 60 s).

    Tearing down a gloo group while a peer still talks to it aborted the process ("terminate called without an
    active exception"); a peer that is gone already only costs the timeout."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    if dist.get_backend() == "gloo" and dist.get_world_size() > 1:
        try:
            dist.monitored_barrier(timeout=datetime.timedelta(seconds=60))
        except RuntimeError:
            pass  # a peer failed or left: leave anyway
    dist.destroy_process_group()
