"""Data-parallel training under `torchrun` / `accelerate launch`, with no code change for the user.

Both launchers set RANK / WORLD_SIZE / MASTER_ADDR; when WORLD_SIZE > 1 we join the process group
(gloo on CPU, nccl on CUDA), wrap the model in DistributedDataParallel and give each rank a strided
share of every batch, so the global batch, the learning-rate schedule and the averaged gradient are
those of a single-process run. Rank 0 alone prints, checkpoints and writes the run folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, idx: list[int]) -> list[int]:
        """This rank's rows of a global batch (strided, so lengths stay balanced)."""
        return idx[self.rank::self.world] if self.world > 1 else idx

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module to call in the training step: DDP-wrapped when several ranks train."""
        if self.world == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model)

    def mean(self, value: float, n: int) -> float:
        """The mean over all ranks of a per-rank mean `value` taken over `n` rows (for logging)."""
        if self.world == 1:
            return value
        t = torch.tensor([value * n, float(n)], dtype=torch.float64)
        torch.distributed.all_reduce(t)
        return (t[0] / t[1]).item()

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


def setup() -> Dist:
    """Join the process group if launched with several processes; else a single-process `Dist`."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size())
