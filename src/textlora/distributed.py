"""Data-parallel training under `torchrun` / `accelerate launch`, with no code change for the user.

Both launchers set RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR; when WORLD_SIZE > 1 we join the process group
(nccl when the run's device is a GPU, each rank on `cuda:LOCAL_RANK`; gloo on CPUs), wrap the model in
DistributedDataParallel and give each rank a strided share of every batch, so the global batch, the learning-rate
schedule and the averaged gradient are those of a single-process run. Rank 0 alone prints, checkpoints and writes
the run folder.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    """This rank's device: collectives run on tensors there (nccl takes GPU tensors only)."""
    group: bool = False
    """Whether a process group was joined (under a launcher, even with one process): collectives run then."""

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, idx: list[int]) -> list[int]:
        """This rank's rows of a global batch (strided, so lengths stay balanced)."""
        return idx[self.rank::self.world] if self.world > 1 else idx

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module to call in the training step: DDP-wrapped when several ranks train."""
        if not self.group:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def mean(self, values: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Per-step means over all ranks: `values[k]` is this rank's mean over `rows[k]` rows; the result weights
        each rank by its rows (for logging). One collective for all the steps."""
        if not self.group:
            return values
        t = torch.stack([values.double() * rows.double(), rows.double()]).to(self.device)
        torch.distributed.all_reduce(t)
        return (t[0] / t[1]).cpu()

    def no_sync(self, step_model: torch.nn.Module) -> contextlib.AbstractContextManager:
        """Context for a micro-batch that is not the step's last: DDP skips its gradient all-reduce, which the last
        micro-batch's backward does once for the summed gradient."""
        return step_model.no_sync() if self.group else contextlib.nullcontext()

    def any(self, flag: bool) -> bool:
        """True on every rank when `flag` is True on any: a decision to stop that the ranks must take together."""
        if not self.group:
            return flag
        t = torch.tensor([int(flag)], device=self.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item())

    def barrier(self) -> None:
        if self.group:
            torch.distributed.barrier(device_ids=[self.device.index]) if self.device.type == "cuda" \
                else torch.distributed.barrier()


def setup(device: torch.device | None = None) -> Dist:
    """Join the process group when launched by torchrun / accelerate launch (nccl for a GPU `device`, else gloo),
    even with one process, so a one-GPU launch runs the same collectives; else a single-process `Dist`."""
    device = device or torch.device("cpu")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and "TORCHELASTIC_RUN_ID" not in os.environ:
        return Dist(device=device)
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                                device_id=device if device.type == "cuda" else None)
    return Dist(dist.get_rank(), dist.get_world_size(), device, group=True)
