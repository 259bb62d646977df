"""Hugging Face `datasets` data: `save_to_disk` folders as --data, and `Dataset` objects for `textlora.fit`.

A folder written by `Dataset.save_to_disk` holds `state.json`, `dataset_info.json` and Arrow IPC stream files
(`data-00000-of-00001.arrow`); one written by `DatasetDict.save_to_disk` holds `dataset_dict.json` and one such
folder per split. They are read with `datasets` when it is installed (the `hf` extra), else with pyarrow alone.
A `ClassLabel` column gives its names, not its ids; a list of ClassLabel ids (multi-label) a list of names; the id
-1 (HF's "no label") gives no label, which validation then names.

Everything here returns rows as `io.read_records` does, (records, row names, columns), for `io.table_from_records`
to validate like any file. Rows are named 'index N', N counted from 0 as `dataset[N]` does.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from textlora.errors import DataError

Rows = tuple[list[dict], list[str], set[str]]
"""Records, a name for each row, and the columns: what `io.read_records` returns."""
MARKERS = ("dataset_dict.json", "state.json", "dataset_info.json")
"""Files that make a folder a `save_to_disk` folder: a DatasetDict's, or a single Dataset's."""
_LIST_TYPES = ("Sequence", "List", "LargeList")


def is_hf_folder(path: Path) -> bool:
    """True when `path` is a folder written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk`."""
    return path.is_dir() and any((path / name).is_file() for name in MARKERS)


def read_folder(root: Path, columns: list[str]) -> tuple[dict[str, Rows], list[Path]]:
    """The rows of each split of the `save_to_disk` folder `root` by split name ('' for a single Dataset, which
    holds all the data), reading only `columns` (those that exist), and every file of the folder (to hash).

    Raises:
        DataError: the folder lacks its data files or they cannot be read.
    """
    marker = root / "dataset_dict.json"
    if marker.is_file():
        try:
            names = json.loads(marker.read_text(encoding="utf-8"))["splits"]
        except (ValueError, KeyError, TypeError):
            raise DataError(f"{marker}: not a valid dataset_dict.json (expected {{\"splits\": [...]}}); re-save the "
                            "dataset with DatasetDict.save_to_disk.") from None
        splits = {str(name): _read_split(root / str(name), columns) for name in names}
    else:
        splits = {"": _read_split(root, columns)}
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return splits, files


def dataset_rows(ds: Any, columns: list[str]) -> Rows:
    """The rows of an in-memory `datasets.Dataset`, reading only `columns` (those it has); ClassLabel ids as names."""
    present = [c for c in columns if c in ds.column_names]
    data = ds.select_columns(present).to_dict() if present else {}
    return _rows(data, ds.features.to_dict(), set(ds.column_names), len(ds))


def _read_split(folder: Path, columns: list[str]) -> Rows:
    if not folder.is_dir():
        raise DataError(f"{folder}: split folder not found, though {folder.parent.name}/dataset_dict.json lists it; "
                        "re-save the dataset with DatasetDict.save_to_disk.")
    try:
        import datasets
    except ImportError:
        return _read_arrow(folder, columns)
    try:
        ds = datasets.load_from_disk(str(folder))
    except Exception as e:  # datasets raises several unrelated types for a damaged folder
        raise DataError(f"{folder}: cannot read as a Hugging Face dataset ({type(e).__name__}: {e}). Re-save it "
                        "with save_to_disk.") from None
    return dataset_rows(ds, columns)


def _read_arrow(folder: Path, columns: list[str]) -> Rows:
    """Read a single Dataset's folder with pyarrow: its Arrow IPC stream files, in `state.json`'s order."""
    import pyarrow as pa

    files = _data_files(folder)
    try:
        tables = []
        for f in files:
            with pa.memory_map(str(f)) as source:
                tables.append(pa.ipc.open_stream(source).read_all())
        table = pa.concat_tables(tables)
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"{folder}: cannot read its Arrow files ({type(e).__name__}: {e}). Re-save the dataset "
                        "with save_to_disk.") from None
    data = {c: table.column(c).to_pylist() for c in columns if c in table.column_names}
    return _rows(data, _features(folder, table), set(table.column_names), table.num_rows)


def _data_files(folder: Path) -> list[Path]:
    state = folder / "state.json"
    try:
        names = [f["filename"] for f in json.loads(state.read_text(encoding="utf-8"))["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError):
        names = sorted(p.name for p in folder.glob("data-*.arrow"))
    files = [folder / n for n in names]
    if not files or not all(f.is_file() for f in files):
        raise DataError(f"{folder}: no Arrow data files (data-*.arrow) found; is it a complete save_to_disk folder?")
    return files


def _features(folder: Path, table: Any) -> dict[str, Any]:
    """The features (as `Features.to_dict()` gives them) from dataset_info.json, else the Arrow schema's metadata."""
    try:
        return json.loads((folder / "dataset_info.json").read_text(encoding="utf-8"))["features"] or {}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        meta = (table.schema.metadata or {}).get(b"huggingface", b"{}")
        return json.loads(meta)["info"]["features"] or {}
    except (ValueError, KeyError, TypeError):
        return {}


def _rows(data: dict[str, list], features: dict[str, Any], columns: set[str], n: int) -> Rows:
    for name, values in data.items():
        to_names = _class_names(features.get(name))
        if to_names is not None:
            data[name] = [to_names(v) for v in values]
    records = [{c: values[i] for c, values in data.items()} for i in range(n)]
    return records, [f"index {i}" for i in range(n)], columns


def _class_names(feature: Any) -> Callable[[Any], Any] | None:
    """Id -> name for a ClassLabel feature, ids -> names for a list of ClassLabel; None for any other feature."""
    if not isinstance(feature, dict):
        return None
    if feature.get("_type") == "ClassLabel" and isinstance(feature.get("names"), list):
        names = feature["names"]
        return lambda v: _name(v, names)
    inner = feature.get("feature")
    if feature.get("_type") in _LIST_TYPES and isinstance(inner, dict) and _class_names(inner) is not None:
        names = inner["names"]
        return lambda v: v if v is None else [_name(x, names) for x in v]
    return None


def _name(value: Any, names: list[str]) -> Any:
    if isinstance(value, int) and 0 <= value < len(names):
        return names[value]
    return None if value == -1 else value  # -1: HF's "no label" (e.g. GLUE test splits)
