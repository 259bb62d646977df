"""The methods: `lora` (PEFT adapters + trained head), `qlora` (the same on a 4-bit NF4 base, see
`model/quantization.py`), `full`, `head` (body frozen).

This module and `model/saving.py` are the only places that know PEFT.
The head modules (classifier, DistilBERT's pre_classifier, GPT-2's score, BERT's pooler, and any
module the checkpoint lacked) are always trained and saved, so a run never ships a random head.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from textlora.config import LoraConfig
from textlora.errors import ConfigError
from textlora.model.arch import HEAD_NAMES, LORA_TARGETS, layer_list, layer_of, unwrap


@dataclass
class ParamCount:
    trainable: int
    total: int

    def __str__(self) -> str:
        return f"trainable params: {self.trainable:,} / {self.total:,} ({100 * self.trainable / self.total:.2f}%)"


def head_modules(model: torch.nn.Module, new_modules: list[str]) -> list[str]:
    """Full names of the head modules of `model`: known head names plus modules new to the checkpoint."""
    names = []
    for name, _ in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if leaf in HEAD_NAMES or name in new_modules:
            if not any(name.startswith(p + ".") for p in names):
                names.append(name)
    return names


def lora_targets(model: torch.nn.Module, suffixes: list[str] | None, heads: list[str],
                 top_layers: int | None = None) -> list[str]:
    """Full names of the linear layers that get adapters (outside the head; in the top `top_layers`
    transformer layers only, when given)."""
    from transformers.pytorch_utils import Conv1D

    model_type = getattr(model.config, "model_type", "")
    wanted = suffixes or LORA_TARGETS.get(model_type)
    found = []
    for name, module in model.named_modules():
        if not isinstance(module, (torch.nn.Linear, Conv1D)):
            continue
        if any(name == h or name.startswith(h + ".") for h in heads):
            continue
        if wanted is None or any(name == s or name.endswith("." + s) for s in wanted):
            found.append(name)
    if not found:
        raise ConfigError(f"no linear layer of this {model_type or 'model'} matches lora.target_modules={wanted}. "
                          f"Linear layers look like {_linear_names(model)[:6]}; pass suffixes of those.")
    return found if top_layers is None else _in_top_layers(model, found, top_layers)


def _in_top_layers(model: torch.nn.Module, names: list[str], top: int) -> list[str]:
    """The `names` that sit in the top `top` layers of the transformer's layer list."""
    found = layer_list(model)
    if found is None:
        raise ConfigError(f"lora.top_layers={top}: cannot find the layer list of this "
                          f"{getattr(model.config, 'model_type', 'model')} (config.num_hidden_layers); "
                          "set lora.top_layers=null.")
    layers_name, n = found
    if top > n:
        raise ConfigError(f"lora.top_layers={top} but the model has {n} layers; use 1..{n} or null.")
    return [name for name in names if (i := layer_of(name, layers_name)) is not None and i >= n - top]


def build_model(model: torch.nn.Module, method: str, lora: LoraConfig, new_modules: list[str]) -> torch.nn.Module:
    """Wrap or freeze `model` for `method`; returns the module to train."""
    heads = head_modules(model, new_modules)
    return _BUILDERS[method](model, lora, heads)


def _build_lora(model: torch.nn.Module, lora: LoraConfig, heads: list[str]) -> torch.nn.Module:
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    targets = lora_targets(model, lora.target_modules, heads, lora.top_layers)
    cfg = PeftLoraConfig(
        task_type="SEQ_CLS", r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
        target_modules=targets, modules_to_save=[h.rsplit(".", 1)[-1] for h in heads],
        fan_in_fan_out=_is_conv1d(model.get_submodule(targets[0])),  # GPT-2's Conv1D, unless 4-bit (Linear)
    )
    with warnings.catch_warnings():  # PEFT calls a transformers API deprecated in v5; not ours to fix
        warnings.simplefilter("ignore", FutureWarning)
        return get_peft_model(model, cfg)


def _build_full(model: torch.nn.Module, lora: LoraConfig, heads: list[str]) -> torch.nn.Module:
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def _build_head(model: torch.nn.Module, lora: LoraConfig, heads: list[str]) -> torch.nn.Module:
    for p in model.parameters():
        p.requires_grad_(False)
    for name in heads:
        for p in model.get_submodule(name).parameters():
            p.requires_grad_(True)
    return model


def _build_qlora(model: torch.nn.Module, lora: LoraConfig, heads: list[str]) -> torch.nn.Module:
    """LoRA on a base loaded in 4-bit (`load_base(..., quantization_config=nf4_config())`)."""
    from textlora.model.quantization import is_4bit, prepare_for_kbit

    if not any(is_4bit(m) for m in model.modules()):
        raise ConfigError("method 'qlora' needs a base loaded in 4-bit; load it with "
                          "load_base(name, labels, quantization_config=nf4_config()).")
    return _build_lora(prepare_for_kbit(model), lora, heads)


def enable_gradient_checkpointing(model: torch.nn.Module) -> bool:
    """Recompute each encoder layer in the backward pass (transformers' own checkpointing, non-reentrant, so
    frozen embeddings need no `requires_grad` trick and dropout replays the same masks). Returns False, and
    changes nothing, for a model whose class does not support it.

    transformers wraps the layer class's `forward`, so a last layer running `cls_only_last_layer`'s forward is
    not recomputed; it keeps little anyway (everything but K and V is for [CLS] alone)."""
    hf = unwrap(model)
    if not getattr(hf, "supports_gradient_checkpointing", False):
        return False
    hf.config.use_cache = False  # a KV cache is useless in training and incompatible with recomputation
    if hasattr(hf, "activation_checkpointing_enable"):  # transformers >= 5.x; the old name warns there
        hf.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return True


def _is_conv1d(module: torch.nn.Module) -> bool:
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, Conv1D)


_BUILDERS = {"lora": _build_lora, "full": _build_full, "head": _build_head, "qlora": _build_qlora}


def init_output_bias(model: torch.nn.Module, new_modules: list[str], rates: np.ndarray) -> str | None:
    """Set the bias of the new output layer to the log-odds of each label's rate in the training set.

    For multi-label heads (one sigmoid per label): with a zero bias every label starts at p=0.5, the first
    steps spend themselves pushing all logits down, and on MiniLM the outputs collapse to the same value for
    every input and stay there (measured on GoEmotions: loss stuck at the label-prior entropy). Starting at
    the prior removes that phase (as in Lin et al. 2017, focal loss). Returns the layer's name, or None
    when the head has no such layer (e.g. GPT-2's bias-free `score`)."""
    for name in new_modules:
        layer = model.get_submodule(name)
        if isinstance(layer, torch.nn.Linear) and layer.out_features == len(rates) and layer.bias is not None:
            p = torch.as_tensor(rates, dtype=torch.float32, device=layer.bias.device).clamp(1e-4, 1 - 1e-4)
            with torch.no_grad():
                layer.bias.copy_(torch.log(p / (1 - p)))
            return name
    return None


def count_params(model: torch.nn.Module) -> ParamCount:
    """Trainable and total parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return ParamCount(trainable, total)


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of every trainable tensor, to keep the best epoch in memory."""
    return {k: p.detach().clone() for k, p in model.named_parameters() if p.requires_grad}


def restore_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy tensors from `trainable_state` back into `model`."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for k, v in state.items():
            params[k].copy_(v)


def _linear_names(model: torch.nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
