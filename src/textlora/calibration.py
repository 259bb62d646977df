"""Calibration and thresholds as pure functions over logits and labels: reliability bins, expected
calibration error (ECE), temperature scaling (Guo et al. 2017, https://arxiv.org/abs/1706.04599) and
the per-label F1 of multi-label outputs at their thresholds (tuned by `textlora.metrics.tune_thresholds`).

>>> import numpy as np
>>> logits = np.array([[4.0, 0.0], [3.0, 0.0], [0.0, 2.0], [0.0, 5.0]])
>>> round(expected_calibration_error(softmax(logits), [0, 1, 1, 1]), 3)
0.262
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from textlora.metrics import cross_entropy, softmax


@dataclass
class ReliabilityBins:
    """Equal-width confidence bins: mean confidence, accuracy and count of each bin."""

    edges: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    count: np.ndarray


def reliability_bins(probs: np.ndarray, y_true: Sequence[int], n_bins: int = 15) -> ReliabilityBins:
    """Group predictions by top-class confidence into `n_bins` equal-width bins over [0, 1]."""
    probs = np.asarray(probs, dtype=np.float64)
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == np.asarray(y_true)).astype(float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins).astype(float)
    safe = np.maximum(count, 1)
    return ReliabilityBins(edges, np.bincount(which, conf, n_bins) / safe,
                           np.bincount(which, correct, n_bins) / safe, count)


def expected_calibration_error(probs: np.ndarray, y_true: Sequence[int], n_bins: int = 15) -> float:
    """ECE: the count-weighted mean gap between accuracy and confidence over the bins."""
    b = reliability_bins(probs, y_true, n_bins)
    if b.count.sum() == 0:
        return 0.0
    return float((b.count * np.abs(b.accuracy - b.confidence)).sum() / b.count.sum())


def fit_temperature(logits: np.ndarray, y_true: Sequence[int]) -> float:
    """The temperature T > 0 minimising the cross-entropy of `softmax(logits / T)` (a 1-D search
    over log T: golden-section on [1/20, 20], enough for one parameter)."""
    logits = np.asarray(logits, dtype=np.float64)

    def nll(log_t: float) -> float:
        return cross_entropy(logits / np.exp(log_t), y_true)

    lo, hi = np.log(0.05), np.log(20.0)
    g = (np.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = nll(a), nll(b)
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = nll(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = nll(b)
    return float(np.exp((lo + hi) / 2))


@dataclass
class Calibration:
    """ECE before and after temperature scaling; `applied` when it lowers validation ECE."""

    temperature: float
    applied: bool
    ece: dict[str, float]
    """ECE of the raw model by split, e.g. {'validation': 0.04, 'test': 0.05}."""
    ece_scaled: dict[str, float]
    """ECE after dividing the logits by `temperature`, by split."""


def calibrate(logits: dict[str, np.ndarray], labels: dict[str, Sequence[int]], n_bins: int = 15) -> Calibration:
    """Fit a temperature on `logits['validation']` and measure ECE on every split, raw and scaled.

    The temperature is applied (`applied=True`) only if it lowers the validation ECE.
    """
    t = fit_temperature(logits["validation"], labels["validation"])
    ece = {s: expected_calibration_error(softmax(v), labels[s], n_bins) for s, v in logits.items()}
    scaled = {s: expected_calibration_error(softmax(v / t), labels[s], n_bins) for s, v in logits.items()}
    return Calibration(t, scaled["validation"] < ece["validation"], ece, scaled)


def temperature_record(logits: np.ndarray, y_true: Sequence[int], n_bins: int = 15) -> dict[str, float | bool]:
    """What training records in `calibration.json` of a single-label run: the temperature fitted on validation
    `logits`, the validation ECE before and after it, and whether `predict` / `serve` apply it.

    Why: scores are divided by T only where that measurably helps (it lowers validation ECE); T > 0, so the
    argmax, and with it every predicted label, is the same either way.
    """
    cal = calibrate({"validation": logits}, {"validation": y_true}, n_bins)
    return {"temperature": cal.temperature, "ece_before": cal.ece["validation"],
            "ece_after": cal.ece_scaled["validation"], "applied": bool(cal.applied)}


def per_label_f1(scores: np.ndarray, y_true: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """F1 of each label of a multi-label output at its threshold."""
    pred = np.asarray(scores) >= np.asarray(thresholds)[None, :]
    y = np.asarray(y_true).astype(bool)
    return np.array([_f1(y[:, j], pred[:, j]) for j in range(y.shape[1])])


def _f1(y: np.ndarray, p: np.ndarray) -> float:
    tp = float(np.sum(y & p))
    denom = float(np.sum(y) + np.sum(p))
    return 2 * tp / denom if denom else 0.0
