"""`fit(train, ...) -> Predictor`: train from Python objects (a DataFrame, a list of dicts, a (texts, labels) pair,
a Hugging Face Dataset) in one call, as in a notebook.

>>> import pandas as pd, textlora  # doctest: +SKIP
>>> clf = textlora.fit(pd.DataFrame({"text": texts, "label": labels}), epochs=1, max_length=64)  # doctest: +SKIP
>>> clf.predict("what a lovely day")  # doctest: +SKIP
'joy'
>>> clf.save("runs/notebook")  # doctest: +SKIP

The data is validated like a file and written to textlora's cache (`data.memory`), so `train` stays the one path
from data to a run folder and the run's config.yaml points at data that can be read again.
"""

from __future__ import annotations

import difflib
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textlora.config import RunConfig
from textlora.errors import ConfigError
from textlora.run_folder import path_of, read_json, write_json

if TYPE_CHECKING:
    from textlora.predict import Predictor

SET_BY_FIT = {"data.path", "data.text_column", "data.label_column", "out"}
"""Config keys that `fit`'s own arguments set (the data, its columns, `out`): not settings."""
ALIASES = {"model": "model.name"}
"""Flat setting names that are not a field's name: `model=` is the base model."""


def setting_keys() -> dict[str, list[str]]:
    """Every flat setting name -> the dotted config keys it may mean: each field's name (`epochs`, `lr`, `r`), the
    section and the name joined by '_' (`lora_r`, `model_dropout`) and `ALIASES`. A name with two keys
    (`dropout`: model.dropout, lora.dropout) is ambiguous."""
    import dataclasses
    import typing

    keys: dict[str, list[str]] = {}
    hints = typing.get_type_hints(RunConfig)
    sections = {f.name: hints[f.name] for f in dataclasses.fields(RunConfig) if dataclasses.is_dataclass(hints[f.name])}
    for section, cls in sections.items():
        for f in dataclasses.fields(cls):
            dotted = f"{section}.{f.name}"
            if dotted not in SET_BY_FIT:
                keys.setdefault(f.name, []).append(dotted)
                keys.setdefault(f"{section}_{f.name}", []).append(dotted)
    return {**keys, **{name: [key] for name, key in ALIASES.items()}}


def resolve_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """`fit`'s settings as dotted config keys: flat names mapped to their section (`epochs` -> train.epochs), dotted
    keys ({'lora.r': 8}) as they are.

    Raises:
        ConfigError: an unknown or ambiguous name, or a key that fit's own arguments set (one line for all of them).
    """
    keys, dotted = setting_keys(), {}
    valid = sorted({k for ks in keys.values() for k in ks})
    problems = []
    for name, value in settings.items():
        if name in SET_BY_FIT or name in ("path", "text_column", "label_column"):
            problems.append(f"{name!r} is set by fit's own arguments (train/validation/test, text_column, "
                            "label_column, out), not by a setting")
        elif "." in name:
            if name not in valid:
                close = difflib.get_close_matches(name, valid, n=1)
                problems.append(f"unknown setting {name!r}" + (f" (did you mean {close[0]!r}?)" if close else
                                                                f"; config keys are {valid}"))
            dotted[name] = value
        elif name not in keys:
            close = difflib.get_close_matches(name, list(keys), n=1)
            problems.append(f"unknown setting {name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                            + "; settings are config fields by name (epochs=2, lr=1e-3, method='head') or dotted "
                            "(**{'lora.r': 8}), see textlora.config")
        elif len(keys[name]) > 1:
            choices = keys[name]
            problems.append(f"setting {name!r} is ambiguous: it may be {' or '.join(choices)}; pass "
                            f"{' or '.join(c.replace('.', '_') + '=' for c in choices)} (or the dotted key)")
        else:
            dotted[keys[name][0]] = value
    if problems:
        raise ConfigError("; ".join(problems) + ".")
    return dotted


def fit(train: Any, validation: Any = None, test: Any = None, *, text_column: str = "text",
        label_column: str = "label", out: str | Path | None = None, overwrite: bool = False, progress: bool = True,
        **settings: Any) -> Predictor:
    """Train a classifier on data held in Python objects and return it, ready to `predict`.

    Why: in a notebook the data is already a DataFrame or a `datasets.Dataset`; writing files and a config first
    is a detour. The run is the same as `textlora train` makes from files: same checks, same run folder.

    Args:
        train: the training rows: a pandas DataFrame, a list of dicts, a `(texts, labels)` pair or a
            `datasets.Dataset`; a `datasets.DatasetDict` here alone gives every split; a path (str or Path) is read
            like `--data` (a data folder or file, or a `save_to_disk` folder).
        validation, test: the same kinds, or None: carved out of train (seeded, stratified, recorded).
        text_column, label_column: the columns holding the text and the label (a name, an integer id, a list of
            names for multi-label rows). Without `label_column` but with a `labels` column, `labels` is read.
        out: the run folder to write; None: a temporary folder, removed when the returned Predictor is garbage
            collected or the process exits: keep it with `Predictor.save(path)`.
        overwrite: replace an earlier run at `out`.
        progress: print a progress bar and per-epoch lines.
        settings: config keys, by field name where it is unique (`epochs=2`, `lr=1e-3`, `method="head"`,
            `max_length=64`, `r=8`, `max_train_samples=500`, `device="cpu"`), as section_name (`lora_r=8`,
            `model_dropout=0.1`, `lora_dropout=0.1`: `dropout` alone is ambiguous and an error), `model=` for the
            base model (`model.name`), or dotted (`**{"lora.r": 8, "train.lr": 5e-4}`). See `textlora.config`.

    Returns:
        The trained run as a `Predictor`; its `run.metrics` holds validation and test metrics, its `manifest`
        the data's content hash (`data.in_memory_sha256`).

    Raises:
        DataError, ConfigError, ModelError, RunExistsError: one line each, with what to fix, before any training.
    """
    from textlora.predict import Predictor
    from textlora.train import train as train_run

    cfg = RunConfig().with_overrides(resolve_settings(settings))
    cfg = cfg.with_overrides({"data.text_column": text_column, "data.label_column": label_column})
    data, note = _data_path(train, validation, test, cfg)
    tmp = None if out is not None else Path(tempfile.mkdtemp(prefix="textlora-fit-"))
    cfg = cfg.with_overrides({"data.path": str(data), "out": str(out if out is not None else tmp / "run")})
    try:
        train_run(cfg, overwrite=overwrite, progress=progress, before_commit=note)
        clf = Predictor.load(cfg.out, device=cfg.train.device)
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    if tmp is not None:
        weakref.finalize(clf, shutil.rmtree, tmp, ignore_errors=True)
    return clf


def _data_path(train: Any, validation: Any, test: Any, cfg: RunConfig) -> tuple[Path, Any]:
    """Where `train` reads the data (the data written to the cache, or the path given) and the hook that records
    the in-memory data in the manifest (None for a path)."""
    if isinstance(train, (str, Path)):
        if validation is not None or test is not None:
            raise ConfigError("train is a path, so it gives the data (a folder's split files, or one file); pass "
                              "validation and test as files in that folder, or pass all three as data in memory.")
        return Path(train), None
    from textlora.data.memory import materialize

    data = materialize({"train": train, "validation": validation, "test": test}, cfg.data)

    def note(staging: Path, metrics: dict[str, Any]) -> None:  # the manifest is written; the run not yet in place
        manifest = read_json(path_of(staging, "manifest"))
        manifest["data"].update(in_memory_sha256=data.sha256, in_memory=data.sources)
        write_json(path_of(staging, "manifest"), manifest)

    return data.path, note
