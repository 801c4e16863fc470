"""Data-parallel training across processes started by torchrun: one rank per GPU (NCCL), or per CPU process
(gloo). Every rank draws the same shuffled order and takes its share of each global batch, so a run on N ranks
sees the same batches, the same learning-rate schedule and the same hyper-parameters as a run on one device."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, dev: torch.device) -> torch.device:
        return torch.device("cuda", self.local_rank) if (self.world > 1 and dev.type == "cuda") else dev

    def share(self, idx: torch.Tensor) -> torch.Tensor:
        """This rank's part of a global batch."""
        return idx[self.rank::self.world] if self.world > 1 else idx

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value

    def broadcast(self, value):
        """Rank 0's `value` (any picklable object) on every rank: what rank 0 alone read (control requests)."""
        if self.world <= 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def from_env(dev: torch.device) -> DistContext:
    """WORLD_SIZE > 1 (set by torchrun) joins the process group; otherwise a single-process context."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    owns = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        owns = True
    return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), owns)


def torchrun_command(processes: int, module: str, args: list[str]) -> list[str]:
    """`python -m module args` on `processes` local ranks (torchrun --standalone picks a free port)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
            "-m", module, *args]
