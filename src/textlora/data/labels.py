"""`LabelMap`: the one source of truth for label id <-> name, built from the training split."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textlora.errors import DataError


@dataclass(frozen=True)
class LabelMap:
    """Label names in id order; `id2label` / `label2id` are derived from them.

    >>> LabelMap.from_labels(["joy", "anger", "joy"]).labels
    ['anger', 'joy']
    """

    labels: list[str]
    multi_label: bool = False

    @classmethod
    def from_labels(cls, values: Sequence[Any]) -> LabelMap:
        """Collect the distinct labels of the training rows, sorted (numerically if all are integers)."""
        multi = any(isinstance(v, list) for v in values)
        names = {n for v in values for n in (v if isinstance(v, list) else [v])}
        ordered = sorted(names, key=int) if all(_is_int(n) for n in names) else sorted(names)
        return cls(ordered, multi)

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.labels))

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.labels)}

    def encode(self, values: Sequence[Any], source: str = "data", row_names: Sequence[str] | None = None) -> list:
        """Map label names to ids (a list of ids per row for multi-label).

        Raises:
            DataError: a label never seen in train; names it, the file and the row.
        """
        index = self.label2id
        out = []
        for i, value in enumerate(values):
            names = value if isinstance(value, list) else [value]
            unknown = [n for n in names if n not in index]
            if unknown:
                row = row_names[i] if row_names else f"row {i + 1}"
                raise DataError(f"{source} {row}: label {unknown[0]!r} was never seen in the training split; "
                                f"train labels are {self.labels}. Fix the label, or add examples of it to train.")
            ids = [index[n] for n in names]
            out.append(ids if self.multi_label else ids[0])
        return out

    def save(self, path: str | Path) -> None:
        """Write `labels.json`."""
        Path(path).write_text(json.dumps({"labels": self.labels, "multi_label": self.multi_label}, indent=2),
                              encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> LabelMap:
        """Read a `labels.json` written by `save`."""
        d = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(list(d["labels"]), bool(d.get("multi_label", False)))


def _is_int(name: str) -> bool:
    try:
        int(name)
    except ValueError:
        return False
    return True
