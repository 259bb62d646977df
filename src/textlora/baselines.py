"""Baselines without a transformer, on the same splits as a run: the majority class, and TF-IDF word
and bigram features with logistic regression (scikit-learn). They bottom the ladder `textlora compare
--baselines` climbs, so a user sees what fine-tuning a transformer buys.

>>> from textlora.config import DataConfig
>>> result = tfidf_logreg(load_dataset(DataConfig(path="data/emotion")))  # doctest: +SKIP
>>> round(result.metrics["test"]["accuracy"], 2)  # doctest: +SKIP
0.86
"""

from __future__ import annotations

import pickle
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from textlora.data.splits import Dataset
from textlora.heads import kind_of

TFIDF_C = (0.3, 1.0, 3.0, 10.0, 30.0)
"""Inverse regularisation strengths tried; the one with the best validation accuracy is kept."""


@dataclass
class BaselineResult:
    """Metrics of a baseline and what it cost, in the units `compare` shows for runs."""

    name: str
    metrics: dict[str, Any]
    """{'validation': ..., 'test': ...} as in a run's metrics.json."""
    params: int
    """Fitted numbers (class priors; or the coefficients and intercepts)."""
    size_bytes: int
    """Size of the pickled model."""
    train_seconds: float
    peak_rss_mb: float | None = None
    details: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BaselineResult:
        return cls(**d)


def majority(data: Dataset) -> BaselineResult:
    """Predict the most frequent training label; the probabilities are the training label frequencies."""
    t0 = time.time()
    y = {s: np.asarray(data.label_map.encode(sp.labels)) for s, sp in data.splits().items()}
    prior = np.bincount(y["train"], minlength=data.label_map.num_labels) / len(y["train"])
    seconds = time.time() - t0
    logits = np.log(np.maximum(prior, 1e-12))
    metrics = {s: _metrics(np.tile(logits, (len(y[s]), 1)), y[s], data) for s in ("validation", "test")}
    return BaselineResult("majority", metrics, int(prior.size), len(pickle.dumps(prior)), seconds,
                          details={"predicts": data.label_map.labels[int(prior.argmax())]})


def tfidf_logreg(data: Dataset, seed: int = 42, grid: tuple[float, ...] = TFIDF_C) -> BaselineResult:
    """TF-IDF (words and bigrams, sublinear tf) + multinomial logistic regression; C picked on validation."""
    t0 = time.time()
    fit = fit_tfidf_logreg(data, seed, grid)
    seconds = time.time() - t0
    y = {s: np.asarray(data.label_map.encode(data.splits()[s].labels)) for s in fit.logits}
    metrics = {s: _metrics(fit.logits[s], y[s], data) for s in fit.logits}
    params = int(fit.classifier.coef_.size + fit.classifier.intercept_.size)
    return BaselineResult("tfidf_logreg", metrics, params, len(pickle.dumps((fit.vectorizer, fit.classifier))),
                          seconds, details={"C": fit.c, "vocabulary": len(fit.vectorizer.vocabulary_),
                                            "C_grid": list(grid)})


@dataclass
class TfidfFit:
    """A fitted TF-IDF + logistic regression model and its log-probabilities on validation and test."""

    vectorizer: Any
    classifier: Any
    c: float
    logits: dict[str, np.ndarray]
    """{'validation': (n, k), 'test': (n, k)} log-probabilities over all k labels."""


def fit_tfidf_logreg(data: Dataset, seed: int = 42, grid: tuple[float, ...] = TFIDF_C) -> TfidfFit:
    """Fit the TF-IDF baseline on `data`'s train split, keeping the C of `grid` with the best validation
    accuracy; also used by bench/ensemble.py, which averages its probabilities with runs'."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    y = {s: np.asarray(data.label_map.encode(sp.labels)) for s, sp in data.splits().items()}
    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    x = {"train": vec.fit_transform(data.train.texts)}
    x.update({s: vec.transform(data.splits()[s].texts) for s in ("validation", "test")})
    best = None
    for c in grid:
        clf = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(x["train"], y["train"])
        acc = float((clf.predict(x["validation"]) == y["validation"]).mean())
        if best is None or acc > best[0]:
            best = (acc, c, clf)
    _, c, clf = best
    k = data.label_map.num_labels
    return TfidfFit(vec, clf, c, {s: _full_log_proba(clf, x[s], k) for s in ("validation", "test")})


BASELINES = {"majority": majority, "tfidf_logreg": tfidf_logreg}


def _full_log_proba(clf: Any, x: Any, k: int) -> np.ndarray:
    """Log-probabilities over all k labels (a label absent from train gets ~0 probability)."""
    out = np.full((x.shape[0], k), np.log(1e-12))
    out[:, clf.classes_] = clf.predict_log_proba(x)
    return out


def _metrics(logits: np.ndarray, y: np.ndarray, data: Dataset) -> dict[str, Any]:
    return kind_of(data.label_map).metrics(logits, y)
