"""Frozen lower layers computed once: when only the top layers (and the head) train, the hidden states
that enter the first trained layer are the same in every epoch, so we compute them once per split and
run only the upper layers afterwards.

Why our own code: neither Trainer nor PEFT offers it, and it is the largest single speed-up of LoRA on a
CPU when adapters sit on the top layers (`lora.top_layers`) or the body is frozen (`head`): the frozen
layers cost a forward pass once instead of once per epoch (bench/RESULTS.md). It is exact: the lower
layers are frozen and, for the cache to be used, free of dropout, and padded positions are masked out
of attention, so a cached batch gives the logits of an uncached one up to float rounding.

How: the base's embeddings module is swapped for a `_Feed` that returns the cached states, and its
layer list for the upper layers, for the duration of one forward call; the model's own forward
(attention masks, pooling, head, PEFT adapters) runs unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from textlora import device as devices
from textlora.data.batching import Encoded, collate, eval_batches
from textlora.model import patches
from textlora.model.arch import CACHEABLE, EMBEDDING_NAMES, layer_list, layer_of, unwrap
from textlora.model.inference import forward_logits


def first_trained_layer(model: torch.nn.Module) -> int:
    """Index of the lowest layer holding a trainable parameter: 0 if the embeddings train, the number of
    layers if none does (head-only); 0 when the layer list cannot be found."""
    hf = unwrap(model)
    found = layer_list(hf)
    if found is None:
        return 0
    name, n = found
    lowest = n
    for pname, p in hf.named_parameters():
        if not p.requires_grad:
            continue
        i = layer_of(pname, name)
        if i is not None:
            lowest = min(lowest, i)
        elif pname.split(".")[0] == hf.base_model_prefix and _in_embeddings(pname):
            return 0
    return lowest


def _in_embeddings(pname: str) -> bool:
    return any(f".{name}." in pname for name in EMBEDDING_NAMES)


def cache_blocker(model: torch.nn.Module, split_at: int) -> str | None:
    """Why the outputs of layers below `split_at` cannot be cached (None when they can)."""
    hf = unwrap(model)
    model_type = getattr(hf.config, "model_type", "")
    if split_at == 0:
        return "every layer trains"
    if model_type not in CACHEABLE:
        return f"layer caching supports {sorted(CACHEABLE)}, not {model_type!r}"
    if not patches.enabled("layer_cache"):
        return patches.why_disabled("layer_cache")
    emb_name, layers_name = CACHEABLE[model_type]
    base = hf.base_model
    lower = [base.get_submodule(emb_name), *base.get_submodule(layers_name)[:split_at]]
    if any(isinstance(m, torch.nn.Dropout) and m.p > 0 for part in lower for m in part.modules()):
        return "the frozen layers have dropout (set model.dropout=0)"
    return None


class _Feed(torch.nn.Module):
    """Stands in for the embeddings module: returns the cached hidden states it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.value: torch.Tensor | None = None

    def forward(self, *args, **kwargs) -> torch.Tensor:
        return self.value


@dataclass
class LayerCache:
    """Per-example hidden states (unpadded, (len, hidden)) entering layer `split_at`, per split, kept on `store`
    (the model's device when they fit there, else the host) and moved to the model's device per batch."""

    model: torch.nn.Module
    split_at: int
    hidden: dict[str, list[torch.Tensor]]
    seconds: float = 0.0
    """Time it took to build."""
    store: torch.device = torch.device("cpu")
    """Where the states are kept."""

    @classmethod
    def build(cls, model: torch.nn.Module, splits: dict[str, Encoded], pad_id: int, split_at: int,
              batch_size: int | None = None, store: torch.device | None = None) -> LayerCache:
        """Run the frozen embeddings + layers [0, split_at) once over every split, on the model's device."""
        t = time.perf_counter()
        cache = cls(model, split_at, {}, store=store or devices.of(model))
        for name, encoded in splits.items():
            cache.hidden[name] = cache._lower_states(encoded, pad_id, batch_size)
        cache.seconds = time.perf_counter() - t
        return cache

    @property
    def nbytes(self) -> int:
        return sum(h.numel() * h.element_size() for rows in self.hidden.values() for h in rows)

    def inputs(self, split: str, encoded: Encoded, idx: Sequence[int], pad_id: int) -> dict[str, torch.Tensor]:
        """Model inputs for rows `idx`, with the cached states they need under the key 'cached'."""
        device = devices.of(self.model)
        inputs = collate(encoded, idx, pad_id, device)
        cached = torch.nn.utils.rnn.pad_sequence([self.hidden[split][i] for i in idx], batch_first=True)
        inputs["cached"] = cached.to(device, non_blocking=True)
        return inputs

    def forward(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor]):
        """`model(**inputs)` running only the layers from `split_at` up, fed from the cache."""
        inputs = dict(inputs)
        cached = inputs.pop("cached")
        with self._upper_only() as feed:
            feed.value = cached
            return model(**inputs)

    def logits(self, model: torch.nn.Module, split: str, encoded: Encoded, pad_id: int,
               batch_size: int | None = None) -> np.ndarray:
        """Like `model.inference.forward_logits` (the same loop), from the cache of `split`."""
        return forward_logits(model, encoded, pad_id, batch_size,
                              forward=lambda idx: self.forward(model, self.inputs(split, encoded, idx, pad_id)))

    def _parts(self) -> tuple[torch.nn.Module, str, str, torch.nn.ModuleList]:
        base = unwrap(self.model).base_model
        emb_name, layers_name = CACHEABLE[unwrap(self.model).config.model_type]
        return base, emb_name, layers_name, base.get_submodule(layers_name)

    @contextmanager
    def _upper_only(self) -> Iterator[_Feed]:
        base, emb_name, layers_name, layers = self._parts()
        feed = _Feed()
        with _swapped(base, emb_name, feed), _swapped(base, layers_name, torch.nn.ModuleList(layers[self.split_at:])):
            yield feed

    @torch.no_grad()  # not inference_mode: the states are inputs of training steps later
    def _lower_states(self, encoded: Encoded, pad_id: int, batch_size: int | None) -> list[torch.Tensor]:
        base, _, layers_name, layers = self._parts()
        was_training = base.training
        base.eval()
        device = devices.of(base)
        rows: list[torch.Tensor | None] = [None] * len(encoded)
        batches = eval_batches(encoded.lengths, devices.eval_batch_size(device, batch_size), devices.eval_tokens(device))
        with _swapped(base, layers_name, torch.nn.ModuleList(layers[:self.split_at])):
            for idx in batches:
                inputs = collate(encoded, idx, pad_id, device)
                states = base(**inputs).last_hidden_state.to(self.store)  # (B, T, hidden) after layer split_at - 1
                for row, i in enumerate(idx):
                    rows[i] = states[row, :len(encoded.input_ids[i])].clone()
        base.train(was_training)
        return rows


@contextmanager
def _swapped(root: torch.nn.Module, dotted: str, replacement: torch.nn.Module) -> Iterator[None]:
    """Replace the submodule at `dotted` by `replacement` for the duration of the block."""
    parent_name, _, leaf = dotted.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    original = getattr(parent, leaf)
    setattr(parent, leaf, replacement)
    try:
        yield
    finally:
        setattr(parent, leaf, original)


def cache_frozen_layers(model: torch.nn.Module, splits: dict[str, Encoded], pad_id: int, device: torch.device,
                        processes: int = 1, batch_size: int | None = None) -> tuple[LayerCache | None, str]:
    """The cache of `model`'s frozen lower layers for every split, when they can be cached, and a line saying
    what was done (empty when every layer trains). Kept on `device` when it takes under half of its free memory,
    else on the host under the same rule; none under DDP, where each rank would cache every split."""
    split_at = first_trained_layer(model)
    if split_at == 0:
        return None, ""
    hidden = getattr(unwrap(model).config, "hidden_size", 0)
    need_mb = sum(sum(e.lengths) for e in splits.values()) * hidden * 4 / 2**20
    places = [device] + ([torch.device("cpu")] if device.type != "cpu" else [])
    free = {d: devices.free_mb(d) for d in places}
    store = next((d for d in places if free[d] is None or need_mb <= free[d] / 2), None)
    why = (cache_blocker(model, split_at)
           or ("several processes train (DDP)" if processes > 1 else None)
           or (f"it needs {need_mb:,.0f} MB, over half the memory available "
               f"({', '.join(f'{d}: {f:,.0f} MB' for d, f in free.items())})" if store is None else None))
    if why:
        return None, f"frozen layers 0-{split_at - 1} run in every step, not cached: {why}"
    cache = LayerCache.build(model, splits, pad_id, split_at, batch_size, store)
    return cache, (f"cached the outputs of frozen layers 0-{split_at - 1} for every split: "
                   f"{cache.nbytes / 2**20:,.0f} MB on {store} in {cache.seconds:.0f}s")
