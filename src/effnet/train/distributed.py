"""Data-parallel setup for ``torchrun``: process group, rank, and metric all-reduce.

    torchrun --nproc_per_node 2 -m effnet train --model efficientnet_v2_s --data /data/imagenet

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them the run is a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from effnet.devices import resolve_device


@dataclass(frozen=True)
class Dist:
    """Where this process stands: its rank, how many there are, and its device."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        """Rank 0 alone prints and writes files."""
        return self.rank == 0


def setup(device_name: str) -> Dist:
    """Join the process group torchrun described (NCCL on GPUs, gloo on CPU), or stay single."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist(device=resolve_device(device_name))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(rank, world, local_rank, device)


def teardown(d: Dist) -> None:
    if d.world > 1 and dist.is_initialized():
        dist.destroy_process_group()


def all_sum(values: list[float], d: Dist) -> list[float]:
    """Sum per-process counts (loss sums, correct, seen) over all processes."""
    if d.world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=d.device)
    dist.all_reduce(t)
    return t.tolist()


def any_flag(flag: bool, d: Dist) -> bool:
    """True on every process when it is True on any (so all stop together on a NaN)."""
    if d.world == 1:
        return flag
    t = torch.tensor([float(flag)], device=d.device)
    dist.all_reduce(t)
    return bool(t.item() > 0)


def barrier(d: Dist) -> None:
    if d.world > 1:
        dist.barrier()
