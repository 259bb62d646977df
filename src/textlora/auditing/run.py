"""`audit(cfg, out)`: K-fold out-of-fold probabilities on the training split, then the rows most likely
mislabeled, the duplicated texts, class balance and text lengths, and the cross-validated scores; written to
`out` as `audit.html`, `suspects.jsonl`, `duplicates.jsonl`, `summary.json` and `oof.npz`.

    textlora audit --data data/emotion --out audits/emotion            # 5 folds, LoRA on the top layer
    textlora audit --data data/emotion --out audits/emotion --folds 10 --method head --max-length 64

The audit folder is textlora's own: `audit.json` (written first) marks it, a rerun into it reuses the finished
folds, and a folder holding anything else is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from textlora.auditing.checks import (
    NEEDS_CLEANLAB,
    Duplicate,
    Suspect,
    cv_summary,
    duplicate_counts,
    duplicates,
    label_issues,
    split_stats,
    suspects,
)
from textlora.auditing.folds import FoldScore, run_folds
from textlora.config import RunConfig
from textlora.data.splits import Dataset
from textlora.errors import ConfigError, DataError, RunExistsError
from textlora.render import write_text

MARKER = "audit.json"
"""Written first into the audit folder: what ran (config, folds); it marks the folder as an audit's."""
FILES = {"marker": MARKER, "html": "audit.html", "suspects": "suspects.jsonl", "duplicates": "duplicates.jsonl",
         "summary": "summary.json", "oof": "oof.npz"}
"""The files of an audit folder (plus `folds/k/`: each fold's data, run, `oof.npz` and `fold.json`)."""
METHODS = ("head", "lora")
"""Methods an audit trains its folds with: head (default; frozen body, its layers computed once per fold) or
lora."""


@dataclass
class AuditResult:
    """What an audit found; the same is in its folder."""

    out: Path
    suspects: list[Suspect]
    """Rows confident learning flags, most suspect first."""
    ranking: np.ndarray
    """Every training row's index, most suspect first (by label quality), flagged or not."""
    quality: np.ndarray
    """Label quality of each training row (lower: more suspect)."""
    proba: np.ndarray
    """Out-of-fold probabilities (n_train, num_labels)."""
    duplicates: list[Duplicate]
    stats: dict[str, Any]
    folds: list[FoldScore]
    cv: dict[str, float]
    """accuracy_mean/_std, f1_macro_mean/_std over the folds' held-out parts."""
    labels: list[str]
    notes: list[str]

    def path(self, part: str) -> Path:
        """The path of `part` (a key of `FILES`) in the audit folder."""
        return self.out / FILES[part]


def audit(cfg: RunConfig, out: str | Path, folds: int = 5, fresh_process: bool = True,
          progress: bool = True) -> AuditResult:
    """Audit the training split of `cfg.data` with `folds`-fold out-of-fold predictions of `cfg`'s recipe
    (`cfg.model.method`: head or lora) and write the findings to `out`.

    Why: a model trained on a row has seen its label; only a fold that did not train on the row can doubt it.

    Args:
        cfg: the recipe (data, model, lora, train), as for `train`; its `out` is not used.
        out: the audit folder: new, empty, or an earlier audit's (its finished folds are reused).
        folds: K of the stratified K-fold (2 or more; every class needs at least K training rows).
        fresh_process: train each fold in its own spawned process (its own peak memory); False trains in this one.
        progress: print a line per fold.

    Raises:
        ConfigError, DataError, RunExistsError, ImportError: one line saying what to fix, before any training.

    >>> cfg = RunConfig.from_dict({"data": {"path": "data/emotion"}, "model": {"method": "head"}})  # doctest: +SKIP
    >>> result = audit(cfg, "audits/emotion")  # doctest: +SKIP
    >>> result.suspects[0].given, result.suspects[0].suggested  # doctest: +SKIP
    ('joy', 'sadness')
    """
    say = print if progress else (lambda *a, **k: None)
    out = Path(out)
    _check_request(cfg, out, folds)
    from textlora.data.splits import load_dataset

    data = load_dataset(cfg.data)
    _check_data(data, folds)
    _write_marker(out, cfg, folds)
    say(f"audit: {folds} folds of {len(data.train)} training rows, method {cfg.model.method}")
    oof = run_folds(cfg, data, out, folds, fresh_process, say)
    given = np.asarray(data.label_map.encode(data.train.labels, source="train"), dtype=np.int64)
    quality, flagged = label_issues(given, oof.proba)
    result = AuditResult(out, suspects(data, given, oof.proba, flagged, quality),
                         np.argsort(quality, kind="stable"), quality, oof.proba, duplicates(data), split_stats(data),
                         oof.folds, cv_summary([f.accuracy for f in oof.folds], [f.f1_macro for f in oof.folds]),
                         data.label_map.labels, _notes(data))
    _write(result, data)
    say(f"audit: {len(result.suspects)} suspected label errors, "
        f"{sum(d.conflicting for d in result.duplicates)} duplicate groups with conflicting labels; "
        f"cv accuracy {result.cv['accuracy_mean']:.4f} ± {result.cv['accuracy_std']:.4f}")
    return result


def _check_request(cfg: RunConfig, out: Path, folds: int) -> None:
    """Everything that can be checked before reading the data: folds, method, cleanlab, the audit folder."""
    import importlib.util

    from textlora.run_folder import check_path

    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ConfigError(f"--folds must be an integer of at least 2, got {folds!r}; 5 is usual.")
    if cfg.model.method not in METHODS:
        raise ConfigError(f"an audit trains its folds with --method head or lora, got {cfg.model.method!r}; "
                          "lora with lora.top_layers=1 (the CLI's default) is as fast as head and finds more.")
    if not cfg.data.path:
        raise DataError("no data given: pass --data PATH (a folder with train/validation/test files, or one file).")
    if importlib.util.find_spec("cleanlab") is None:
        raise ImportError(NEEDS_CLEANLAB)
    check_path(out, cfg.data.path)
    if out.exists() and not out.is_dir():
        raise RunExistsError(f"--out {out} is a file; pass a folder path for the audit.")
    if out.is_dir() and any(out.iterdir()) and not _is_audit(out):
        raise RunExistsError(f"--out {out} holds files that are not a textlora audit (no textlora {MARKER}); "
                             "choose a new or empty folder.")
    from textlora.model.load import check_model

    check_model(cfg.model.name, cfg.model.max_length)  # a wrong --model fails here, not in every fold


def _is_audit(folder: Path) -> bool:
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("kind") == "audit" and "textlora_version" in marker


def _check_data(data: Dataset, folds: int) -> None:
    if data.label_map.multi_label:
        raise DataError("textlora audit handles single-label data only; this training split is multi-label. "
                        "Audit one label column at a time, or use cleanlab.multilabel_classification directly.")
    from collections import Counter

    small = {name: n for name, n in Counter(data.train.labels).items() if n < folds}
    if small:
        raise DataError(f"every class needs at least --folds ({folds}) training rows for a stratified {folds}-fold "
                        f"audit; too few: {dict(sorted(small.items()))}. Lower --folds or add rows of those classes.")


def _write_marker(out: Path, cfg: RunConfig, folds: int) -> None:
    from textlora import __version__

    out.mkdir(parents=True, exist_ok=True)
    marker = {"kind": "audit", "textlora_version": __version__, "folds": folds,
              "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "config": cfg.resolved().to_dict()}
    write_text(out / MARKER, json.dumps(marker, indent=2))


def _notes(data: Dataset) -> list[str]:
    notes = []
    carved = [s.name for s in (data.validation, data.test) if s.source.startswith("carved")]
    if carved:
        notes.append(f"{' and '.join(carved)} carved from the training file ({data.train.source}); row numbers are "
                     "that file's.")
    if "sample of" in data.train.source:
        notes.append(f"the training split is a sample ({data.train.source}); row numbers are still the file's.")
    return notes


def _write(r: AuditResult, data: Dataset) -> None:
    from textlora.auditing.page import render_page

    np.savez_compressed(r.path("oof"), proba=r.proba, quality=r.quality, ranking=r.ranking,
                        labels=np.asarray(r.labels))
    write_text(r.path("suspects"), "".join(json.dumps(s.to_dict(), ensure_ascii=False) + "\n" for s in r.suspects))
    write_text(r.path("duplicates"), "".join(json.dumps(d.to_dict(), ensure_ascii=False) + "\n"
                                              for d in r.duplicates))
    summary = {"train_file": data.train.source, "labels": r.labels, "rows": len(r.quality),
               "suspects": len(r.suspects), "cv": r.cv, "folds": [f.__dict__ for f in r.folds],
               "duplicates": duplicate_counts(r.duplicates), "stats": r.stats, "notes": r.notes}
    write_text(r.path("summary"), json.dumps(summary, indent=2))
    write_text(r.path("html"), render_page(r))


def top_suspects(result: AuditResult, n: int) -> list[int]:
    """The `n` training rows with the lowest label quality, flagged by confident learning or not.

    Why: a fixed-size list (e.g. as many rows as one expects errors) to review or to score against known errors."""
    return [int(i) for i in result.ranking[:n]]
