"""Data held in Python objects (for `textlora.fit`): validated like files, then written as JSONL files that
`load_dataset` reads, in a content-addressed folder of textlora's cache.

Each split may be a pandas DataFrame, a list of dicts, a `(texts, labels)` pair or a Hugging Face
`datasets.Dataset`; a `datasets.DatasetDict` given as train alone holds every split. The rows get the same checks
and one-line `DataError`s as a file's (`io.table_from_records`), named by split and kind, e.g.
"train (DataFrame) index 3: column 'text' is empty". Rows are named 'index N': a DataFrame's index label, else the
position counted from 0.

Why files: the run's `config.yaml` then points `data.path` at data that can be read again (by `textlora report`,
`eval`, a resumed training), and `train` stays the single path from data to a run. The folder is named after the
sha256 of its files' bytes, so the same data is written once and a rerun finds the same path (and resumes). It
lies under `$TEXTLORA_CACHE` (default `$XDG_CACHE_HOME/textlora`, else `~/.cache/textlora`), in `data/<sha256>`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textlora.config import DataConfig
from textlora.data import hf
from textlora.data.io import frame_records, table_from_records
from textlora.data.labels import LabelMap
from textlora.data.splits import assign_splits
from textlora.errors import DataError

FIX = "Set fit's {which}_column="
"""How an error about a missing column says to fix it, in `fit`'s words."""
KINDS = "a pandas DataFrame, a list of dicts, a (texts, labels) pair or a datasets.Dataset"


@dataclass
class InMemoryData:
    """In-memory splits written as files: where, their content hash, and what each split was."""

    path: Path
    """The folder holding train.jsonl (and validation.jsonl, test.jsonl when given): `data.path`."""
    sha256: str
    """sha256 over the split names and their files' sha256: the folder's name."""
    sources: dict[str, str]
    """What each split was, e.g. {'train': 'DataFrame, 300 rows'}, for the manifest."""


def cache_root() -> Path:
    """textlora's cache folder: `$TEXTLORA_CACHE`, else `$XDG_CACHE_HOME/textlora`, else `~/.cache/textlora`."""
    if os.environ.get("TEXTLORA_CACHE"):
        return Path(os.environ["TEXTLORA_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "textlora"


def is_datasetdict(obj: Any) -> bool:
    """True for a `datasets.DatasetDict` (a dict of split name -> Dataset)."""
    return isinstance(obj, dict) and bool(obj) and all(_is_dataset(v) for v in obj.values())


def materialize(splits: dict[str, Any], cfg: DataConfig) -> InMemoryData:
    """Validate the in-memory `splits` (train, and optionally validation and test) with `cfg`'s columns and write
    them under the cache; a DatasetDict as `splits['train']` alone gives every split.

    Raises:
        DataError: an object of an unsupported kind, a missing column, an empty or non-string text, a missing label,
            a validation/test label never seen in train, or a DatasetDict beside other splits.
    """
    splits = _expand(splits)
    columns = [c for c in (cfg.text_column, cfg.text_pair_column, cfg.label_column, "labels") if c]
    lines, sources = {}, {}
    label_map = None
    for name, obj in splits.items():
        kind = _kind(obj, name)
        records, row_names, found = _rows(obj, kind, name, cfg, columns)
        source = f"{name} ({kind})"
        table = table_from_records(records, row_names, found, source, cfg.text_column, cfg.label_column,
                                   cfg.text_pair_column, cfg.label_sep, fix=FIX)
        if label_map is None:
            label_map = LabelMap.from_labels(table.labels)
        else:  # named by split and row here, not by the cache file's line
            label_map.encode(table.labels, source=source, row_names=row_names)
        keep = [c for c in (cfg.text_column, cfg.text_pair_column) if c]
        lines[name] = [json.dumps({**{c: r[c] for c in keep}, cfg.label_column: label}, ensure_ascii=False,
                                  sort_keys=True) for r, label in zip(records, table.labels)]
        sources[name] = f"{kind}, {len(records)} rows"
    return _write(lines, sources)


def _expand(splits: dict[str, Any]) -> dict[str, Any]:
    """{'train': DatasetDict} -> its splits by role; other splits as given (None: absent)."""
    given = {k: v for k, v in splits.items() if v is not None}
    train = given.get("train")
    if not is_datasetdict(train):
        bad = [k for k, v in given.items() if is_datasetdict(v)]
        if bad:
            raise DataError(f"{bad[0]} is a DatasetDict; pass one split (e.g. dataset['{bad[0]}']), or the whole "
                            "DatasetDict as train alone.")
        return given
    if len(given) > 1:
        raise DataError(f"train is a DatasetDict with splits {list(train)}, so it gives every split; do not pass "
                        "validation or test beside it (or pass train=dataset['train']).")
    roles = assign_splits(list(train), "train (DatasetDict)")
    return {role: train[name] for role, name in roles.items()}


def _is_dataset(obj: Any) -> bool:
    """A `datasets.Dataset` (not an IterableDataset, which has no length: stream it into a Dataset first)."""
    return (type(obj).__module__.split(".")[0] == "datasets" and hasattr(obj, "features")
            and hasattr(obj, "column_names") and hasattr(obj, "__len__"))


def _is_frame(obj: Any) -> bool:
    return type(obj).__module__.split(".")[0] == "pandas" and hasattr(obj, "columns") and hasattr(obj, "to_dict")


def _kind(obj: Any, name: str) -> str:
    """Which of the accepted kinds `obj` is: 'DataFrame', 'Dataset', 'list of dicts' or '(texts, labels)'."""
    if _is_frame(obj):
        return "DataFrame"
    if _is_dataset(obj):
        return "Dataset"
    if isinstance(obj, (list, tuple)) and obj and all(isinstance(r, dict) for r in obj):
        return "list of dicts"
    if isinstance(obj, tuple) and len(obj) == 2 and all(_is_column(c) for c in obj):
        return "(texts, labels)"
    if isinstance(obj, (list, tuple)) and not obj:
        raise DataError(f"{name}: the {type(obj).__name__} is empty; a split needs at least one row.")
    got = type(obj).__name__
    if isinstance(obj, (list, tuple)) and all(isinstance(r, dict) for r in obj[:1]):
        got = f"a list whose item {next(i for i, r in enumerate(obj) if not isinstance(r, dict))} is not a dict"
    hint = (" A dict of columns: pass pandas.DataFrame(it)." if isinstance(obj, dict) else
            " A list of texts: pass (texts, labels)." if isinstance(obj, list) and obj and isinstance(obj[0], str)
            else "")
    raise DataError(f"{name}: expected {KINDS}, got {got}.{hint}")


def _is_column(obj: Any) -> bool:
    return not isinstance(obj, (str, bytes, dict)) and hasattr(obj, "__len__") and hasattr(obj, "__iter__")


def _rows(obj: Any, kind: str, name: str, cfg: DataConfig, columns: list[str]) -> hf.Rows:
    if kind == "DataFrame":
        records, _, found = frame_records(obj)
        return records, [f"index {i}" for i in obj.index], found
    if kind == "Dataset":
        records, row_names, found = hf.dataset_rows(obj, columns)
    elif kind == "list of dicts":
        records = [{str(k): _plain(v) for k, v in r.items()} for r in obj]
        row_names, found = [f"index {i}" for i in range(len(obj))], set().union(*records)
    else:
        texts, labels = (list(c) for c in obj)
        if len(texts) != len(labels):
            raise DataError(f"{name}: (texts, labels) hold {len(texts)} texts but {len(labels)} labels; give one "
                            "label per text.")
        records = [{cfg.text_column: _plain(t), cfg.label_column: _plain(y)} for t, y in zip(texts, labels)]
        row_names, found = [f"index {i}" for i in range(len(texts))], {cfg.text_column, cfg.label_column}
    if not records:
        raise DataError(f"{name} ({kind}): no rows; a split needs at least one row.")
    return records, row_names, found


def _plain(value: Any) -> Any:
    """numpy scalars and arrays as Python values and lists (as a DataFrame's rows are read)."""
    return value.tolist() if hasattr(value, "tolist") and not isinstance(value, str) else value


def _write(lines: dict[str, Sequence[str]], sources: dict[str, str]) -> InMemoryData:
    """Write each split's JSON lines as <split>.jsonl in `cache_root()/data/<sha256>`, atomically, once."""
    blobs = {name: ("\n".join(rows) + "\n").encode("utf-8") for name, rows in lines.items()}
    digest = hashlib.sha256()
    for name in sorted(blobs):
        digest.update(f"{name}\0{hashlib.sha256(blobs[name]).hexdigest()}\n".encode())
    sha = digest.hexdigest()
    folder = cache_root() / "data" / sha
    if not folder.is_dir():
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{sha}.staging-", dir=folder.parent))  # ours, fresh: safe to remove
        try:
            for name, blob in blobs.items():
                (staging / f"{name}.jsonl").write_bytes(blob)
            os.replace(staging, folder)
        except OSError:
            if not folder.is_dir():  # another process wrote the same data first: theirs is as good
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return InMemoryData(folder, sha, sources)
