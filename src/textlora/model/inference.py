"""Batched forward passes for evaluation and prediction: length-sorted batches, no grad."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from textlora import device as devices
from textlora.data.batching import Encoded, collate, eval_batches
from textlora.model.cls_only import cls_only_last_layer, unwrap
from textlora.model.precision import autocast


@torch.inference_mode()
def forward_logits(model: torch.nn.Module, encoded: Encoded, pad_id: int, batch_size: int | None = None,
                   precision: str = "fp32", batches: list[list[int]] | None = None,
                   forward: Callable[[list[int]], Any] | None = None) -> np.ndarray:
    """Logits (n, num_labels) for every text of `encoded`, in input order, computed on the model's device (a text
    split into windows gets its windows' logits pooled: `Encoded.per_text`).

    The one batched-logits loop of textlora (prediction, evaluation, serving, the layer cache). Batches are
    sorted by length so that almost no padding is computed, and a BERT-style last layer runs for [CLS] only
    (`model/cls_only.py`); rows are put back in the original order before returning.

    Args:
        batch_size: rows per pass; None takes the device's default (`textlora.device`).
        precision: 'bf16' or 'fp16' runs the forward under autocast (`model/precision.py`); logits come back fp32.
        batches: the row indices of each pass; None: `eval_batches` at `batch_size` and the device's token budget.
        forward: rows -> the model's output for them; None: `model(**inputs)` on the collated rows.
    """
    was_training = model.training
    model.eval()
    out: np.ndarray | None = None
    device = devices.of(model)
    if batches is None:
        batches = eval_batches(encoded.lengths, devices.eval_batch_size(device, batch_size), devices.eval_tokens(device))
    if forward is None:
        def forward(idx: list[int]) -> Any:
            return model(**collate(encoded, idx, pad_id, device))
    with cls_only_last_layer(model), autocast(model, precision):
        for idx in batches:
            logits = forward(idx).logits.float().cpu().numpy()  # (B, num_labels)
            if out is None:
                out = np.zeros((len(encoded), logits.shape[1]), dtype=np.float32)
            out[idx] = logits
    model.train(was_training)
    if out is None:
        return np.zeros((0, getattr(unwrap(model).config, "num_labels", 0)), dtype=np.float32)
    return encoded.per_text(out)


def quantize_int8(model: torch.nn.Module, per_channel: bool = True) -> torch.nn.Module:
    """Dynamic int8 quantization of every nn.Linear (weights int8, activations quantized per batch).

    Weights get one scale per output channel by default (per tensor with `per_channel=False`), which keeps
    the labels closer to fp32 at the same speed. For inference on a CPU only; the accuracy change is
    measured in bench/infer_vs_pipeline.py.
    """
    import warnings

    with warnings.catch_warnings():  # torch 2.13 announces torchao as the successor of torch.ao.quantization
        warnings.simplefilter("ignore", DeprecationWarning)  # and of quantized tensors: nothing a user can act on
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor", category=UserWarning)
        from torch.ao import quantization as tq

        qconfig = tq.per_channel_dynamic_qconfig if per_channel else tq.default_dynamic_qconfig
        return tq.quantize_dynamic(model, {torch.nn.Linear: qconfig}, dtype=torch.qint8)
