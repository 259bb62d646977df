"""Experiment tracking through the tools people already run: TensorBoard and MLflow (`train.report_to`).

A `Tracker` gets, from `train`: the resolved config as flat dotted params at the start, the (step, loss, lr) of
every optimizer step as the loop flushes them, the validation metrics after each evaluation, the final metrics
of `metrics.json` (same names: `validation/accuracy`, `test/f1_macro`, `base/test/accuracy`, `best_epoch`) and,
once the run folder is committed, its files as artifacts (MLflow only). One implementation per backend, fanned
out by `Trackers`; `tracking(cfg)` opens them for one training and closes them, a run that raised as FAILED.

| what | name | step |
|---|---|---|
| per-step loss and learning rate (`loss_log.jsonl`) | `train/loss`, `train/lr` | the optimizer step |
| each validation (`metrics.json` history, `val_<name>`) | `val/<name>` | the step it ran after |
| final metrics (`metrics.json`) | `<split>/<name>`, `base/<split>/<name>`, `best_epoch` | the last step |

TensorBoard scalars are written as float64 tensors, so they read back equal to `metrics.json`. The packages are
imported inside the backends (the `[track]` extra); `check` names a missing one before anything is loaded.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from textlora.errors import ConfigError

PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow"}
"""The package each `train.report_to` backend imports."""
DEFAULT_EXPERIMENT = "textlora"
"""MLflow experiment of runs when $MLFLOW_EXPERIMENT_NAME is not set."""
ARTIFACTS = ("metrics", "config", "labels", "thresholds", "card", "adapter", "head", "model")
"""Run-folder parts logged to MLflow (those present), besides report.html and the confusion figures."""


class Tracker(Protocol):
    """What `train` tells an experiment tracker; each method is a no-op where a backend has no such thing."""

    def log_params(self, params: dict[str, Any], start_step: int) -> None:
        """The resolved config as flat dotted keys; `start_step` is 0, or the step a resumed run continues from."""

    def log_metrics(self, points: list[tuple[int, str, float]]) -> None:
        """Scalars as (optimizer step, name, value), in step order: one call per flush, so a backend can batch."""

    def log_artifacts(self, run_dir: Path) -> None:
        """Files of the finished run folder."""

    def close(self, status: str) -> None:
        """End the run: FINISHED, FAILED or KILLED; flush and close writers."""


class Trackers:
    """The trackers of one training, fanned out, plus what `train`'s hooks pass: (step, loss, lr) entries,
    validation metrics, the final `metrics.json`. Empty (every call a no-op) without `report_to` or off rank 0."""

    def __init__(self, trackers: list[Tracker] | None = None):
        self.trackers = trackers or []
        self.step = 0
        """The last step logged: final metrics are logged there."""

    def __bool__(self) -> bool:
        return bool(self.trackers)

    def log_params(self, config: dict[str, Any], start_step: int = 0) -> None:
        """The resolved config (`RunConfig.to_dict()`) as flat dotted params."""
        if not self.trackers:
            return
        self.step = start_step
        params = flat_params(config)
        for t in self.trackers:
            t.log_params(params, start_step)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Scalars at `step`."""
        self._log([(step, k, v) for k, v in metrics.items()])

    def log_steps(self, entries: list[tuple[int, float, float]]) -> None:
        """(step, loss, lr) entries as `_LossLog.flush` returns them: `train/loss` and `train/lr` at each step."""
        self._log([p for step, loss, lr in entries for p in ((step, "train/loss", loss), (step, "train/lr", lr))])

    def _log(self, points: list[tuple[int, str, float]]) -> None:
        if not self.trackers or not points:
            return
        self.step = max(self.step, max(step for step, _, _ in points))
        points = [(step, name, float(value)) for step, name, value in points]
        for t in self.trackers:
            t.log_metrics(points)

    def log_validation(self, metrics: dict[str, float], step: int) -> None:
        """An evaluation's headline metrics as `val/<name>` (`metrics.json` history: `val_<name>`)."""
        self.log_metrics({f"val/{k}": v for k, v in metrics.items()}, step)

    def log_final(self, metrics: dict[str, Any]) -> None:
        """The numbers of `metrics.json` by their path in it (`test/accuracy`), at the last step logged."""
        if self.trackers:
            self.log_metrics(final_metrics(metrics), self.step)

    def log_artifacts(self, run_dir: str | Path) -> None:
        """The committed run folder's files (MLflow)."""
        for t in self.trackers:
            t.log_artifacts(Path(run_dir))

    def close(self, status: str) -> None:
        """End every tracker with `status`; a tracker that fails to close does not keep the others open."""
        errors = []
        for t in self.trackers:
            try:
                t.close(status)
            except Exception as e:  # closing the rest matters more; re-raised below
                errors.append(e)
        self.trackers = []
        if errors:
            raise errors[0]


def flat_params(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as {dotted key: scalar}; lists and nulls as JSON text (`["a", "b"]`, `null`).

    Trackers take flat scalar params; the dotted keys are the ones `key=value` overrides use."""
    out: dict[str, Any] = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat_params(v, key + "."))
        else:
            out[key] = v if isinstance(v, (bool, int, float, str)) else json.dumps(v)
    return out


def final_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The numbers of `metrics.json` worth a tracker's metric: each split's scalars (`validation/accuracy`), the
    untrained base's (`base/test/accuracy`) and `best_epoch`; not per-class tables, matrices or history."""
    out: dict[str, float] = {}
    groups = {s: metrics.get(s) for s in ("validation", "test")}
    groups.update({f"base/{s}": metrics.get("base", {}).get(s) for s in ("validation", "test")})
    for prefix, group in groups.items():
        for k, v in (group or {}).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[f"{prefix}/{k}"] = float(v)
    if "best_epoch" in metrics:
        out["best_epoch"] = float(metrics["best_epoch"])
    return out


def check(report_to: list[str] | None) -> None:
    """Raise a one-line ConfigError naming the extra to install when a `report_to` backend's package is missing.

    Why: before data or a model is loaded, not after an hour of training."""
    missing = [b for b in report_to or () if importlib.util.find_spec(PACKAGES[b]) is None]
    if missing:
        raise ConfigError(f"train.report_to: {', '.join(missing)} needs the package {PACKAGES[missing[0]]!r}, "
                          "which is not installed: pip install 'textlora[track]', or drop it from train.report_to.")


def tensorboard_dir(cfg: Any) -> Path:
    """The event folder of a run: `<train.tracking_dir or tensorboard beside the run>/<out's last part>`."""
    out = Path(cfg.out)
    root = Path(cfg.train.tracking_dir) if cfg.train.tracking_dir else out.parent / "tensorboard"
    return root / out.name


def mlflow_uri(cfg: Any) -> str:
    """The MLflow tracking URI of a run: train.mlflow_uri, else $MLFLOW_TRACKING_URI, else `mlflow.db` (SQLite)
    beside the run folder. Not a `./mlruns` file store: MLflow 3 refuses new ones unless told otherwise."""
    if cfg.train.mlflow_uri:
        return cfg.train.mlflow_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{(Path(cfg.out).parent / 'mlflow.db').resolve()}"


def _check_outside_run(cfg: Any) -> None:
    """The event folder must not be inside the run folder: the run is staged and swapped in whole, which would
    remove it."""
    target, out = tensorboard_dir(cfg).resolve(), Path(cfg.out).resolve()
    if target == out or target.is_relative_to(out):
        raise ConfigError(f"train.tracking_dir ({cfg.train.tracking_dir}) is inside --out {cfg.out}, which is "
                          "replaced whole when the run is saved; choose a folder outside it, e.g. runs/tensorboard.")


@contextlib.contextmanager
def tracking(cfg: Any, enabled: bool = True) -> Iterator[Trackers]:
    """Open the trackers of `cfg.train.report_to` for one training (none when not `enabled`: ranks other than 0)
    and close them on exit: FINISHED, FAILED when the training raised, KILLED on Ctrl-C.

    Raises:
        ConfigError: a backend's package is missing, or the TensorBoard folder is inside the run folder.
    """
    report_to = cfg.train.report_to or []
    check(report_to)
    if "tensorboard" in report_to:
        _check_outside_run(cfg)
    trackers = Trackers([_open(b, cfg) for b in report_to] if enabled else [])
    try:
        yield trackers
    except KeyboardInterrupt:
        trackers.close("KILLED")
        raise
    except BaseException:
        with contextlib.suppress(Exception):  # the training's error is the one to see
            trackers.close("FAILED")
        raise
    trackers.close("FINISHED")


def _open(backend: str, cfg: Any) -> Tracker:
    """The tracker of `backend`; a store it cannot open is a one-line ConfigError, before training."""
    try:
        return _BACKENDS[backend](cfg)
    except Exception as e:
        where = mlflow_uri(cfg) if backend == "mlflow" else str(tensorboard_dir(cfg))
        fix = "train.mlflow_uri or $MLFLOW_TRACKING_URI" if backend == "mlflow" else "train.tracking_dir"
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"train.report_to: cannot open {backend} at {where} ({reason}); check {fix}.") from None


class TensorBoardTracker:
    """Scalars (float64) and the config as hparams into `tensorboard_dir(cfg)`, with torch's `SummaryWriter`.

    A resumed run writes into the same folder and hides the steps after its checkpoint that the killed run had
    logged (`purge_step`); a fresh run (also an --overwrite) hides everything logged there before."""

    def __init__(self, cfg: Any):
        self.log_dir = tensorboard_dir(cfg)
        self.writer = None
        self.params: dict[str, Any] = {}

    def log_params(self, params: dict[str, Any], start_step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        self.writer = SummaryWriter(str(self.log_dir), purge_step=start_step + 1 if start_step else 0)
        self.params = params
        metric_names = {f"{s}/{m}": 0.0 for s in ("validation", "test") for m in ("accuracy", "f1_macro", "loss")}
        experiment, start, _ = hparams(params, metric_names)
        for summary in (experiment, start):
            self.writer.file_writer.add_summary(summary)

    def log_metrics(self, points: list[tuple[int, str, float]]) -> None:
        for step, name, value in points:
            self.writer.add_scalar(name, value, step, new_style=True, double_precision=True)

    def log_artifacts(self, run_dir: Path) -> None:
        pass  # TensorBoard keeps no files; MLflow does

    def close(self, status: str) -> None:
        if self.writer is None:
            return
        from tensorboard.plugins.hparams import api_pb2
        from torch.utils.tensorboard.summary import hparams

        end = hparams(self.params, {})[2]
        if status != "FINISHED":
            end.value[0].metadata.plugin_data.content = _session_end(api_pb2.STATUS_FAILURE)
        self.writer.file_writer.add_summary(end)
        self.writer.close()


def _session_end(status: int) -> bytes:
    from tensorboard.plugins.hparams import plugin_data_pb2

    return plugin_data_pb2.HParamsPluginData(
        version=0, session_end_info=plugin_data_pb2.SessionEndInfo(status=status)).SerializeToString()


class MlflowTracker:
    """One MLflow run per training, through `MlflowClient` on `mlflow_uri(cfg)`: params, metrics, artifacts, and
    its status at the end. The run is named after out's last part and tagged with the run folder's path."""

    BATCH = 1000
    """Metrics per `log_batch` call (MLflow's limit); params go 100 at a time."""

    def __init__(self, cfg: Any):
        from mlflow.tracking import MlflowClient

        self.uri = mlflow_uri(cfg)
        self.client = MlflowClient(tracking_uri=self.uri)
        experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
        found = self.client.get_experiment_by_name(experiment)
        if found is not None:
            experiment_id = found.experiment_id
        else:  # a local store keeps its artifacts beside it, not in the current folder
            local = self.uri.startswith("sqlite:///") and not os.environ.get("MLFLOW_ARTIFACT_ROOT")
            where = (Path(self.uri[len("sqlite:///"):]).parent / "mlartifacts").resolve().as_uri() if local else None
            experiment_id = self.client.create_experiment(experiment, artifact_location=where)
        out = Path(cfg.out)
        run = self.client.create_run(experiment_id, run_name=out.name,
                                     tags={"textlora.run_folder": str(out.resolve()),
                                           "textlora.method": cfg.model.method})
        self.run_id = run.info.run_id

    def log_params(self, params: dict[str, Any], start_step: int) -> None:
        from mlflow.entities import Param, RunTag

        items = [Param(k, str(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i:i + 100])
        if start_step:
            self.client.log_batch(self.run_id, tags=[RunTag("textlora.resumed_from_step", str(start_step))])

    def log_metrics(self, points: list[tuple[int, str, float]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(name, value, now, step) for step, name, value in points]
        for i in range(0, len(items), self.BATCH):
            self.client.log_batch(self.run_id, metrics=items[i:i + self.BATCH])

    def log_artifacts(self, run_dir: Path) -> None:
        from textlora.report import REPORT
        from textlora.run_folder import path_of

        for part in ARTIFACTS:
            p = path_of(run_dir, part)
            if p.is_dir():
                self.client.log_artifacts(self.run_id, str(p), artifact_path=p.name)
            elif p.is_file():
                self.client.log_artifact(self.run_id, str(p))
        for p in [run_dir / REPORT, *sorted(run_dir.glob("confusion_*.png"))]:
            if p.is_file():
                self.client.log_artifact(self.run_id, str(p))

    def close(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status)


OFF = Trackers()
"""No tracking (every call a no-op): the default of `train`'s internals."""
_BACKENDS = {"tensorboard": TensorBoardTracker, "mlflow": MlflowTracker}
"""The tracker class of each `train.report_to` name."""
