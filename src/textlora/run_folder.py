"""The run folder: the contract between `train` (writes it) and `predict`, `report`, `serve` (read it).

A run folder is built in a hidden staging folder beside its destination and renamed into
place only when every file is written, `manifest.json` last. A crash leaves no folder that
looks complete, and an earlier run at the same path survives until the new one is whole.

Nothing that textlora did not write is ever replaced: `--overwrite` replaces only an earlier run
(a folder with textlora's `manifest.json`) or an empty folder, and `--out` may not be, hold or sit
inside the data. While a training writes a run, `.<name>.lock` beside it holds the training's pid
(and an flock), so a second training on the same `--out` refuses instead of deleting or resuming
the first one's checkpoints.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from textlora.errors import ConfigError, DiskFullError, ModelError, RunExistsError

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
    except BaseException as e:
        shutil.rmtree(staging, ignore_errors=True)
        if is_disk_full(e):
            kept = "the earlier run there is kept" if is_complete(out) else "nothing was written"
            raise DiskFullError(f"cannot write the run folder {out}: no space left on device ({kept}); free "
                                "some space and rerun the same command (it resumes from the last checkpoint).") from None
        raise


def _swap_in(staging: Path, out: Path) -> None:
    """Put `staging` at `out`; if that fails after the old run was moved aside, move it back."""
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    had_old = out.exists()
    if had_old:
        _check_replaceable(out)  # again, just before: files may have appeared there during training
        os.replace(out, old)
    try:
        os.replace(staging, out)
    except BaseException:
        if had_old:
            os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def check_writable(out: Path, overwrite: bool, data: str | Path | None = None) -> None:
    """Refuse an `out` whose writing could lose files, before any data or model is loaded.

    `--overwrite` replaces only an earlier run or an empty folder; `out` may not be the current
    folder (or hold it), sit under a file, or be, hold or sit inside `data` (the data path).

    Raises:
        ConfigError: `out` is the current folder, under a file, or overlaps `data`.
        RunExistsError: `out` is a file, or a non-empty folder that is not replaceable.
    """
    out = Path(out)
    _check_out_path(out)
    if data:
        _check_apart_from_data(out, Path(data))
    if out.exists() and not out.is_dir():
        raise RunExistsError(f"--out {out} is a file; pass a folder path.")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            what = "a finished run" if is_complete(out) else "files"
            raise RunExistsError(f"--out {out} already holds {what}; pass --overwrite to replace it, "
                                 "or choose another --out.")
        _check_replaceable(out)


def _check_out_path(out: Path) -> None:
    """`out` must name a folder of its own: not the current folder or above it, not under a file."""
    here, target = Path.cwd().resolve(), out.resolve()
    if target == here or target in here.parents:
        raise ConfigError(f"--out {out} is the current folder{'' if target == here else ' or one above it'}; "
                          "a run needs a folder of its own: pass e.g. --out runs/NAME.")
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"--out {out}: {parent} is a file, not a folder; choose an --out under a folder, "
                                  "e.g. runs/NAME.")
            return


def _check_apart_from_data(out: Path, data: Path) -> None:
    """A run folder never is, holds, or sits inside the data it was trained on (overwriting would delete it)."""
    target, d = out.resolve(), data.resolve()
    how = ("is" if target == d else "holds" if d.is_relative_to(target)
           else "is inside" if target.is_relative_to(d) else None)
    if how:
        raise ConfigError(f"--out {out} {how} data.path ({data}); a run folder must be apart from its data: "
                          "choose another --out, e.g. runs/NAME.")


def _check_replaceable(out: Path) -> None:
    """Only an earlier textlora run or an empty folder may be replaced."""
    if out.is_dir() and any(out.iterdir()) and not _is_textlora_run(out):
        raise RunExistsError(f"--out {out} holds files that are not a textlora run (no textlora {MANIFEST}); "
                             "--overwrite replaces only an earlier run or an empty folder: choose another --out.")


def _is_textlora_run(path: Path) -> bool:
    """True when `path` holds a manifest written by textlora (not any file that happens to be named so)."""
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and "textlora_version" in manifest


@contextlib.contextmanager
def run_lock(out: str | Path, enabled: bool = True) -> Iterator[None]:
    """Hold `.<name>.lock` beside `out` for a whole training; released on exit, also on errors.

    Two trainings on one `--out` would delete or resume each other's checkpoints, so the second
    one refuses, naming the pid that holds the lock. A lock left by a dead process is taken over,
    and the staging and `.old-` folders of a save killed midway (their pid dead) are cleaned up:
    an earlier run moved aside by a killed save is moved back. Under DDP only rank 0 locks
    (`enabled=False` elsewhere).

    Raises:
        RunExistsError: another live process holds the lock.
    """
    if not enabled:
        yield
        return
    out = Path(out)
    _check_out_path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    lock = out.parent / f".{out.name}.lock"
    fd = _acquire(lock, out)
    try:
        _clean_dead_saves(out)
        yield
    finally:
        lock.unlink(missing_ok=True)  # while still holding the flock, so no one takes a lock file being removed
        os.close(fd)


def _acquire(lock: Path, out: Path) -> int:
    """Take the lock file (flock + our pid in it) and return its descriptor."""
    import fcntl  # POSIX only

    for _ in range(10):  # retried only when the lock file was replaced between our open and flock
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise _locked(out, lock, pid) from None
        try:
            current = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            current = False
        pid = _read_pid(fd)
        if current and pid is not None and pid != os.getpid() and pid_alive(pid):
            os.close(fd)
            raise _locked(out, lock, pid)  # a live pid without the flock (e.g. another host): still refuse
        if current:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return fd
        os.close(fd)
    raise RunExistsError(f"--out {out}: could not take the lock {lock}; another training keeps replacing it.")


def _locked(out: Path, lock: Path, pid: int | None) -> RunExistsError:
    who = f"pid {pid}" if pid is not None else "a process"
    return RunExistsError(f"--out {out} is being written by another training ({who} holds {lock}); wait for it "
                          f"to finish or choose another --out (if no such training runs, delete {lock}).")


def _read_pid(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None


def pid_alive(pid: int) -> bool:
    """True if process `pid` exists (os.kill with signal 0 only checks).

    A lock, staging folder or temporary file named after a dead pid is stale and may be removed.
    """
    if pid <= 0:  # 0 and negatives would address process groups
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # no such process, or a number no pid can be
        return False
    except PermissionError:  # exists, owned by another user
        return True
    with contextlib.suppress(OSError):  # Linux: a zombie (killed, not yet reaped) holds nothing any more
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    return True


def _clean_dead_saves(out: Path) -> None:
    """Remove `.<name>.staging-<pid>` / `.<name>.old-<pid>` of dead pids; put back a run a killed save moved aside."""
    pattern = re.compile(rf"\.{re.escape(out.name)}\.(staging|old)-(\d+)")
    for p in sorted(out.parent.iterdir()):
        m = pattern.fullmatch(p.name)
        if m is None or not p.is_dir() or pid_alive(int(m[2])):
            continue
        if m[1] == "old" and not out.exists() and is_complete(p):
            os.replace(p, out)  # killed between moving the old run aside and moving the new one in
        else:
            shutil.rmtree(p, ignore_errors=True)


def is_disk_full(e: BaseException) -> bool:
    """True if `e`, or an exception it was raised from, is a full disk or quota.

    Those become one-line errors that say what to free, instead of a library's traceback.
    """
    for _ in range(10):  # a bounded walk: exception chains can loop
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        e = e.__cause__ or e.__context__
        if e is None:
            return False
    return False


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
