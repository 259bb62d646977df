"""Metrics as pure functions over (y_true, y_pred or scores, labels). No model code here."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro and weighted precision/recall/F1, per-class report and confusion matrix.

    >>> m = classification_metrics([0, 1, 1], [0, 1, 0], ["neg", "pos"])
    >>> round(m["accuracy"], 3), m["confusion_matrix"]
    (0.667, [[1, 0], [1, 1]])
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    ids = list(range(len(labels)))
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    out: dict[str, Any] = {"n": int(len(y_true)), "accuracy": float(accuracy_score(y_true, y_pred))}
    for avg in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=ids, average=avg, zero_division=0)
        out.update({f"precision_{avg}": float(p), f"recall_{avg}": float(r), f"f1_{avg}": float(f)})
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=ids, average=None, zero_division=0)
    out["per_class"] = {
        name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
        for i, name in enumerate(labels)
    }
    out["labels"] = list(labels)
    out["confusion_matrix"] = confusion_matrix(y_true, y_pred, labels=ids).tolist()
    return out


def cross_entropy(logits: np.ndarray, y_true: Sequence[int]) -> float:
    """Mean cross-entropy of integer targets under `logits` (n, k), computed stably."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(logits)), np.asarray(y_true)].mean())


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax."""
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


HEADLINE = ("accuracy", "f1_macro", "f1_weighted", "precision_macro", "recall_macro", "f1_micro",
            "f1_samples", "single_label_accuracy")


def headline(metrics: dict[str, Any]) -> dict[str, float]:
    """The scalar metrics worth a line in a table."""
    return {k: metrics[k] for k in HEADLINE + ("loss",) if k in metrics}


# --- multi-label (GoEmotions style: a set of labels per example) --------------------------------------

THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)
"""Candidate decision thresholds per label: 0.05, 0.10, ..., 0.95."""


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Element-wise logistic function: independent per-label scores for multi-label runs."""
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))


def multi_hot(ids: Sequence[Sequence[int]], num_labels: int) -> np.ndarray:
    """(n, num_labels) 0/1 matrix from a list of label-id lists.

    >>> multi_hot([[0, 2], []], 3).tolist()
    [[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
    """
    out = np.zeros((len(ids), num_labels), dtype=np.float32)
    for i, row in enumerate(ids):
        out[i, list(row)] = 1.0
    return out


def binary_cross_entropy(logits: np.ndarray, y_true: np.ndarray) -> float:
    """Mean per-label binary cross-entropy of a multi-hot `y_true` under `logits`, computed stably."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y_true, dtype=np.float64)
    return float((np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))).mean())


def tune_thresholds(y_true: np.ndarray, scores: np.ndarray, grid: Sequence[float] = THRESHOLD_GRID) -> np.ndarray:
    """Per label, the threshold of `grid` that maximizes that label's F1 on (y_true, scores).

    Ties go to the threshold closest to 0.5; a label with no positive example keeps 0.5.

    >>> tune_thresholds(np.array([[1], [0], [1]]), np.array([[0.3], [0.1], [0.8]])).tolist()
    [0.3]
    """
    y = np.asarray(y_true) > 0
    scores = np.asarray(scores)
    grid = np.asarray(grid, dtype=np.float64)
    order = np.argsort(np.abs(grid - 0.5), kind="stable")  # try 0.5 first so ties keep it
    out = np.full(y.shape[1], 0.5)
    for j in range(y.shape[1]):
        if not y[:, j].any():
            continue
        pred = scores[:, j][None, :] >= grid[order][:, None]  # (grid, n)
        tp = (pred & y[:, j]).sum(axis=1)
        f1 = 2 * tp / np.maximum(pred.sum(axis=1) + y[:, j].sum(), 1)
        out[j] = grid[order][int(f1.argmax())]
    return out


def multilabel_metrics(y_true: np.ndarray, scores: np.ndarray, labels: Sequence[str],
                       thresholds: np.ndarray | float = 0.5) -> dict[str, Any]:
    """Multi-label metrics of per-label `scores` (n, k) against a multi-hot `y_true` (n, k).

    A label is predicted when its score is >= its threshold. `accuracy` is the subset accuracy (the
    predicted set equals the true set), as scikit-learn's `accuracy_score` defines it for multi-label.
    `single_label_accuracy` is the accuracy of argmax over the examples that carry exactly one label,
    comparable to single-label (multi-class) figures such as the GoEmotions accuracy of the reference experiments.

    >>> m = multilabel_metrics(np.array([[1, 0], [1, 1]]), np.array([[0.9, 0.2], [0.7, 0.6]]), ["a", "b"])
    >>> m["accuracy"], m["f1_micro"], m["single_label_accuracy"]
    (1.0, 1.0, 1.0)
    """
    from sklearn.metrics import precision_recall_fscore_support

    y = (np.asarray(y_true) > 0).astype(int)
    scores = np.asarray(scores)
    thresholds = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (y.shape[1],))
    pred = (scores >= thresholds[None, :]).astype(int)
    out: dict[str, Any] = {"n": int(len(y)), "accuracy": float((pred == y).all(axis=1).mean()) if len(y) else 0.0}
    out["subset_accuracy"] = out["accuracy"]
    for avg in ("micro", "macro", "weighted", "samples"):
        p, r, f, _ = precision_recall_fscore_support(y, pred, average=avg, zero_division=0)
        out.update({f"precision_{avg}": float(p), f"recall_{avg}": float(r), f"f1_{avg}": float(f)})
    p, r, f, s = precision_recall_fscore_support(y, pred, average=None, zero_division=0)
    out["per_class"] = {
        name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i]),
               "threshold": float(thresholds[i])}
        for i, name in enumerate(labels)
    }
    single = y.sum(axis=1) == 1
    out["n_single_label"] = int(single.sum())
    out["single_label_accuracy"] = (float((scores[single].argmax(axis=1) == y[single].argmax(axis=1)).mean())
                                    if single.any() else float("nan"))
    out["labels"] = list(labels)
    return out
