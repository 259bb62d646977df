"""Compute precision of forward passes: fp32, or bf16/fp16 through torch.autocast, chosen per device.

Under autocast the matrix products run in a 16-bit type while the weights stay fp32; logits come back fp32.
It pays where the hardware multiplies that type natively: GPUs, and CPUs with AMX or AVX512-BF16 (figures in
bench/RESULTS.md). In bf16 training on a CPU attention stays fp32 (`cpu_fp32_attention`): PyTorch's bf16 attention
backward there is far slower than its fp32 one. On a GPU attention runs PyTorch's fused SDPA kernels in 16 bits.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import torch

from textlora.config import Precision
from textlora.model import patches

PRECISIONS = get_args(Precision)
"""Forward-pass precisions: 'auto' and the three it resolves to."""
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
"""Autocast dtype of each reduced precision."""
_CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
FP32_SDPA = "textlora_sdpa_fp32"
"""Name under which `sdpa_fp32` is registered with transformers' AttentionInterface."""


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """The precision to compute in on `device`: 'auto' is the fastest one that kept the accuracy there (bf16 on a
    GPU that has it, else fp16; bf16 on a CPU that multiplies it natively, else fp32: bench/RESULTS.md).

    Raises:
        ConfigError: an unknown precision, fp16 on a CPU, or bf16 on a GPU without it.
    """
    from textlora.errors import ConfigError

    kind = torch.device(device).type
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}.")
    if precision == "auto":
        if kind == "cuda":
            return "bf16" if native_bf16("cuda") else "fp16"
        return "bf16" if native_bf16(kind) else "fp32"
    if precision == "fp16" and kind != "cuda":
        raise ConfigError("precision 'fp16' needs a CUDA GPU (on a CPU it is emulated and has no gradient scaler); "
                          "use bf16 or fp32 there, or --device cuda.")
    if precision == "bf16" and kind == "cuda" and not native_bf16("cuda"):
        raise ConfigError(f"precision 'bf16' asked for, but {torch.cuda.get_device_name(device)} has no bf16 "
                          "support; use fp16 (with a gradient scaler) or auto.")
    return precision


def autocast(model: torch.nn.Module, precision: str) -> contextlib.AbstractContextManager:
    """A context in which `model`'s forward runs at `precision` (already resolved): autocast to bfloat16 or
    float16 on the model's device, nothing for 'fp32'."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision not in DTYPES:
        raise ValueError(f"precision must be one of fp32, {', '.join(DTYPES)} here, got {precision!r} "
                         "(resolve 'auto' with resolve_precision first).")
    device = next(model.parameters()).device.type
    return torch.autocast(device_type=device, dtype=DTYPES[precision])


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """fp16 training's loss scaler (its gradients underflow without one); a disabled, pass-through one otherwise."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16" and device.type == "cuda")


def native_bf16(device: str = "cpu", cpuinfo: str | Path = "/proc/cpuinfo") -> bool | None:
    """Whether `device` multiplies bf16 in hardware: CUDA asks torch; a CPU reads its flags from `cpuinfo`
    (AMX or AVX512-BF16). None when that cannot be told (no such file: not Linux)."""
    if device == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
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


def sdpa_fp32(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
              attention_mask: torch.Tensor | None, **kwargs: Any) -> tuple[torch.Tensor, Any]:
    """transformers' SDPA attention with autocast off and fp32 inputs: its output is fp32 whatever the
    surrounding autocast, and so are the gradients its backward computes."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    with torch.autocast(query.device.type, enabled=False):
        return sdpa_attention_forward(module, query.float(), key.float(), value.float(), attention_mask, **kwargs)


@contextlib.contextmanager
def cpu_fp32_attention(model: torch.nn.Module, precision: str) -> Iterator[None]:
    """Within: `model`'s SDPA attention runs `sdpa_fp32` when `precision` is 'bf16' and the model is on a CPU, whose
    bf16 attention backward is far slower than fp32's (bench/RESULTS.md, session 9); nothing otherwise. Every
    transformers config of the model with SDPA attention is switched, and restored on exit."""
    if precision != "bf16" or next(model.parameters()).device.type != "cpu" or not patches.enabled("fp32_attention"):
        yield
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(FP32_SDPA, sdpa_fp32)
    AttentionMaskInterface.register(FP32_SDPA, sdpa_mask)  # unregistered, transformers would build no padding mask
    configs = {id(c): c for m in model.modules() if (c := getattr(m, "config", None)) is not None
               and getattr(c, "_attn_implementation", None) == "sdpa"}
    for c in configs.values():
        c._attn_implementation = FP32_SDPA
    try:
        yield
    finally:
        for c in configs.values():
            c._attn_implementation = "sdpa"
