"""The device a run computes on: one owner for choosing it, describing it and moving tensors to it.

`--device auto` (the default everywhere) is the first CUDA GPU when torch sees one (under torchrun, the
rank's `cuda:LOCAL_RANK`), else the CPU; `cpu`, `cuda` and `cuda:N` ask for one. Asking for a GPU that is not
there is a one-line `ConfigError` before any work. Every other module asks this one instead of testing
`torch.cuda.is_available()` itself, so CPU and GPU share every line of the loop.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch

from textlora.config import DEVICE_PATTERN
from textlora.errors import ConfigError

EVAL_BATCH = {"cpu": 32, "cuda": 256}
"""Rows per inference pass by device type. CPU: 32 ran emotion's test set as fast as 128 with a quarter of the
transient memory (bench/RESULTS.md, eval batches); a GPU wants wide passes to fill its cores."""
EVAL_TOKENS = {"cpu": 16384, "cuda": 131072}
"""Padded tokens per inference pass by device type: keeps long texts within memory."""


def check_spec(spec: str, key: str = "device") -> str:
    """`spec` if it is a device setting this module understands, else a one-line ConfigError."""
    if not isinstance(spec, str) or not DEVICE_PATTERN.match(spec):
        raise ConfigError(f"{key} must be auto, cpu, cuda or cuda:N (N a GPU index), got {spec!r}.")
    return spec


def resolve(spec: str = "auto") -> torch.device:
    """The torch.device for a setting: 'auto' is CUDA when available (the rank's GPU under torchrun), else CPU.

    Raises:
        ConfigError: CUDA was asked for where torch sees none, or the index is past the last GPU.
    """
    check_spec(spec)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if spec == "cpu":
        return torch.device("cpu")
    available = torch.cuda.is_available()
    if spec == "auto":
        return torch.device("cuda", local_rank % torch.cuda.device_count()) if available else torch.device("cpu")
    if not available:
        raise ConfigError(f"device {spec!r} asked for, but torch sees no CUDA GPU here (torch {torch.__version__}, "
                          f"built for CUDA {torch.version.cuda}). Use --device cpu, or install a CUDA build of torch.")
    index = int(spec.split(":")[1]) if ":" in spec else local_rank
    if index >= torch.cuda.device_count():
        raise ConfigError(f"device {spec!r} asked for, but there are {torch.cuda.device_count()} GPU(s): "
                          f"use cuda:0..cuda:{torch.cuda.device_count() - 1}.")
    return torch.device("cuda", index)


def prepare(device: torch.device) -> torch.device:
    """Make `device` the current one for CUDA (collectives and kernels of this process use it); returns it."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def describe(device: torch.device) -> dict[str, Any]:
    """What to record about `device` in a run's manifest: its name, and for a GPU its model and memory."""
    info: dict[str, Any] = {"device": str(device), "type": device.type}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_mb=round(props.total_memory / 2**20),
                    capability=f"{props.major}.{props.minor}", cuda=torch.version.cuda)
    return info


def of(model: torch.nn.Module) -> torch.device:
    """The device `model`'s parameters are on (CPU for a model without parameters)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def to(batch: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """`batch` with every tensor on `device`; from the CPU to a GPU through pinned memory without blocking, so
    the copy of the next batch overlaps the current step."""
    if device.type == "cpu":
        return dict(batch)
    return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}


def eval_batch_size(device: torch.device, configured: int | None = None) -> int:
    """Rows per inference pass on `device`: the configured number, or the device type's default."""
    return configured or EVAL_BATCH.get(device.type, EVAL_BATCH["cpu"])


def eval_tokens(device: torch.device) -> int:
    """Padded tokens per inference pass on `device`."""
    return EVAL_TOKENS.get(device.type, EVAL_TOKENS["cpu"])


def free_mb(device: torch.device) -> float | None:
    """Memory `device` can still give, in MiB: free GPU memory, or the host's available memory for a CPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free / 2**20
    from textlora.memory import available_mb

    return available_mb()


def rng_state() -> dict[str, Any]:
    """Every RNG state a training step draws from: the CPU's and, when CUDA is in use, each GPU's (CPU tensors,
    so a checkpoint written on a GPU loads anywhere)."""
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any] | torch.Tensor) -> None:
    """Restore `rng_state()`'s result; GPU states are restored only where the same number of GPUs is there
    (resuming on another device cannot replay its dropout masks anyway)."""
    if isinstance(state, torch.Tensor):  # checkpoints written before GPU support held the CPU state alone
        torch.set_rng_state(state)
        return
    torch.set_rng_state(state["cpu"])
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def to_cpu(obj: Any) -> Any:
    """`obj` with every tensor inside (dicts, lists, tuples) copied to the CPU: device-neutral for saving."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj
