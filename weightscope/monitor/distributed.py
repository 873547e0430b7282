"""Ranks, layer shares and the few collectives the monitor needs under ``torch.distributed``.

Two private gloo groups keep the monitor's collectives out of the trainer's
(NCCL) traffic and out of each other's way: ``control`` is used only by the
training thread (skip and stop decisions at snapshot steps), ``data`` only by
the analysis thread (gathering results in ``split`` mode). Each group is used
by one thread per rank, in the same order on every rank, so they cannot
interleave differently across ranks.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch

log = logging.getLogger(__name__)

MODES = ("rank0", "split")


def is_distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank_and_world() -> tuple[int, int]:
    if not is_distributed():
        return 0, 1
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def split_layers(sizes: list[tuple[str, int]], world: int) -> list[set[str]]:
    """Largest layers first onto the least-loaded rank: the same answer on every rank (ties by order)."""
    loads = [0] * world
    shares: list[set[str]] = [set() for _ in range(world)]
    for key, numel in sorted(sizes, key=lambda kv: -kv[1]):
        r = min(range(world), key=lambda i: (loads[i], i))
        loads[r] += numel
        shares[r].add(key)
    return shares


class Collectives:
    """The monitor's process groups; created on every rank at train start (``new_group`` is collective)."""

    def __init__(self) -> None:
        self.rank, self.world = rank_and_world()
        self.control: Any = None
        self.data: Any = None
        if self.world > 1:
            dist = torch.distributed
            self.control = dist.new_group(backend="gloo")
            self.data = dist.new_group(backend="gloo")

    @property
    def active(self) -> bool:
        return self.world > 1

    def any_flags(self, *flags: bool) -> list[bool]:
        """Element-wise OR of boolean flags over ranks (training thread only)."""
        if not self.active:
            return list(flags)
        t = torch.tensor([int(f) for f in flags], dtype=torch.int64)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX, group=self.control)
        return [bool(x) for x in t.tolist()]

    def gather_to_zero(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj`` on rank 0 (analysis thread only); None elsewhere."""
        if not self.active:
            return [obj]
        out: list[Any] | None = [None] * self.world if self.rank == 0 else None
        torch.distributed.gather_object(obj, out, dst=0, group=self.data)
        return out

    def destroy(self) -> None:
        for group in (self.control, self.data):
            if group is not None:
                try:
                    torch.distributed.destroy_process_group(group)
                except Exception as exc:  # the default group may already be gone at exit
                    log.debug("could not destroy a monitor process group: %s", exc)
        self.control = self.data = None


def ranks_on_this_node(world: int) -> int:
    """Processes of the job sharing this machine's cores: torchrun's ``LOCAL_WORLD_SIZE``, else (a
    launcher that does not set it, ``mp.spawn`` say) the whole world, the cautious guess."""
    try:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", ""))
    except ValueError:
        local = world
    return max(1, min(local, world)) if world > 1 else 1
