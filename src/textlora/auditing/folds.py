"""Out-of-fold probabilities: seeded stratified K-fold over the training split, one training per fold.

Fold k trains with the run's recipe on the other K-1 parts, picks its best epoch on the dataset's own validation
split, and only then scores its held-out part (the fold run's "test" split): selecting on the held-out rows would
leak them into the out-of-fold scores. Each fold runs in a fresh process (its own peak memory, as the ladder of
`compare` does) and writes `folds/k/oof.npz` and then `folds/k/fold.json` when done; a rerun whose fold data and
recipe are unchanged reuses them. A fold killed mid-training resumes from its run's checkpoints.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from textlora.config import RunConfig
from textlora.data.splits import Dataset, Split

FOLD_DONE = "fold.json"
"""Written last in `folds/k/`: the fold's fingerprint and held-out metrics; its presence marks a finished fold."""
FOLD_PROBA = "oof.npz"
"""`index` (rows of the training split) and `proba` (n_heldout, num_labels, columns in the audit's label order)."""


@dataclass
class FoldScore:
    """One fold's held-out scores."""

    fold: int
    rows: int
    accuracy: float
    f1_macro: float
    best_epoch: int
    train_seconds: float
    reused: bool


@dataclass
class OutOfFold:
    """Every training row's probabilities from the fold that did not train on it, and each fold's scores."""

    proba: np.ndarray
    """(n_train, num_labels), columns in the order of the dataset's label map."""
    folds: list[FoldScore]


def fold_indices(labels: list[Any], folds: int, seed: int) -> list[np.ndarray]:
    """The held-out rows of each fold: a seeded, shuffled, stratified K-fold over `labels`.

    Why: stratification keeps every class in every fold's training part, so each fold learns the same label set."""
    from sklearn.model_selection import StratifiedKFold

    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [held for _, held in skf.split(np.zeros(len(labels)), labels)]


def fold_config(recipe: RunConfig, folder: Path) -> RunConfig:
    """The recipe for one fold: the audit's config reading the fold's data files as they are (no sampling: the
    audit sampled already, and sampling the held-out part would drop rows) and writing its run to `folder/run`."""
    return recipe.with_overrides({
        "data.path": str(folder / "data"), "data.text_column": "text", "data.label_column": "label",
        "data.text_pair_column": None, "data.label_sep": None, "data.max_train_samples": None,
        "data.max_eval_samples": None, "train.eval_base": False, "out": str(folder / "run")})


def run_folds(recipe: RunConfig, data: Dataset, folder: Path, folds: int, fresh_process: bool = True,
              say: Callable[..., None] = print) -> OutOfFold:
    """Train the `folds` folds of `recipe` on `data`'s training split under `folder/folds/` (reusing finished
    ones) and gather the out-of-fold probabilities.

    Raises:
        TextloraError: from a fold's training (its message says what to fix).
    """
    labels = data.label_map.labels
    proba = np.full((len(data.train), len(labels)), np.nan)
    scores = []
    for k, held in enumerate(fold_indices(data.train.labels, folds, recipe.train.seed), start=1):
        fdir = folder / "folds" / str(k)
        rest = np.setdiff1d(np.arange(len(data.train)), held)
        files = {"train": _take(data.train, rest), "validation": data.validation, "test": _take(data.train, held)}
        cfg = fold_config(recipe, fdir)
        fp = _fingerprint(cfg, files, held)
        done = _read_done(fdir, fp)
        if done is None:
            say(f"fold {k}/{folds}: training on {len(rest)} rows, scoring {len(held)} held-out rows ...")
            _write_data(fdir / "data", files)
            (_in_fresh_process if fresh_process else _call)(_train_fold, cfg.to_dict())
            done = _collect(fdir, cfg, held, labels, fp, k)
        else:
            say(f"fold {k}/{folds}: finished earlier, reused")
            done["reused"] = True
        with np.load(fdir / FOLD_PROBA) as z:
            proba[z["index"]] = z["proba"]
        scores.append(FoldScore(**{f: done[f] for f in FoldScore.__dataclass_fields__}))
    return OutOfFold(proba, scores)


def _take(split: Split, idx: np.ndarray) -> Split:
    return Split(split.name, [split.texts[i] for i in idx], [split.labels[i] for i in idx], split.source)


def _write_data(folder: Path, splits: dict[str, Split]) -> None:
    """Each split as `NAME.jsonl.gz`, byte-for-byte the same for the same rows (gzip mtime 0), so a fold's
    checkpoints, fingerprinted by the data files' sha256, survive a rerun."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, split in splits.items():
        body = "".join(json.dumps({"text": t, "label": y}, ensure_ascii=False) + "\n"
                       for t, y in zip(split.texts, split.labels)).encode("utf-8")
        path = folder / f"{name}.jsonl.gz"
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
            gz.write(body)
        os.replace(tmp, path)


def _fingerprint(cfg: RunConfig, splits: dict[str, Split], held: np.ndarray) -> str:
    """What makes a fold's result: the resolved recipe (paths aside), its rows and their texts and labels."""
    d = cfg.resolved().to_dict()
    d["data"].pop("path")
    d.pop("out")
    d["train"].pop("device")  # where it ran does not change what it is (as for checkpoints)
    h = hashlib.sha256(json.dumps(d, sort_keys=True).encode())
    h.update(np.asarray(held, dtype=np.int64).tobytes())
    for name in sorted(splits):
        h.update(json.dumps([splits[name].texts, splits[name].labels], ensure_ascii=False).encode("utf-8"))
    return h.hexdigest()


def _read_done(fdir: Path, fp: str) -> dict[str, Any] | None:
    """The finished fold's record if it exists, matches `fp` and its probabilities are there; else None."""
    try:
        done = json.loads((fdir / FOLD_DONE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = isinstance(done, dict) and done.get("fingerprint") == fp and (fdir / FOLD_PROBA).is_file()
    return done if ok else None


def _collect(fdir: Path, cfg: RunConfig, held: np.ndarray, labels: list[str], fp: str, k: int) -> dict[str, Any]:
    """Read the fold run's held-out logits, store them as probabilities in the audit's label order, then the
    fold's record (last: it marks the fold finished)."""
    from textlora.metrics import softmax
    from textlora.run_folder import Run

    run = Run.open(cfg.out)
    with np.load(run.path_of("predictions")) as z:
        logits = z["test_logits"]
    order = [run.labels.labels.index(name) for name in labels]  # the same sorted names; mapped, not assumed
    proba = softmax(logits)[:, order]
    tmp = fdir / f".{FOLD_PROBA}.tmp-{os.getpid()}.npz"
    np.savez_compressed(tmp, index=np.asarray(held, dtype=np.int64), proba=proba)
    os.replace(tmp, fdir / FOLD_PROBA)
    test = run.metrics["test"]
    done = {"fingerprint": fp, "fold": k, "rows": len(held), "accuracy": test["accuracy"],
            "f1_macro": test["f1_macro"], "best_epoch": run.metrics.get("best_epoch", 0),
            "train_seconds": run.manifest.get("train_seconds", 0.0), "reused": False}
    tmp = fdir / f".{FOLD_DONE}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(done, indent=2), encoding="utf-8")
    os.replace(tmp, fdir / FOLD_DONE)
    return done


def _train_fold(cfg_dict: dict[str, Any]) -> None:
    from textlora.train import train

    train(RunConfig.from_dict(cfg_dict), overwrite=True, progress=False)


def _call(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


def _in_fresh_process(fn: Callable[..., Any], *args: Any) -> Any:
    from textlora.compare import _in_fresh_process as fresh

    return fresh(fn, *args)
