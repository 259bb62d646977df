"""QLoRA's 4-bit base: bitsandbytes-only code, imported lazily so a CPU-only install without the
`qlora` extra can still import textlora.

QLoRA (Dettmers et al., 2023, https://arxiv.org/abs/2305.14314) freezes the base in 4-bit NormalFloat
(NF4) and trains LoRA adapters on top in full precision. bitsandbytes >= 0.45 runs NF4 on a CPU.
The head modules stay in fp32: they are newly initialized and trained fully.
"""

from __future__ import annotations

import torch

from textlora.memory import release_free_memory
from textlora.model import patches
from textlora.model.arch import HEAD_NAMES

INSTALL_HINT = 'pip install "textlora[qlora]"'


def require_bitsandbytes() -> None:
    """Raise ImportError naming the extra to install when bitsandbytes is missing."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ImportError(f"method 'qlora' needs the package bitsandbytes, which is not installed. "
                          f"Run `{INSTALL_HINT}`, or use --method lora.") from None


def nf4_config(compute_dtype: torch.dtype = torch.float32) -> object:
    """A `transformers.BitsAndBytesConfig` that loads every linear layer in 4-bit NF4 except the head.

    `compute_dtype`: what the 4-bit layers dequantize to for their matmuls (fp32 on a CPU, the run's bf16 or
    fp16 on a GPU, as in the QLoRA paper); `llm_int8_skip_modules` keeps the head modules (`HEAD_NAMES`) as plain
    fp32 `nn.Linear`, so they can be trained and saved as usual.
    """
    require_bitsandbytes()
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute_dtype,
                              llm_int8_skip_modules=_skip_patterns())


def _skip_patterns() -> list[str]:
    """Module-name patterns transformers leaves unquantized: each head name at any depth. transformers 5
    matches a pattern as a regex from the start of the name, 4.x as a substring; the list covers both
    (a bare `pooler` would leave BERT's `bert.pooler.dense` quantized under 5)."""
    return list(HEAD_NAMES) + [rf"(?:.*\.)?{name}" for name in HEAD_NAMES]


def quantization_config(method: str, device: torch.device | None = None, precision: str = "fp32") -> object | None:
    """What `load_base` needs for `method`: the NF4 config for 'qlora', else None (full precision). On a GPU the
    4-bit layers compute in the run's 16-bit precision (bf16 where the GPU has it); on a CPU in fp32."""
    if method != "qlora":
        return None
    on_gpu = device is not None and torch.device(device).type == "cuda"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.bfloat16) if on_gpu else torch.float32
    return nf4_config(dtype)


def keep_weights_unpacked(model: torch.nn.Module) -> torch.nn.Module:
    """Turn off bitsandbytes' CPU repacking of 4-bit weights, so that every CPU runs the same NF4 kernel.

    On CPUs with AVX512-BF16 (bitsandbytes >= 0.48) a `Linear4bit` rewrites its weight into another layout on its
    first eval-mode forward. The rewrite asserts that out_features is divisible by 32 (tiny models and small
    heads are not: "N must be divisible by block_n") and leaves the weight rewritten when training resumes,
    which textlora does after every validation pass (tests/model/test_qlora.py failed with that assertion there).
    """
    if not any(is_4bit(m) for m in model.modules()) or not patches.enabled("bnb_cpu_layout"):
        return model
    for module in model.modules():
        if is_4bit(module) and hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
    return model


def release_checkpoint(model: torch.nn.Module) -> torch.nn.Module:
    """Copy every weight that is not 4-bit out of the checkpoint's memory map, so the map closes.

    transformers loads safetensors zero-copy: the unquantized weights (embeddings, norms, the head) stay views
    of the mapped file. Quantizing reads every fp32 linear weight through that map, so while the map stays open
    those ~4 bytes per quantized weight stay resident, on top of their 4-bit copies, and QLoRA saved nothing
    (bench/RESULTS.md, session 8). The freed fp32 buffers go back to the OS with `release_free_memory`. Tied weights
    stay tied (one copy per shared tensor).
    """
    copies: dict[int, torch.Tensor] = {}

    def copy(t: torch.Tensor) -> torch.Tensor:
        if id(t) not in copies:
            c = t.detach().clone()
            copies[id(t)] = torch.nn.Parameter(c, requires_grad=t.requires_grad) if isinstance(t, torch.nn.Parameter) else c
        return copies[id(t)]

    with torch.no_grad():
        for module in model.modules():
            for group in (module._parameters, module._buffers):
                for name, t in group.items():
                    if t is not None and type(t) in (torch.Tensor, torch.nn.Parameter):  # not a Params4bit
                        group[name] = copy(t)
    release_free_memory()
    return model


def prepare_for_kbit(model: torch.nn.Module) -> torch.nn.Module:
    """PEFT's `prepare_model_for_kbit_training`: freeze the base, keep norms in fp32. Gradient
    checkpointing is left to `train.gradient_checkpointing` (on for qlora by default), like every method's."""
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def dequantize(model: torch.nn.Module) -> torch.nn.Module:
    """Replace every 4-bit layer by an fp32 `nn.Linear` holding its dequantized weight. The result
    computes exactly what the 4-bit model computed (the weights the adapter was trained against)."""
    if not any(is_4bit(m) for m in model.modules()):
        return model
    return model.dequantize()


def is_4bit(module: torch.nn.Module) -> bool:
    """Whether `module` is a bitsandbytes 4-bit linear layer (not PEFT's LoRA wrapper of one)."""
    try:
        from bitsandbytes.nn import Linear4bit
    except ImportError:
        return False
    return isinstance(module, Linear4bit)
