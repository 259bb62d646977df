"""Read one table file (CSV, TSV, JSONL, JSON, Parquet; optionally gzipped) into rows of text and label.

Every problem a user can make with a file becomes a `DataError` that names the file, the row
and the fix: missing file, unknown format, undecodable bytes, missing column, empty text,
missing label.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textlora.errors import DataError

FORMATS = {
    ".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet",
}
"""Supported suffixes (each may also end in .gz, except Parquet) and the reader they map to."""


@dataclass
class Table:
    """The text and label columns of one file, validated."""

    path: Path
    texts: list[str]
    labels: list[Any]
    """Each a label name (str), or a list of names for multi-label rows."""
    row_names: list[str]
    """How to name each row in an error message, e.g. 'line 12' or 'row 7'."""


def file_format(path: Path) -> str | None:
    """The reader for `path`'s suffix ('csv', 'jsonl', ...), or None if unsupported."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
        if suffixes and suffixes[-1] == ".parquet":
            return None
    return FORMATS.get(suffixes[-1]) if suffixes else None


def read_table(path: str | Path, text_column: str = "text", label_column: str = "label",
               text_pair_column: str | None = None, label_sep: str | None = None) -> Table:
    """Read `path` and return its validated text and label columns.

    Raises:
        DataError: the file is missing, of an unknown format, not UTF-8, malformed, lacks a
            column, or has an empty or non-string text or a missing label.
    """
    path = Path(path)
    records, row_names, columns = read_records(path)
    if not records:
        raise DataError(f"{path.name}: the file has no data rows. Expected a header/keys with "
                        f"'{text_column}' and '{label_column}' and at least one row.")
    return table_from_records(records, row_names, columns, path, text_column, label_column, text_pair_column,
                              label_sep)


def table_from_records(records: list[dict], row_names: list[str], columns: set[str], source: str | Path,
                       text_column: str = "text", label_column: str = "label", text_pair_column: str | None = None,
                       label_sep: str | None = None, fix: str = "Set --{which}-column (data.{which}_column)") -> Table:
    """Validate the text and label columns of rows already read (from a file, a table in memory or a Hugging Face
    dataset) into a `Table`; `source` names them in errors (a file's name, or e.g. 'train (DataFrame)').

    Why: every kind of input gets the same checks and the same one-line errors. Without `label_column` but with a
    `labels` column (the multi-label convention of Hugging Face datasets and GoEmotions), the default 'label'
    reads `labels`. `fix` says how to set a column name ({which}: text or label).

    Raises:
        DataError: a column is missing, or a row has an empty or non-string text or a missing label.
    """
    if label_column == "label" and label_column not in columns and "labels" in columns:
        label_column = "labels"
    needed = [text_column, label_column] + ([text_pair_column] if text_pair_column else [])
    missing = [c for c in needed if c not in columns]
    if missing:
        which = "label" if label_column in missing else "text"
        raise DataError(f"{_name(source)}: column {missing[0]!r} not found; columns are {sorted(columns)}. "
                        f"{fix.format(which=which)} to the right name.")
    texts = [check_text(r.get(text_column), source, name, text_column) for r, name in zip(records, row_names)]
    if text_pair_column:
        pairs = [check_text(r.get(text_pair_column), source, n, text_pair_column) for r, n in zip(records, row_names)]
        texts = [f"{p}. {t}" for p, t in zip(pairs, texts)]
    labels = [_label(r.get(label_column), source, name, label_column, label_sep)
              for r, name in zip(records, row_names)]
    return Table(Path(source), texts, labels, row_names)


def _name(source: str | Path) -> str:
    """How errors name a source: a file by its name, anything else as given."""
    return source.name if isinstance(source, Path) else source


def read_records(path: Path) -> tuple[list[dict], list[str], set[str]]:
    """All rows of `path` as dicts, a name for each row, and the set of columns seen.

    Raises:
        DataError: missing file, unknown format, undecodable bytes or malformed content.
    """
    if not path.is_file():
        hint = " It is a folder; pass a file inside it or the folder as --data." if path.is_dir() else ""
        raise DataError(f"data file {path} not found.{hint} Check --data / data.path.")
    fmt = file_format(path)
    if fmt is None:
        raise DataError(f"{path.name}: unknown data format '{''.join(path.suffixes) or '(no suffix)'}'; "
                        f"expected one of {sorted(FORMATS)} (optionally .gz, except .parquet). "
                        "Convert the file or rename it with the right suffix.")
    return _READERS[fmt](path)


def read_lines(path: Path) -> list[str]:
    """Non-blank lines of a UTF-8 text file (optionally gzipped)."""
    return [line for line in _lines(_decode(path, _read_bytes(path))) if line.strip()]


def _lines(text: str) -> list[str]:
    """Split on '\n' (and a '\r' before it) only: `str.splitlines` also splits inside JSON strings on
    U+0085, U+2028 and other separators that real data (IMDb) contains."""
    return [line.removesuffix("\r") for line in text.split("\n")]


def check_text(value: Any, path: str | Path, row: str, column: str) -> str:
    """`value` if it is a non-empty string, else a DataError naming the file, row and column."""
    if not isinstance(value, str):
        got = "nothing" if _is_missing(value) else f"{type(value).__name__} {value!r}"[:80]
        raise DataError(f"{_name(path)} {row}: column '{column}' must be a non-empty string, got {got}. "
                        "Fix or drop that row.")
    if not value.strip():
        raise DataError(f"{_name(path)} {row}: column '{column}' is empty. Every row needs a text; "
                        "fix or drop that row.")
    return value


def _label(value: Any, path: str | Path, row: str, column: str, sep: str | None) -> Any:
    if isinstance(value, (list, tuple)):
        names = [_label(v, path, row, column, None) for v in value]
        if not names:
            raise DataError(f"{_name(path)} {row}: label list in '{column}' is empty; a multi-label row "
                            "needs at least one label.")
        return names
    if _is_missing(value) or (isinstance(value, str) and not value.strip()):
        raise DataError(f"{_name(path)} {row}: label column '{column}' is empty. Every row needs a label; "
                        "fix or drop that row.")
    if isinstance(value, dict):
        raise DataError(f"{_name(path)} {row}: label column '{column}' holds an object {value!r}; expected a "
                        "label name, an integer id, or a list of names.")
    text = normalize_label(value)
    if sep:
        return [normalize_label(part) for part in text.split(sep) if part.strip()]
    return text


_INTEGER = re.compile(r"[+-]?\d+")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def normalize_label(value: Any) -> str:
    """The one spelling of a label value: numbers that are integers as integers (`1`, `1.0` and `"1.0"` are
    all "1"), other numbers in their shortest form ("0.50" is "0.5"), booleans and the strings true/false in
    any case as "true"/"false", other strings stripped.

    Why: CSV gives strings, JSON numbers and booleans; the same label must not become two classes."""
    text = str(value).strip()  # numpy bools and numbers print as Python's do
    if text.lower() in ("true", "false"):
        return text.lower()
    if _INTEGER.fullmatch(text):
        return str(int(text))  # exact, however many digits
    if _NUMBER.fullmatch(text):
        number = float(text)
        if math.isfinite(number):
            return str(int(number)) if number.is_integer() else repr(number)
    return text


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix.lower() == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError) as e:
        raise DataError(f"{path.name}: cannot read the file ({e}). Is it a complete, valid gzip file?") from None


def _decode(path: Path, raw: bytes) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(f"{path.name} line {line}: bytes at offset {e.start} are not valid UTF-8 "
                        f"({raw[e.start:e.start + 4]!r}). Re-save the file as UTF-8 "
                        "(e.g. `iconv -f latin1 -t utf-8`).") from None
    return text.removeprefix("\ufeff")


def _read_jsonl(path: Path) -> tuple[list[dict], list[str], set[str]]:
    text = _decode(path, _read_bytes(path))
    records, names, columns = [], [], set()
    for i, line in enumerate(_lines(text), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path.name} line {i}: not valid JSON ({e.msg} at column {e.colno}). "
                            "Each line of a JSONL file must be one JSON object.") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path.name} line {i}: expected a JSON object with the text and label keys, "
                            f"got {type(obj).__name__}.")
        records.append(obj)
        names.append(f"line {i}")
        columns.update(obj)
    return records, names, columns


def _read_json(path: Path) -> tuple[list[dict], list[str], set[str]]:
    text = _decode(path, _read_bytes(path))
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path.name}: not valid JSON ({e.msg} at line {e.lineno}). A .json file must hold "
                        "a list of objects; use .jsonl for one object per line.") from None
    if not isinstance(obj, list) or not all(isinstance(o, dict) for o in obj):
        raise DataError(f"{path.name}: expected a JSON list of objects, got {type(obj).__name__}.")
    columns = set().union(*obj) if obj else set()
    return obj, [f"item {i}" for i in range(1, len(obj) + 1)], columns


def _read_delimited(path: Path, sep: str) -> tuple[list[dict], list[str], set[str]]:
    import pandas as pd

    text = _decode(path, _read_bytes(path))
    try:
        df = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        return [], [], set()
    except (pd.errors.ParserError, ValueError) as e:
        raise DataError(f"{path.name}: cannot parse as {'TSV' if sep == chr(9) else 'CSV'}: {e}. "
                        "Check the quoting and the number of fields on that line.") from None
    return frame_records(df)


def _read_parquet(path: Path) -> tuple[list[dict], list[str], set[str]]:
    import pandas as pd

    try:
        df = pd.read_parquet(path)
    except Exception as e:  # pyarrow raises several unrelated types for a bad file
        raise DataError(f"{path.name}: cannot read as Parquet ({type(e).__name__}: {e}).") from None
    return frame_records(df)


def frame_records(df: Any) -> tuple[list[dict], list[str], set[str]]:
    """The rows of a pandas DataFrame as dicts of plain Python values ('row 1', ... names), and its columns."""
    columns = {str(c) for c in df.columns}
    df = df.set_axis([str(c) for c in df.columns], axis=1)  # a copy: a caller's frame stays as it was
    records = []
    for rec in df.to_dict(orient="records"):
        records.append({k: (v.tolist() if hasattr(v, "tolist") and not isinstance(v, str) else v)
                        for k, v in rec.items()})
    return records, [f"row {i}" for i in range(1, len(records) + 1)], columns


_READERS = {
    "jsonl": _read_jsonl,
    "json": _read_json,
    "csv": lambda p: _read_delimited(p, ","),
    "tsv": lambda p: _read_delimited(p, "\t"),
    "parquet": _read_parquet,
}
