"""Tokenize once, then batch by length with dynamic padding.

Why our own batcher instead of `DataCollatorWithPadding` over a shuffled sampler: sorting
examples of similar length into one batch removes almost all padding tokens, which on a CPU
is the single largest speed-up for short texts (see bench/RESULTS.md).
"""

from __future__ import annotations

import functools
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from textlora.device import to as to_device


@dataclass
class Encoded:
    """Token ids of every row, unpadded; with windows (`model.long_text=windows`) a text spans several rows and
    `doc` says which text each row is a window of."""

    input_ids: list[list[int]]
    doc: list[int] | None = None
    """Index of the text each row belongs to (non-decreasing); None: one row per text."""
    pool: str = "mean"
    """How `per_text` pools a text's window rows: mean or max of their logits."""

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]

    @property
    def texts(self) -> int:
        """How many texts the rows come from."""
        return len(self.input_ids) if self.doc is None else (self.doc[-1] + 1 if self.doc else 0)

    def per_text(self, row_logits: np.ndarray) -> np.ndarray:
        """Row logits (rows, k) -> one row per text: each text's windows pooled (mean or max); unchanged without
        windows. Why pool logits, not probabilities: a mean of logits is a product of the windows' likelihoods,
        so one confident window outweighs several unsure ones, and max keeps the strongest evidence per class."""
        if self.doc is None:
            return row_logits
        doc = np.asarray(self.doc)
        out = np.zeros((self.texts, row_logits.shape[1]), dtype=row_logits.dtype)
        if self.pool == "max":
            out.fill(-np.inf)
            np.maximum.at(out, doc, row_logits)
            return out
        np.add.at(out, doc, row_logits)
        return out / np.bincount(doc, minlength=self.texts)[:, None].astype(row_logits.dtype)

    def expand(self, per_text: Sequence) -> list:
        """A per-text list (labels) repeated for each of the text's rows, for training on every window."""
        return list(per_text) if self.doc is None else [per_text[d] for d in self.doc]


def encode_for(tokenizer, texts: Sequence[str], model_cfg: Any) -> Encoded:
    """Encode `texts` as the run's `ModelConfig` says (max_length, truncation or windows): the one place that
    reads those settings, for training, evaluation, prediction and serving alike."""
    if model_cfg.long_text == "windows":
        return encode_windows(tokenizer, texts, model_cfg.max_length, model_cfg.resolved_stride(),
                              model_cfg.max_windows, model_cfg.window_pool)
    return encode(tokenizer, texts, model_cfg.max_length, model_cfg.truncation)


def encode_windows(tokenizer, texts: Sequence[str], max_length: int, stride: int, max_windows: int = 32,
                   pool: str = "mean") -> Encoded:
    """Split each text into windows of at most `max_length` tokens (special tokens included) that share `stride`
    tokens with the previous one, at most `max_windows` per text from its start; a short text is one row.

    Why our own split rather than the tokenizer's `return_overflowing_tokens`: that works on fast tokenizers
    only, and it repeats the whole batch's special-token logic per overflow; this slices the ids once."""
    before, after = _special_tokens_around(tokenizer)
    budget = max(1, max_length - before - after)
    step = max(1, budget - stride)
    cap = budget + step * (max_windows - 1)  # tokens the allowed windows can cover
    texts = [clip_text(tokenizer, t, cap + before + after, "head") for t in texts]
    ids_all, doc = [], []
    for i, ids in enumerate(tokenizer(list(texts), padding=False, verbose=False)["input_ids"]):
        end = len(ids) - after
        body, pre, post = ids[before:end], ids[:before], ids[end:]
        starts = range(0, max(1, len(body) - stride), step) if len(body) > budget else range(1)
        for n, start in enumerate(starts):
            if n == max_windows:
                break
            ids_all.append(pre + body[start:start + budget] + post)
            doc.append(i)
    return Encoded(ids_all, doc, pool)


def encode(tokenizer, texts: Sequence[str], max_length: int, truncation: str = "head") -> Encoded:
    """Tokenize `texts` without padding, each at most `max_length` tokens with the special tokens.

    truncation: which tokens a longer text keeps: "head" (its start), "tail" (its end) or "head+tail" (a quarter
    of the budget from its start, the rest from its end). Our own slicing rather than the tokenizer's
    `truncation_side`, which has no head+tail."""
    texts = [clip_text(tokenizer, t, max_length, truncation) for t in texts]  # a 50 MB row: 8 kB tokenized
    if truncation == "head":
        enc = tokenizer(list(texts), truncation=True, max_length=max_length, padding=False)
        return Encoded(enc["input_ids"])
    before, after = _special_tokens_around(tokenizer)
    budget = max(1, max_length - before - after)
    head = budget // 4 if truncation == "head+tail" else 0
    out = []
    for ids in tokenizer(list(texts), padding=False, verbose=False)["input_ids"]:
        end = len(ids) - after
        out.append(ids[:before] + _keep(ids[before:end], budget, head) + ids[end:])
    return Encoded(out)


CHARS_PER_TOKEN = 32
"""First guess at how many characters `max_length` tokens come from: English averages 4 to 5 per token; 32 leaves
room for long words and runs of spaces. `clip_text` checks the guess and widens the window when it falls short."""
_MARGIN = 8
"""Spare whole tokens a window must hold: a tokenizer that trims spaces off its offsets (RoBERTa) may count a
space token at the cut edge as whole."""


def clip_text(tokenizer, text: str, max_length: int, truncation: str = "head") -> str:
    """`text` cut by characters to the part its kept tokens come from: the start (head), the end (tail), or both
    ends joined by a space (head+tail); `text` itself when it is short or the tokenizer gives no offsets.

    Why: tokenizing a 50 MB row whole took 47 s and 6.8 GB before truncation threw nearly all of it away.
    The cut never changes the ids `encode` returns: a window is kept only when it holds at least `max_length`
    whole tokens (and a few spare) before its cut edge, counted from the tokenizer's own offsets. Only tokens on the far side of
    the last (head) or first (tail) space inside the window may differ from the uncut text's, since every
    tokenizer we support splits words at spaces first. Else the window grows fourfold, up to the whole text.
    """
    window = max_length * CHARS_PER_TOKEN
    if len(text) <= window or not getattr(tokenizer, "is_fast", False):
        return text
    sides = {"head": ("head",), "tail": ("tail",), "head+tail": ("head", "tail")}[truncation]
    while len(text) > window * len(sides):
        parts = {side: _window(text, side, window) for side in sides}
        if all(_whole_tokens(tokenizer, part, side) >= max_length + _MARGIN for side, part in parts.items()):
            return " ".join(parts.values())
        window *= 4
    return text


def _window(text: str, side: str, window: int) -> str:
    return text[:window] if side == "head" else text[len(text) - window:]


def _whole_tokens(tokenizer, part: str, side: str) -> int:
    """How many tokens of `part` lie wholly before its last space (head), or from its first space before a
    non-space (tail): the tokens the uncut text has too. Only ' ' counts: every tokenizer splits words there."""
    offsets = tokenizer(part, add_special_tokens=False, return_offsets_mapping=True, verbose=False)["offset_mapping"]
    if side == "head":
        edge = part.rfind(" ")
        return sum(end <= edge for _, end in offsets) if edge > 0 else 0
    edge = next((i for i in _spaces(part) if i + 1 < len(part) and not part[i + 1].isspace()), None)
    return sum(start >= edge for start, _ in offsets) if edge is not None else 0


def _spaces(text: str) -> Iterator[int]:
    i = text.find(" ")
    while i >= 0:
        yield i
        i = text.find(" ", i + 1)


@functools.cache
def _special_tokens_around(tokenizer) -> tuple[int, int]:
    """How many special tokens the tokenizer puts before and after a single text's tokens (BERT: 1 and 1,
    GPT-2: 0 and 0), read off one probe text once per tokenizer (serve encodes every request)."""
    full = tokenizer("hello")["input_ids"]
    body = tokenizer("hello", add_special_tokens=False)["input_ids"]
    for before in range(len(full) - len(body) + 1):
        if full[before:before + len(body)] == body:
            return before, len(full) - len(body) - before
    raise ValueError(f"model.truncation tail and head+tail need a tokenizer that puts its special tokens around a "
                     f"text's tokens; this one gives {full} for the tokens {body}. Use model.truncation=head.")


def _keep(ids: list[int], budget: int, head: int) -> list[int]:
    """The first `head` and the last `budget - head` of `ids` (all of them when they fit)."""
    if len(ids) <= budget:
        return ids
    return ids[:head] + ids[len(ids) - (budget - head):]


def train_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int,
                  pool: int = 64) -> list[list[int]]:
    """Indices of each training batch for one epoch: shuffled, grouped into pools of `pool` batches,
    sorted by length inside a pool, then batch order shuffled. Deterministic in (seed, epoch)."""
    rng = random.Random(seed * 100_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches = []
    span = batch_size * pool
    for start in range(0, len(order), span):
        chunk = sorted(order[start:start + span], key=lambda i: lengths[i])
        batches += [chunk[j:j + batch_size] for j in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def eval_batches(lengths: Sequence[int], batch_size: int, max_tokens: int = 16384) -> list[list[int]]:
    """Indices of inference batches: longest first, each at most `batch_size` rows and about
    `max_tokens` padded tokens, so long texts do not blow up memory."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches, cur = [], []
    for i in order:
        width = lengths[cur[0]] if cur else lengths[i]
        if cur and (len(cur) >= batch_size or (len(cur) + 1) * width > max_tokens):
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


def collate(encoded: Encoded, idx: Sequence[int], pad_id: int, device: torch.device | None = None) -> dict[str, torch.Tensor]:
    """Right-padded `input_ids` and `attention_mask` for rows `idx`, built on the CPU and moved to `device`
    (`textlora.device.to`): the one place where a batch reaches the run's device."""
    seqs = [encoded.input_ids[i] for i in idx]
    width = max(len(s) for s in seqs)
    cpu = torch.device("cpu")
    ids = torch.tensor([s + [pad_id] * (width - len(s)) for s in seqs], dtype=torch.long, device=cpu)
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], dtype=torch.long, device=cpu)
    batch = {"input_ids": ids, "attention_mask": mask}
    return batch if device is None else to_device(batch, device)


def iterate(encoded: Encoded, batches: list[list[int]], pad_id: int,
            device: torch.device | None = None) -> Iterator[tuple[list[int], dict]]:
    """Yield (indices, model inputs on `device`) for each batch."""
    for idx in batches:
        yield idx, collate(encoded, idx, pad_id, device)
