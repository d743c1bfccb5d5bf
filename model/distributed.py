"""torch.distributed for the trainer: which rank this is, on which device, and the few
collectives the loop needs.

One process without a launcher, and the same code under ``torchrun`` or Ray Train: the loop asks
a :class:`Dist` (``main``, ``barrier``, ``gather``, ``sum``) instead of branching on the world
size itself, so a single-process run and rank 0 of many take the same path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Dist:
    """This process's place in the run; every method is a no-op with one process."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False  # we opened the process group (torchrun), not Ray Train

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes files and prints."""
        return self.rank == 0

    @property
    def on(self) -> bool:
        """More than one rank: collectives are real."""
        return self.world > 1

    def barrier(self) -> None:
        if self.on:
            torch.distributed.barrier()

    def gather(self, obj: Any) -> list:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.on:
            return [obj]
        out: list = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum of ``values`` over the ranks (float64, so counts stay exact)."""
        if not self.on:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return t.tolist()


def setup_dist() -> Dist:
    """torch.distributed from the launcher's environment (``WORLD_SIZE`` > 1), else one process.
    Under torchrun we open the process group; under Ray Train it is open already and Ray's."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    rank = int(os.environ.get("RANK", 0))
    local = int(os.environ.get("LOCAL_RANK", 0))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    owns = False
    if world > 1:
        if not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if cuda else "gloo")
            owns = True
        if not cuda:  # share the cores between the ranks on this machine
            per_node = int(os.environ.get("LOCAL_WORLD_SIZE", world))
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // per_node))
    return Dist(rank, world, local, device, owns)


def teardown_dist(d: Dist) -> None:
    """Close the process group if we opened it (Ray Train closes its own)."""
    if d.owns_group and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def print0(d: Dist, *args: Any) -> None:
    """``print`` on rank 0 only, flushed (the ranks' stdout interleave under torchrun)."""
    if d.main:
        print(*args, flush=True)


__all__ = ["Dist", "print0", "setup_dist", "teardown_dist"]
