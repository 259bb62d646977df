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
import math
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from textlora.config import RunConfig
from textlora.data.labels import LabelMap
from textlora.errors import ConfigError, DiskFullError, ModelError, RunExistsError

FILES = {
    "manifest": "manifest.json",
    "metrics": "metrics.json",
    "config": "config.yaml",
    "labels": "labels.json",
    "thresholds": "thresholds.json",
    "calibration": "calibration.json",
    "predictions": "predictions.npz",
    "loss_log": "loss_log.jsonl",
    "adapter": "adapter",
    "head": "head.safetensors",
    "model": "model",
    "tokenizer": "tokenizer",
    "onnx": "onnx/model.onnx",
    "onnx_int8": "onnx/model.int8.onnx",
    "onnx_source": "onnx/source.json",
    "card": "README.md",
}
"""The parts of a run folder and their names on disk; every module names them through `path_of`.

`manifest` is written last and marks a finished run; `adapter` (lora, qlora), `head` (head) and `model` (full)
hold the trained weights; `tokenizer` is the base's tokenizer as trained with; `card` is the model card
(`textlora.card`), for people and the hub: nothing reads it back. `onnx/` is a cache written after
training, on the first ONNX Runtime load (`model/onnx_runtime.py`): the merged model in fp32 and int8, and
`source.json`, the sha256 of each file and of the weights it was exported from."""
MANIFEST = FILES["manifest"]
WEIGHTS = ("adapter", "head", "model")
"""The parts that hold trained weights (one of them per run, by method)."""


def path_of(folder: str | Path, part: str) -> Path:
    """The path of `part` (a key of `FILES`) inside the run folder `folder`.

    Why: the file names of a run are spelled in one place, so readers and writers cannot drift apart.
    """
    return Path(folder) / FILES[part]


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
    check_path(out, data)
    if out.exists() and not out.is_dir():
        raise RunExistsError(f"--out {out} is a file; pass a folder path.")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            what = "a finished run" if is_complete(out) else "files"
            raise RunExistsError(f"--out {out} already holds {what}; pass --overwrite to replace it, "
                                 "or choose another --out.")
        _check_replaceable(out)


def check_path(out: Path, data: str | Path | None = None) -> None:
    """Refuse an `out` that is the current folder (or above it), sits under a file or where we cannot write, or
    overlaps `data`; what `out` already holds is not looked at.

    Why: folders textlora reopens on purpose (an audit's, resumed) need these checks without `check_writable`'s
    refusal of a folder that holds files.

    Raises:
        ConfigError: naming the problem and a fix.
    """
    _check_out_path(Path(out))
    if data:
        _check_apart_from_data(Path(out), Path(data))


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
            if not os.access(parent, os.W_OK | os.X_OK):
                raise ConfigError(f"--out {out}: cannot write in {parent} (permission denied); choose an --out "
                                  "you can write to, e.g. runs/NAME.")
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
        if current and pid is None and os.pread(fd, 32, 0).strip():  # never overwrite a file textlora did not write
            os.close(fd)
            raise RunExistsError(f"--out {out}: {lock} exists and is not a textlora lock (it holds no pid); move it "
                                 "away or choose another --out.")
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


@dataclass
class Run:
    """A run folder, read once: its config, label map and manifest, and the checks that go with them.

    >>> run = Run.open("runs/emotion-lora")  # doctest: +SKIP
    >>> run.method, run.labels.labels[:2]  # doctest: +SKIP
    ('lora', ['anger', 'fear'])
    """

    path: Path
    config: RunConfig
    """The run's config, read leniently (keys of a newer textlora are dropped with a warning)."""
    labels: LabelMap
    manifest: dict[str, Any] | None
    """The manifest; None only for an unfinished folder opened with `finished=False`."""

    @classmethod
    def open(cls, path: str | Path, finished: bool = True) -> Run:
        """Read the run folder at `path`: a finished run, or with `finished=False` any folder holding a config and
        labels (the staging folder inside `train`).

        Raises:
            ModelError: not a finished run folder, or its config.yaml or labels.json is missing.
        """
        p = require_run(path) if finished else Path(path)
        manifest = read_json(path_of(p, "manifest")) if finished or path_of(p, "manifest").is_file() else None
        for part in ("config", "labels"):
            if not path_of(p, part).is_file():
                raise ModelError(f"{p}: {FILES[part]} is missing; the run folder is incomplete (was it copied "
                                 "only in part?).")
        return cls(p, RunConfig.from_yaml(path_of(p, "config"), strict=False), LabelMap.load(path_of(p, "labels")),
                   manifest)

    def path_of(self, part: str) -> Path:
        """The path of `part` (a key of `FILES`) in this run."""
        return path_of(self.path, part)

    def has(self, part: str) -> bool:
        """True when this run holds `part` (a file or a folder)."""
        return self.path_of(part).exists()

    @property
    def method(self) -> str:
        """lora, qlora, full or head: how the run was trained."""
        return self.manifest["method"] if self.manifest is not None else self.config.model.method

    @cached_property
    def metrics(self) -> dict[str, Any]:
        """`metrics.json`: validation and test metrics, history, best epoch.

        Raises:
            ModelError: the run has no metrics.json.
        """
        return read_json(self.path_of("metrics"))

    @cached_property
    def thresholds(self) -> np.ndarray | None:
        """Multi-label runs: per-label decision thresholds in label order (0.5 for a label `thresholds.json`
        lacks, or without the file); None for single-label runs."""
        return load_thresholds(self.path, self.labels) if self.labels.multi_label else None

    @cached_property
    def base(self) -> str:
        """The base model folder (or hub id) to load this run on: its recorded name if it resolves here, else its
        recorded path."""
        return find_base(self.manifest, self.config)

    @cached_property
    def calibration(self) -> dict[str, Any] | None:
        """`calibration.json`: {temperature, ece_before, ece_after, applied}, decided on validation at training
        end (`textlora.calibration.temperature_record`); None for multi-label runs and runs from before it."""
        return read_json(self.path_of("calibration")) if self.has("calibration") else None

    @cached_property
    def temperature(self) -> float:
        """What `predict_proba` divides the logits by: the fitted temperature when training found it lowers
        validation ECE (`applied`), else 1.0 (also without `calibration.json`).

        Raises:
            ModelError: calibration.json applies a temperature that is not a finite number > 0.
        """
        cal = self.calibration
        if not cal or not cal.get("applied"):
            return 1.0
        t = cal.get("temperature")
        if not isinstance(t, (int, float)) or isinstance(t, bool) or not 0 < t < float("inf"):
            raise ModelError(f"{self.path}: calibration.json has temperature {t!r}, expected a finite number > 0; "
                             "retrain the run, or load it with calibrate=False (CLI: --no-calibrate).")
        return float(t)

    def check_base(self) -> None:
        """Raise ModelError if `base` does not hold the weights this run was trained on (no-op for full runs)."""
        if self.method != "full":
            check_base_identity(self.base, self.manifest, self.path)

    def predictions(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """(logits, targets) by split of `predictions.npz`; both empty without the file."""
        logits, y = {}, {}
        if self.has("predictions"):
            with np.load(self.path_of("predictions")) as z:
                for s in ("validation", "test"):
                    if f"{s}_logits" in z:
                        logits[s], y[s] = z[f"{s}_logits"], z[f"{s}_labels"]
        return logits, y

    def loss_log(self) -> list[dict[str, Any]]:
        """The per-step records of `loss_log.jsonl` (epoch, step, loss, lr); empty without the file."""
        if not self.has("loss_log"):
            return []
        return [json.loads(x) for x in self.path_of("loss_log").read_text(encoding="utf-8").splitlines() if x]


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Write `manifest.json`, the file that marks a run as finished: call it last."""
    write_json(path_of(folder, "manifest"), manifest)


def write_loss_log(folder: Path, history: list[dict[str, Any]]) -> None:
    """Write the per-step losses of `history` to `loss_log.jsonl`, one JSON line each, and remove them from
    `history` (whose validation records go to metrics.json). A record's steps lie in one epoch: its `epoch` rounded up
    (a fraction for a validation mid-epoch)."""
    with open(path_of(folder, "loss_log"), "w", encoding="utf-8") as f:
        for rec in history:
            for step, loss, lr in rec.pop("steps"):
                f.write(json.dumps({"epoch": math.ceil(rec["epoch"]), "step": step, "loss": loss, "lr": lr}) + "\n")


def write_predictions(folder: Path, logits: dict[str, np.ndarray], targets: dict[str, np.ndarray]) -> None:
    """Write the logits and targets of each split to `predictions.npz` (`<split>_logits`, `<split>_labels`);
    the report draws its confusion matrices and calibration from them."""
    np.savez_compressed(path_of(folder, "predictions"),
                        **{f"{s}_{k}": v for s in logits for k, v in (("logits", logits[s]), ("labels", targets[s]))})


def load_thresholds(run_dir: Path, label_map: LabelMap) -> np.ndarray:
    """The per-label thresholds of a multi-label run (0.5 for a label the file lacks, or without the file)."""
    path = path_of(run_dir, "thresholds")
    saved = read_json(path) if path.is_file() else {}
    return np.array([float(saved.get(name, 0.5)) for name in label_map.labels])


def find_base(manifest: dict[str, Any], cfg: RunConfig) -> str:
    """The base model folder of a run: its recorded name if it resolves here, else its recorded path."""
    # model/ sits above the run folder: imported here, by the two base checks only
    from textlora.model.load import resolve_base

    recorded = manifest["base_model"]
    for candidate in (resolve_base(recorded.get("name", cfg.model.name)), recorded.get("path")):
        if candidate and Path(candidate).exists():
            return candidate
    return resolve_base(recorded.get("name", cfg.model.name))


def check_base_identity(path: str, manifest: dict[str, Any], run: Path) -> None:
    """Raise ModelError if the base at `path` does not have the weights sha256 the run was trained on."""
    from textlora.model.load import base_identity

    expected = manifest["base_model"].get("weights_sha256")
    if not expected or not Path(path).exists():
        return
    found = base_identity(path)["weights_sha256"]
    if found != expected:
        raise ModelError(f"{run}: was trained on base {manifest['base_model']['name']} with weights sha256 "
                         f"{expected[:12]}…, but {path} has {str(found)[:12]}…. Load it on the original base, or "
                         "pass check_base=False (CLI: --no-check-base) if you know they are compatible.")
