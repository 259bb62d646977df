"""Few-label rungs of the baseline ladder, on the base's mean-pooled sentence embeddings (sentence-transformers):

- `zero-shot`: embed each label's name and each text; the nearest label by cosine wins. No training rows.
- `embed`: the frozen base's normalized embeddings + logistic regression (C picked on validation).
- `setfit`: SetFit's recipe (Tunstall et al. 2022, https://arxiv.org/abs/2209.11055): fine-tune the body on
  positive/negative sentence pairs drawn from the few labelled rows with `CosineSimilarityLoss`, one epoch,
  then logistic regression on the new embeddings. The `setfit` package itself pins transformers 4.x, so the
  recipe is rebuilt here on sentence-transformers; its defaults are `SetFitOptions`'.

>>> from textlora.config import DataConfig
>>> data = load_dataset(DataConfig(path="data/emotion", shots_per_class=8))  # doctest: +SKIP
>>> round(embed_logreg(data).metrics["test"]["accuracy"], 2)  # doctest: +SKIP
0.33

Every rung returns a `BaselineResult`, so `compare` shows it like majority and TF-IDF. Multi-label data:
`embed` and `setfit` fit one logistic regression per label (thresholds tuned on validation, as training does);
`zero-shot` refuses (it would need a threshold on cosine similarity that no training rows set).
"""

from __future__ import annotations

import pickle
import re
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from textlora.baselines import BaselineResult
from textlora.data.splits import Dataset
from textlora.heads import kind_of

EMBED_C = (0.1, 1.0, 10.0, 100.0)
"""Inverse regularisation strengths tried on the unit-length embeddings; the best on validation is kept."""


@dataclass
class EncoderOptions:
    """Which base embeds the texts, and how."""

    model: str = "sentence-transformers/all-MiniLM-L6-v2"
    """A local Hugging Face folder or hub id; the default resolves to the embedded copy (no network)."""
    max_length: int = 256
    """Texts are truncated to this many tokens (the ladder's model.max_length)."""
    device: str = "auto"
    """Where the encoder runs (the ladder's train.device)."""
    seed: int = 42
    """Seeds the pair sampling, SetFit's training and the logistic regression (the ladder's train.seed)."""
    batch_size: int = 32
    """Texts per forward pass when embedding."""


@dataclass
class SetFitOptions:
    """SetFit's contrastive phase; the defaults are setfit 1.x's `TrainingArguments` (src/setfit/training_args.py):
    num_iterations=20, embedding batch 16, 1 epoch, body lr 2e-5, warmup_proportion 0.1, CosineSimilarityLoss."""

    num_iterations: int = 20
    """Rounds of pair sampling: each round pairs every row with one same-label and one other-label row."""
    max_pairs: int | None = 20_000
    """Cap on the pairs (fewer rounds when 2 x rounds x rows exceeds it; at least one round); null: no cap.
    SetFit is meant for a few rows per class; at thousands of rows its 20 rounds would cost hours on a CPU."""
    batch_size: int = 16
    lr: float = 2e-5
    epochs: int = 1
    warmup_ratio: float = 0.1


def load_encoder(options: EncoderOptions) -> Any:
    """A SentenceTransformer of `options.model`'s body with mean pooling (no normalize layer; `encode` normalizes).

    Why: the same mean-pooled embedding for the embedded MiniLM (a sentence-transformers folder) and for any plain
    Hugging Face folder, loaded offline through textlora's resolver."""
    from textlora import device as devices
    from textlora.model.load import resolve_base

    st, modules, _ = _sentence_transformers()
    body = modules.Transformer(resolve_base(options.model), max_seq_length=options.max_length)
    pool = modules.Pooling(body.get_embedding_dimension(), pooling_mode="mean")
    return st(modules=[body, pool], device=str(devices.resolve(options.device)))


def encode(encoder: Any, texts: list[str], options: EncoderOptions) -> np.ndarray:
    """Unit-length mean-pooled embeddings (n, d) of `texts`."""
    import torch

    with torch.inference_mode():
        out = encoder.encode(texts, batch_size=options.batch_size, normalize_embeddings=True,
                             convert_to_numpy=True, show_progress_bar=False)
    return np.asarray(out, dtype=np.float32)


def _encode_cached(encoder: Any, texts: list[str], options: EncoderOptions,
                   cache: dict[str, np.ndarray] | None) -> np.ndarray:
    if cache is None:
        return encode(encoder, texts, options)
    todo = list(dict.fromkeys(t for t in texts if t not in cache))
    if todo:
        cache.update(zip(todo, encode(encoder, todo, options)))
    return np.stack([cache[t] for t in texts]) if texts else np.zeros((0, 0), dtype=np.float32)


def zero_shot(data: Dataset, options: EncoderOptions | None = None,
              cache: dict[str, np.ndarray] | None = None) -> BaselineResult:
    """Nearest label name by cosine similarity; the logits are the similarities. Uses no training rows.
    `cache`: as for `embed_logreg` (the same frozen embeddings).

    Raises:
        DataError: multi-label data (no threshold on a cosine similarity could be set without training rows).
    """
    from textlora.errors import DataError

    options = options or EncoderOptions()
    if data.label_map.multi_label:
        raise DataError("the zero-shot rung takes single-label data; multi-label data needs a threshold per label. "
                        "Drop zero-shot from --rungs, or use embed or setfit.")
    t0 = time.time()
    encoder = load_encoder(options)
    names = [label_text(n) for n in data.label_map.labels]
    labels = encode(encoder, names, options)
    seconds = time.time() - t0
    logits = {s: _encode_cached(encoder, data.splits()[s].texts, options, cache) @ labels.T
              for s in ("validation", "test")}
    metrics = _score(logits, data, thresholds=None)
    return BaselineResult("zero-shot", metrics, 0, len(pickle.dumps(labels)), seconds,
                          details={"label_texts": names, "training_rows_used": 0, "model": options.model})


def embed_logreg(data: Dataset, options: EncoderOptions | None = None, grid: tuple[float, ...] = EMBED_C,
                 cache: dict[str, np.ndarray] | None = None) -> BaselineResult:
    """The frozen base's normalized mean-pooled embeddings + logistic regression (C picked on validation).

    `cache` (embeddings by text, filled as it goes) lets calls with the same `options` share the embeddings of
    validation and test, as the cells of bench/fewshot.py do."""
    options = options or EncoderOptions()
    t0 = time.time()
    encoder = load_encoder(options)
    x = {s: _encode_cached(encoder, sp.texts, options, cache) for s, sp in data.splits().items()}
    return _head_result("embed", data, x, grid, options, t0, {"model": options.model})


def setfit(data: Dataset, options: EncoderOptions | None = None, recipe: SetFitOptions | None = None,
           grid: tuple[float, ...] = EMBED_C) -> BaselineResult:
    """SetFit: contrastive fine-tuning of the body on sentence pairs of the training rows, then logistic
    regression on the tuned embeddings (C picked on validation)."""
    options, recipe = options or EncoderOptions(), recipe or SetFitOptions()
    t0 = time.time()
    encoder = load_encoder(options)
    ids = data.label_map.encode(data.train.labels)
    rounds = _rounds(recipe, len(ids))
    pairs = sample_pairs(ids, rounds, options.seed)
    loss = train_pairs(encoder, data.train.texts, pairs, recipe, options.seed)
    x = {s: encode(encoder, sp.texts, options) for s, sp in data.splits().items()}
    details = {"model": options.model, "pairs": len(pairs), "num_iterations": rounds, "final_loss": loss,
               "recipe": recipe.__dict__}
    return _head_result("setfit", data, x, grid, options, t0, details)


def sample_pairs(ids: list[Any], rounds: int, seed: int) -> list[tuple[int, int, float]]:
    """(i, j, target) row pairs: each round pairs every row with a random row that shares a label (target 1.0)
    and one that shares none (0.0), as SetFit's pair generation does. Multi-label `ids` are lists of ids.

    A row is its own positive only when its class has no other row; a row that shares a label with every row
    gets no negative pairs."""
    rng = np.random.default_rng(seed)
    sets = [set(v) if isinstance(v, list) else {v} for v in ids]
    share = np.array([[bool(a & b) for b in sets] for a in sets])  # (n, n)
    pairs = []
    for _ in range(rounds):
        for i in range(len(ids)):
            same = np.flatnonzero(share[i])
            same = same[same != i] if same.size > 1 else same
            for target, pool in ((1.0, same), (0.0, np.flatnonzero(~share[i]))):
                if pool.size:
                    pairs.append((i, int(rng.choice(pool)), target))
    order = rng.permutation(len(pairs))
    return [pairs[k] for k in order]


def train_pairs(encoder: Any, texts: list[str], pairs: list[tuple[int, int, float]], recipe: SetFitOptions,
                seed: int) -> float:
    """Fine-tune `encoder` in place on `pairs` with CosineSimilarityLoss (AdamW, linear warmup then decay, grads
    clipped at 1.0); returns the mean loss of the last epoch."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    _, _, losses = _sentence_transformers()
    torch.manual_seed(seed)
    loss_fn = losses.CosineSimilarityLoss(encoder)
    steps = recipe.epochs * -(-len(pairs) // recipe.batch_size)
    opt = torch.optim.AdamW(encoder.parameters(), lr=recipe.lr, weight_decay=0.01)
    sched = get_linear_schedule_with_warmup(opt, int(recipe.warmup_ratio * steps), steps)
    dev = encoder.device
    encoder.train()
    total = 0.0
    for _ in range(recipe.epochs):
        total = 0.0
        for start in range(0, len(pairs), recipe.batch_size):
            batch = pairs[start:start + recipe.batch_size]
            features = [_on(encoder.preprocess([texts[p[side]] for p in batch]), dev) for side in (0, 1)]
            loss = loss_fn(features, torch.tensor([p[2] for p in batch], device=dev))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(encoder.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            total += float(loss.detach()) * len(batch)
    encoder.eval()
    return total / max(len(pairs), 1)


def label_text(name: str) -> str:
    """The words a label name stands for: `_`/`-` become spaces and CamelCase is split, lower-cased
    ('MeanOfTransportation' -> 'mean of transportation', 'sadness' -> 'sadness')."""
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", re.sub(r"[_\-]+", " ", str(name)))
    return " ".join(words.split()).lower()


FEWSHOT = {"zero-shot": zero_shot, "embed": embed_logreg, "setfit": setfit}
"""The rungs of this module by name; each takes (data, EncoderOptions)."""


def _rounds(recipe: SetFitOptions, rows: int) -> int:
    if recipe.max_pairs is None:
        return recipe.num_iterations
    return max(1, min(recipe.num_iterations, recipe.max_pairs // max(2 * rows, 1)))


def _head_result(name: str, data: Dataset, x: dict[str, np.ndarray], grid: tuple[float, ...],
                 options: EncoderOptions, t0: float, details: dict[str, Any]) -> BaselineResult:
    """Fit the logistic-regression head on `x['train']`, keep the C of `grid` that scores best on validation."""
    kind = kind_of(data.label_map)
    y = {s: data.label_map.encode(sp.labels) for s, sp in data.splits().items()}
    metric = kind.select("accuracy")
    sign = -1 if metric == "loss" else 1
    best = None
    for c in grid:
        clf = _fit_head(x["train"], y["train"], data.label_map, c, options.seed)
        val = _logits(clf, x["validation"], data.label_map)
        score = sign * kind.epoch_metrics(val, y["validation"])[metric]
        if best is None or score > best[0]:
            best = (score, c, clf)
    _, c, clf = best
    seconds = time.time() - t0
    logits = {s: _logits(clf, x[s], data.label_map) for s in ("validation", "test")}
    thresholds = kind.tune(logits["validation"], y["validation"])
    params = sum(int(getattr(e, "coef_", np.zeros(0)).size + getattr(e, "intercept_", np.zeros(0)).size)
                 for e in getattr(clf, "estimators_", [clf]))  # one-vs-rest: a constant label has no weights
    details.update({"C": c, "C_grid": list(grid), "train_rows": len(data.train)})
    return BaselineResult(name, _score(logits, data, thresholds), params, len(pickle.dumps(clf)), seconds,
                          details=details)


def _fit_head(x: np.ndarray, y: list[Any], label_map: Any, c: float, seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    lr = LogisticRegression(C=c, max_iter=2000, random_state=seed)
    if label_map.multi_label:
        from textlora.metrics import multi_hot

        return OneVsRestClassifier(lr).fit(x, multi_hot(y, label_map.num_labels))
    return lr.fit(x, np.asarray(y))


def _logits(clf: Any, x: np.ndarray, label_map: Any) -> np.ndarray:
    """(n, k) logits over every label: log-probabilities (single-label; ~0 probability for a label absent from
    train) or per-label log-odds (multi-label)."""
    if label_map.multi_label:
        return np.asarray(clf.decision_function(x), dtype=np.float64).reshape(len(x), -1)
    out = np.full((x.shape[0], label_map.num_labels), np.log(1e-12))
    out[:, clf.classes_] = clf.predict_log_proba(x)
    return out


def _score(logits: dict[str, np.ndarray], data: Dataset, thresholds: np.ndarray | None) -> dict[str, Any]:
    kind = kind_of(data.label_map)
    return {s: kind.metrics(logits[s], data.label_map.encode(data.splits()[s].labels), thresholds)
            for s in logits}


def _on(features: dict[str, Any], dev: Any) -> dict[str, Any]:
    """The tensors of `features` moved to `dev` (sentence-transformers 6 adds a 'modality' string)."""
    return {k: v.to(dev) if hasattr(v, "to") else v for k, v in features.items()}


def _sentence_transformers() -> tuple[Any, Any, Any]:
    """(SentenceTransformer, its modules, its losses) at their sentence-transformers 6 homes (the `fewshot` extra;
    `models` and `losses` at the top level are deprecated there)."""
    try:
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer import losses, modules
    except ImportError:
        raise ImportError("the embed, setfit and zero-shot rungs need sentence-transformers >= 6.2: "
                          "pip install 'textlora[fewshot]'.") from None
    return SentenceTransformer, modules, losses
