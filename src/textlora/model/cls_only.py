"""The last layer computed for the [CLS] position only, in BERT-style classifiers.

Why our own code: a BERT-style sequence classifier reads nothing of the last layer but position 0 (its
pooler or head takes `hidden[:, 0]`), yet the stock forward runs the last layer's query, output and MLP
projections for every token. Here the last layer computes keys and values for every token, as it must,
and everything else for [CLS] alone: the same logits and gradients (a test checks both), and on
MiniLM-L6 about an eighth of the FLOPs of a forward pass and of LoRA's backward pass saved
(bench/RESULTS.md). It uses the layer's own modules (LoRA and 4-bit layers included) and the attention
kernel the model was loaded with, and leaves the parameters and the state dict untouched.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from textlora.model import patches
from textlora.model.arch import CLS_POOLED, unwrap


def last_layer(model: torch.nn.Module) -> torch.nn.Module | None:
    """The last encoder layer when `model` is a CLS-pooled BERT-style classifier, else None."""
    hf = unwrap(model)
    if type(hf).__name__ not in CLS_POOLED or getattr(hf.config, "is_decoder", False):
        return None
    layers = getattr(getattr(hf.base_model, "encoder", None), "layer", None)
    if not layers or not all(hasattr(layers[-1], a) for a in ("attention", "intermediate", "output")):
        return None
    return layers[-1]


@contextmanager
def cls_only_last_layer(model: torch.nn.Module, enabled: bool = True) -> Iterator[bool]:
    """Within the block, `model`'s last layer computes position 0 only. Yields whether it applies."""
    layer = last_layer(model) if enabled else None
    if layer is not None and not patches.enabled("cls_only"):
        layer = None  # the stock forward: same logits, every position computed
    if layer is None or "forward" in vars(layer):  # not applicable, or already on (nested use)
        yield layer is not None
        return
    layer.forward = types.MethodType(_cls_only_forward, layer)
    try:
        yield True
    finally:
        del layer.forward


def _cls_only_forward(self: torch.nn.Module, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                      *args, **kwargs) -> torch.Tensor:
    """A BERT layer whose output is (B, 1, hidden): the [CLS] row of the full layer's output."""
    attn = self.attention.self
    batch, length, _ = hidden_states.shape
    cls = hidden_states[:, :1]
    heads = (batch, -1, attn.num_attention_heads, attn.attention_head_size)
    query = attn.query(cls).view(heads).transpose(1, 2)  # (B, heads, 1, d)
    key = attn.key(hidden_states).view(heads).transpose(1, 2)  # (B, heads, T, d)
    value = attn.value(hidden_states).view(heads).transpose(1, 2)
    if attention_mask is not None and attention_mask.dim() == 4 and attention_mask.shape[-2] == length:
        attention_mask = attention_mask[:, :, :1]  # the [CLS] query's row
    out, _ = _attention(attn)(attn, query, key, value, attention_mask,
                              dropout=attn.dropout.p if attn.training else 0.0, scaling=attn.scaling)
    out = self.attention.output(out.reshape(batch, 1, -1), cls)
    return self.output(self.intermediate(out), out)


def _attention(attn: torch.nn.Module):
    """The attention function the model was loaded with (sdpa, eager, ...), as the layer itself calls it."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    eager = sys.modules[type(attn).__module__].eager_attention_forward
    return ALL_ATTENTION_FUNCTIONS.get_interface(attn.config._attn_implementation, eager)
