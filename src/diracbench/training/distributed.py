"""The process group of a data-parallel training run started by `torchrun`.

`torchrun --nproc_per_node N -m diracbench.train ...` exports RANK, WORLD_SIZE, LOCAL_RANK and
MASTER_ADDR/PORT; `Group.from_env()` joins that group (gloo for CPU tensors, NCCL for CUDA
tensors). Without those variables — a plain `python -m diracbench.train` — it is a group of one
that never touches torch.distributed, so the one-process path runs exactly the code it ran before
data parallelism existed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Group:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def leader(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, cuda: bool) -> "Group":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        group = cls(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")), int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        if not dist.is_initialized():
            # CPU tensors (the stop flag, RNG gathers) always go through gloo, so a per-step
            # stop check never waits for the GPU; gradients of CUDA models go through NCCL.
            dist.init_process_group(backend="cpu:gloo,cuda:nccl" if cuda else "gloo")
        return group

    def all_max(self, flag: bool) -> bool:
        """True on every rank when it is True on any rank (a collective: call it on all ranks)."""
        if not self.distributed:
            return flag
        t = torch.tensor([1 if flag else 0], dtype=torch.int32)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def all_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            tensor = tensor.clone()
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank (picklable builtins only: paths, strings, numbers)."""
        if not self.distributed:
            return obj
        box = [obj if self.leader else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's `obj`, in rank order, on rank 0 (None elsewhere)."""
        if not self.distributed:
            return [obj]
        out = [None] * self.world if self.leader else None
        dist.gather_object(obj, out, dst=0)
        return out

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()
