"""Compute precision of a forward pass: fp32, or bf16 through torch.autocast.

Under autocast the matrix products run in bfloat16 while the weights stay fp32; logits come back fp32.
It pays only where the hardware multiplies bf16 natively: CPUs with AMX or AVX512-BF16 (Intel Sapphire
Rapids and later, AMD Zen 4) and recent GPUs. textlora offers it for inference (`Predictor.load(...,
precision="bf16")`, `textlora predict --precision bf16`): on an AMX CPU it ran emotion's test set ~2x faster.
Training offers it too (`train.precision: bf16`), with one exception on CPUs: attention stays fp32
(`cpu_fp32_attention`), because PyTorch's bf16 flash-attention backward on a CPU is far slower than its fp32
one: with it in bf16 a MiniLM LoRA step gained 1.2-1.3x, with it in fp32 1.6-1.7x (AVX512-BF16, bench/RESULTS.md).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import torch

from textlora.config import Precision

PRECISIONS = get_args(Precision)
"""Forward-pass precisions of `autocast`."""
_CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
FP32_SDPA = "textlora_sdpa_fp32"
"""Name under which `sdpa_fp32` is registered with transformers' AttentionInterface."""


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


def sdpa_fp32(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
              attention_mask: torch.Tensor | None, **kwargs: Any) -> tuple[torch.Tensor, Any]:
    """transformers' SDPA attention with autocast off and fp32 inputs: its output is fp32 whatever the
    surrounding autocast, and so are the gradients its backward computes."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    with torch.autocast(query.device.type, enabled=False):
        return sdpa_attention_forward(module, query.float(), key.float(), value.float(), attention_mask, **kwargs)


@contextlib.contextmanager
def cpu_fp32_attention(model: torch.nn.Module, precision: str) -> Iterator[None]:
    """Within: `model`'s SDPA attention runs `sdpa_fp32` when `precision` is 'bf16' and the model is on a
    CPU (its bf16 backward there took 30% of a MiniLM LoRA step, against 3% in fp32); nothing otherwise.
    Every transformers config of the model with SDPA attention is switched, and restored on exit."""
    if precision != "bf16" or next(model.parameters()).device.type != "cpu":
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
