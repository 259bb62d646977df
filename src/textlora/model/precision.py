"""Compute precision of a forward pass: fp32, or bf16 through torch.autocast.

Under autocast the matrix products run in bfloat16 while the weights stay fp32; logits come back fp32.
It pays only where the hardware multiplies bf16 natively: CPUs with AMX or AVX512-BF16 (Intel Sapphire
Rapids and later, AMD Zen 4) and recent GPUs. textlora offers it for inference (`Predictor.load(...,
precision="bf16")`, `textlora predict --precision bf16`): on an AMX CPU it ran emotion's test set ~2x faster.
Training steps stay fp32: with bf16 autocast they ran slower on that same CPU (bench/RESULTS.md).
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import torch

PRECISIONS = ("fp32", "bf16")
"""Forward-pass precisions of `autocast`."""
_CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def autocast(model: torch.nn.Module, precision: str) -> contextlib.AbstractContextManager:
    """A context in which `model`'s forward runs at `precision`: autocast to bfloat16 on the model's
    device for 'bf16', nothing for 'fp32'."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}.")
    device = next(model.parameters()).device.type
    return torch.autocast(device_type=device, dtype=torch.bfloat16)


def native_bf16(device: str = "cpu", cpuinfo: str | Path = "/proc/cpuinfo") -> bool | None:
    """Whether `device` multiplies bf16 in hardware: CUDA asks torch; a CPU reads its flags from `cpuinfo`
    (AMX or AVX512-BF16). None when that cannot be told (no such file: not Linux)."""
    if device == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return None
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return any(f in flags for f in _CPU_BF16_FLAGS)


def warn_if_emulated(precision: str, device: str = "cpu") -> None:
    """Warn when `precision` is 'bf16' and `device` has no bf16 matrix units (slower than fp32 there)."""
    if precision == "bf16" and native_bf16(device) is False:
        warnings.warn("precision 'bf16' on a device without bf16 matrix units (a CPU needs AMX or AVX512-BF16): "
                      "bf16 is emulated there and likely slower than fp32.", stacklevel=3)
