"""Training checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint holds the trainable tensors, the optimizer and scheduler state, the torch RNG
state, the position in the data order (epoch, next batch), the history so far and the best
epoch's tensors. Each is written to a temporary file and renamed into place, so a crash
mid-write leaves the previous checkpoint intact; the last `keep` are kept. A write that fails
(a full disk) removes its temporary file and keeps the earlier checkpoints.

They live beside the run folder in `.<name>.checkpoints/` and are removed once the run folder
is committed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from textlora.errors import DiskFullError
from textlora.run_folder import is_disk_full, pid_alive

FORMAT = 1
DEVICE_NEUTRAL = ("device", "eval_batch_size", "report_to", "tracking_dir", "mlflow_uri")
"""Train settings that may change between a checkpoint and its resume: where it runs or logs, not what it
computes."""
STOP_NEUTRAL = ("patience", "max_minutes")
"""Train settings that may change between a checkpoint and its resume: when to stop, not what a step computes (a run
stopped by its time budget continues under a new one)."""


def checkpoint_dir(out: str | Path) -> Path:
    """Where the checkpoints of the run written to `out` live."""
    out = Path(out)
    return out.parent / f".{out.name}.checkpoints"


def fingerprint(config: dict[str, Any], data_files: dict[str, str]) -> str:
    """A hash of everything that must be equal for a checkpoint to be resumable: the config (less the output
    path, the device and the stopping rules: a run killed on a GPU resumes on a CPU) and the data files' sha256."""
    cfg = {k: v for k, v in config.items() if k != "out"}
    cfg["train"] = {k: v for k, v in cfg.get("train", {}).items() if k not in DEVICE_NEUTRAL + STOP_NEUTRAL}
    blob = json.dumps({"config": cfg, "data": sorted(data_files.values())}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def save_checkpoint(folder: Path, state: dict[str, Any], keep: int = 2) -> Path:
    """Atomically write `state` as `step-<step>.pt` in `folder` and prune all but the newest `keep`.

    Raises:
        DiskFullError: no space left; the partial file is removed, the earlier checkpoints kept.
    """
    path = folder / f"step-{state['step']:09d}.pt"
    tmp = folder / f".{path.name}.tmp-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _remove_dead_temps(folder)
        with open(tmp, "wb") as f:  # a file object: torch's own writer turns ENOSPC into an opaque RuntimeError
            torch.save({"format": FORMAT, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if is_disk_full(e):
            last = sorted(folder.glob("step-*.pt"))
            kept = (f"the last good one, {last[-1].name}, is kept); free some space and rerun the same command to "
                    "resume from it" if last else "there is no earlier one); free some space and rerun")
            raise DiskFullError(f"cannot write checkpoint {path}: no space left on device ({kept}, or set "
                                "train.checkpoint_every=0 to checkpoint only at epoch ends.") from None
        raise
    for old in sorted(folder.glob("step-*.pt"))[:-keep]:
        old.unlink(missing_ok=True)
    return path


def _remove_dead_temps(folder: Path) -> None:
    """Temporary files of processes killed mid-write (their pid dead) only take space."""
    for p in folder.glob(".step-*.pt.tmp-*"):
        m = re.fullmatch(r"\.step-\d+\.pt\.tmp-(\d+)", p.name)
        if m and not pid_alive(int(m[1])):
            p.unlink(missing_ok=True)


def load_latest(folder: Path, expected_fingerprint: str) -> dict[str, Any] | None:
    """The newest readable checkpoint in `folder` with the expected fingerprint, or None.

    A checkpoint that cannot be read (a torn file from a crash outside our atomic rename) is
    skipped in favour of the one before it.
    """
    for path in sorted(folder.glob("step-*.pt"), reverse=True):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - any unreadable file is skipped, the older one is tried
            continue
        if state.get("format") == FORMAT and state.get("fingerprint") == expected_fingerprint:
            return state
    return None


def has_checkpoints(folder: Path) -> bool:
    """True if `folder` holds any checkpoint file."""
    return folder.is_dir() and any(folder.glob("step-*.pt"))


def remove_checkpoints(folder: Path) -> None:
    """Delete the checkpoint folder."""
    shutil.rmtree(folder, ignore_errors=True)
