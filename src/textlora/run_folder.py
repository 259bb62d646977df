"""The run folder: the contract between `train` (writes it) and `predict`, `report`, `serve` (read it).

A run folder is built in a hidden staging folder beside its destination and renamed into
place only when every file is written, `manifest.json` last. A crash leaves no folder that
looks complete, and an earlier run at the same path survives until the new one is whole.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from textlora.errors import ModelError, RunExistsError

MANIFEST = "manifest.json"


def is_complete(path: str | Path) -> bool:
    """True when `path` is a finished run folder."""
    return (Path(path) / MANIFEST).is_file()


@contextlib.contextmanager
def staged_dir(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh staging folder; on success it replaces `out`, on any error it is removed.

    Raises:
        RunExistsError: `out` exists, is not empty, and `overwrite` is False.
    """
    out = Path(out)
    check_writable(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
        _fsync_tree(staging)
        _swap_in(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _swap_in(staging: Path, out: Path) -> None:
    """Put `staging` at `out`; if that fails after the old run was moved aside, move it back."""
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    had_old = out.exists()
    if had_old:
        os.replace(out, old)
    try:
        os.replace(staging, out)
    except BaseException:
        if had_old:
            os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def check_writable(out: Path, overwrite: bool) -> None:
    """Refuse to replace an existing non-empty folder unless asked to."""
    if out.exists() and not out.is_dir():
        raise RunExistsError(f"--out {out} is a file; pass a folder path.")
    if out.exists() and any(out.iterdir()) and not overwrite:
        what = "a finished run" if is_complete(out) else "files"
        raise RunExistsError(f"--out {out} already holds {what}; pass --overwrite to replace it, "
                              "or choose another --out.")


def write_json(path: Path, obj: Any) -> None:
    """Write `obj` as indented JSON."""
    path.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_jsonable), encoding="utf-8")


def read_json(path: Path) -> Any:
    """Read a JSON file of a run folder, with a clear error if it is missing."""
    if not path.is_file():
        raise ModelError(f"{path.parent}: {path.name} is missing; is this a textlora run folder?")
    return json.loads(path.read_text(encoding="utf-8"))


def require_run(path: str | Path) -> Path:
    """`path` as a finished run folder, or a clear error."""
    p = Path(path)
    if not p.is_dir():
        raise ModelError(f"run folder {p} not found. Pass the --out folder of a finished `textlora train`.")
    if not is_complete(p):
        raise ModelError(f"{p} is not a finished run folder (no {MANIFEST}); was training interrupted?")
    return p


def _fsync_tree(root: Path) -> None:
    for dirpath, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                os.fsync(f.fileno())


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")
