"""What an audit finds in a dataset: likely label errors (confident learning over out-of-fold probabilities),
duplicated texts within and across splits, class balance and text lengths, cross-validated scores.

Pure functions over texts, labels and arrays: no model, no files.

Confident learning: Northcutt, Jiang & Chuang, "Confident Learning: Estimating Uncertainty in Dataset Labels"
(JAIR 2021), as implemented by cleanlab (`cleanlab.filter.find_label_issues`, `cleanlab.rank`).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from textlora.data.splits import Dataset

_ROW_NUMBER = re.compile(r"(\d+)$")


@dataclass
class Suspect:
    """A training row whose given label the out-of-fold model doubts."""

    rank: int
    """1 = most suspect."""
    index: int
    """Position in the training split as loaded (after any sampling)."""
    row: int | None
    """The row's number in its file: the line of a JSONL file, the data row of a CSV/TSV/Parquet file (header not
    counted), the item of a JSON list; 1-based. None for in-memory data."""
    row_name: str
    """The row as error messages name it, e.g. 'line 12'."""
    text: str
    given: str
    suggested: str
    """The label the out-of-fold model finds most likely."""
    score: float
    """Label quality (cleanlab self-confidence: the out-of-fold probability of the given label); lower is more
    suspect."""
    p_suggested: float
    """Out-of-fold probability of the suggested label."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def label_issues(given: np.ndarray, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(quality score of every row, indices of the rows confident learning flags, most suspect first).

    The flagged rows are those whose given label falls off the diagonal of the confident joint
    (`find_label_issues`' default, prune_by_noise_rate); they are ranked by self-confidence, the same score as
    the quality.

    Raises:
        ImportError: cleanlab is not installed (`pip install 'textlora[audit]'`).
    """
    try:
        from cleanlab.filter import find_label_issues
        from cleanlab.rank import get_label_quality_scores
    except ImportError:
        raise ImportError(NEEDS_CLEANLAB) from None

    quality = get_label_quality_scores(given, proba, method="self_confidence")
    flagged = find_label_issues(given, proba, return_indices_ranked_by="self_confidence")
    return np.asarray(quality, dtype=float), np.asarray(flagged, dtype=np.int64)


NEEDS_CLEANLAB = "textlora audit needs cleanlab: pip install 'textlora[audit]' (or pip install cleanlab)."


def suspects(data: Dataset, given: np.ndarray, proba: np.ndarray, flagged: np.ndarray,
             quality: np.ndarray) -> list[Suspect]:
    """The flagged training rows as `Suspect`s, in the order given (most suspect first)."""
    split, names = data.train, data.label_map.labels
    out = []
    for rank, i in enumerate(flagged, start=1):
        i = int(i)
        best = int(np.argmax(proba[i]))
        row_name = split.row_names[i] if split.row_names else f"row {i + 1}"
        m = _ROW_NUMBER.search(row_name) if split.row_names else None
        out.append(Suspect(rank, i, int(m.group(1)) if m else None, row_name, split.texts[i], names[int(given[i])],
                           names[best], round(float(quality[i]), 6), round(float(proba[i, best]), 6)))
    return out


def normalize_text(text: str) -> str:
    """The key under which texts count as duplicates: whitespace runs collapsed, ends stripped, case folded."""
    return " ".join(text.split()).casefold()


@dataclass
class Duplicate:
    """Rows whose texts are equal after `normalize_text`, across any splits."""

    text: str
    """The first occurrence's text."""
    rows: list[dict[str, Any]]
    """{'split', 'row_name', 'label'} of each occurrence, train first."""
    conflicting: bool
    """The occurrences do not all carry the same label."""

    @property
    def splits(self) -> list[str]:
        return sorted({r["split"] for r in self.rows}, key=["train", "validation", "test"].index)

    @property
    def kind(self) -> str:
        """'within train', 'within test', ... or 'across train/test' (the splits involved)."""
        s = self.splits
        return f"within {s[0]}" if len(s) == 1 else "across " + "/".join(s)

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "kind": self.kind, "conflicting": self.conflicting, "rows": self.rows}


def duplicates(data: Dataset) -> list[Duplicate]:
    """Every group of two or more rows with the same normalized text, conflicting labels first, then larger groups.

    Why: a duplicate across splits inflates the scores of the later split; one within a split with two labels is a
    label error in at least one place."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    first: dict[str, str] = {}
    for split in data.splits().values():
        for i, (text, label) in enumerate(zip(split.texts, split.labels)):
            key = normalize_text(text)
            first.setdefault(key, text)
            name = split.row_names[i] if split.row_names else f"row {i + 1}"
            groups[key].append({"split": split.name, "row_name": name, "label": label})
    out = [Duplicate(first[k], rows, len({_label_key(r["label"]) for r in rows}) > 1)
           for k, rows in groups.items() if len(rows) > 1]
    return sorted(out, key=lambda d: (not d.conflicting, -len(d.rows)))


def _label_key(label: Any) -> Any:
    return tuple(sorted(label)) if isinstance(label, list) else label


def duplicate_counts(groups: list[Duplicate]) -> dict[str, dict[str, int]]:
    """Groups, extra rows (beyond the first of each group) and conflicting groups, by kind."""
    counts: dict[str, dict[str, int]] = {}
    for g in groups:
        c = counts.setdefault(g.kind, {"groups": 0, "extra_rows": 0, "conflicting_groups": 0})
        c["groups"] += 1
        c["extra_rows"] += len(g.rows) - 1
        c["conflicting_groups"] += g.conflicting
    return dict(sorted(counts.items()))


def split_stats(data: Dataset) -> dict[str, Any]:
    """Per split: rows, count and share of each class, the largest/smallest class ratio, and text lengths in
    characters and whitespace-separated words (mean, median, 95th percentile, max)."""
    labels = data.label_map.labels
    out = {}
    for split in data.splits().values():
        counts = Counter(n for y in split.labels for n in (y if isinstance(y, list) else [y]))
        per = {name: counts.get(name, 0) for name in labels}
        present = [c for c in per.values() if c]
        out[split.name] = {
            "rows": len(split),
            "classes": {name: {"count": c, "share": c / max(len(split), 1)} for name, c in per.items()},
            "imbalance_ratio": max(present) / min(present) if present else None,
            "chars": _lengths([len(t) for t in split.texts]),
            "words": _lengths([len(t.split()) for t in split.texts]),
        }
    return out


def _lengths(values: list[int]) -> dict[str, float]:
    a = np.asarray(values if values else [0], dtype=float)
    return {"mean": float(a.mean()), "median": float(np.median(a)), "p95": float(np.percentile(a, 95)),
            "max": float(a.max())}


def cv_summary(accuracy: list[float], f1_macro: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (ddof=1) over the folds of held-out accuracy and macro-F1."""
    def stats(xs: list[float]) -> tuple[float, float]:
        a = np.asarray(xs, dtype=float)
        return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0

    (am, asd), (fm, fsd) = stats(accuracy), stats(f1_macro)
    return {"accuracy_mean": am, "accuracy_std": asd, "f1_macro_mean": fm, "f1_macro_std": fsd}
