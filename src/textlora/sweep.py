"""`textlora sweep`: an Optuna study over `train` (lr, dropout, r, alpha, weight decay by default), with
bad trials pruned on the validation metric after each epoch.

    textlora sweep --config run.yaml --trials 20                       # sweep folder: <out>-sweep/
    textlora sweep --config run.yaml --trials 10 --range train.lr=1e-5:1e-3:log --range lora.r=4:64:int:log
    textlora sweep --config run.yaml --trials 20 --storage postgresql://host/db --study-name emo  # on each worker

The sweep folder holds `study.db` (Optuna's SQLite storage, unless `--storage` names another database),
`trials/NNN/` (one run folder per finished trial, NNN its study-wide trial number), `results.md`,
`results.html`, `sweep.png` and `best.yaml`, the config of the best trial.

`--trials N` is the size of the study, not of one worker's share: trials are started until the study holds N
finished ones (complete or pruned: a pruned trial spent its budget too). Rerunning the same command resumes
the study and runs only what is missing; `--trials` larger than before adds the difference. Workers on several
machines that pass the same `--storage` and `--study-name` share one study (Optuna's distributed mode; give
each its own `--seed`): a worker counts the study's trials and starts one under a study-wide lock (PostgreSQL:
an advisory lock; SQLite: a lock file beside the database), so together they run exactly N, each trial once,
in its own folder. A worker killed mid-trial leaves a RUNNING trial; on PostgreSQL its heartbeat stops, and
after `STALE_AFTER_S` the next worker to start a trial marks it FAIL, so a replacement runs.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import math
import os
import socket
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from textlora.errors import ConfigError
from textlora.render import html_page, html_table, img, markdown_table, pyplot, write_text


@dataclass
class Param:
    """A searched config value: uniform (or log-uniform) in [low, high], an integer when `integer`."""

    low: float
    high: float
    log: bool = False
    integer: bool = False

    def __post_init__(self) -> None:
        if not self.low < self.high or (self.log and self.low <= 0):
            raise ConfigError(f"a search range needs low < high (and low > 0 on a log scale), got "
                              f"low={self.low}, high={self.high}, log={self.log}.")

    def suggest(self, trial: Any, name: str) -> float | int:
        if self.integer:
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(name, self.low, self.high, log=self.log)


LR_RANGES = {"lora": (1e-4, 5e-3), "qlora": (1e-4, 5e-3), "full": (1e-5, 2e-4), "head": (1e-3, 5e-2)}


def default_space(method: str) -> dict[str, Param]:
    """lr (range by method) and weight decay; for LoRA also r, alpha and adapter dropout."""
    space = {"train.lr": Param(*LR_RANGES[method], log=True), "train.weight_decay": Param(0.0, 0.1)}
    if method in ("lora", "qlora"):
        space.update({"lora.r": Param(2, 32, log=True, integer=True), "lora.alpha": Param(4.0, 64.0, log=True),
                      "lora.dropout": Param(0.0, 0.3)})
    return space


def parse_range(text: str) -> tuple[str, Param | None]:
    """`key=low:high[:log][:int]` (or `key=off` to drop a key) -> (key, Param or None).

    >>> parse_range("lora.r=4:64:int:log")
    ('lora.r', Param(low=4.0, high=64.0, log=True, integer=True))
    """
    key, sep, spec = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"--range {text!r} is not of the form key=low:high[:log][:int] (e.g. train.lr=1e-5:1e-3:log).")
    if spec.strip() == "off":
        return key.strip(), None
    parts = spec.split(":")
    flags = set(parts[2:])
    try:
        low, high = float(parts[0]), float(parts[1])
    except (ValueError, IndexError):
        raise ConfigError(f"--range {text!r}: low and high must be numbers, as in {key}=1e-5:1e-3:log.") from None
    if flags - {"log", "int"}:
        raise ConfigError(f"--range {text!r}: unknown flag(s) {sorted(flags - {'log', 'int'})}; use log and/or int.")
    return key.strip(), Param(low, high, "log" in flags, "int" in flags)


def load_space(path: str | Path) -> dict[str, Param | None]:
    """A YAML mapping `key: {low, high, log, int}` (or `key: null` to drop a default key)."""
    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"search space file {path} must map config keys to {{low, high, log, int}}.")
    out: dict[str, Param | None] = {}
    for key, v in raw.items():
        if v is not None and not (isinstance(v, dict) and {"low", "high"} <= set(v) <= {"low", "high", "log", "int"}):
            raise ConfigError(f"{path}: {key} must be null or {{low, high, log, int}}, got {v!r}.")
        out[key] = None if v is None else Param(float(v["low"]), float(v["high"]), bool(v.get("log", False)),
                                                bool(v.get("int", False)))
    return out


def build_space(cfg: Any, changes: dict[str, Param | None] | None = None) -> dict[str, Param]:
    """The method's default space with `changes` applied; every key is checked against the config."""
    space: dict[str, Param | None] = {**default_space(cfg.model.method), **(changes or {})}
    kept = {k: p for k, p in space.items() if p is not None}
    if not kept:
        raise ConfigError("the search space is empty; keep a default key or add one with --range.")
    cfg.with_overrides({k: (int(p.low) if p.integer else p.low) for k, p in kept.items()})  # unknown keys raise
    return kept


@dataclass
class SweepResult:
    folder: Path
    best_value: float
    best_params: dict[str, Any]
    best_config: Path
    table: str
    """The results table (Markdown)."""


def sweep(cfg: Any, trials: int, out: str | Path | None = None, space: dict[str, Param] | None = None,
          storage: str | None = None, study_name: str = "textlora", seed: int | None = None,
          metric: str | None = None, prune: bool = True, progress: bool = True) -> SweepResult:
    """Run Optuna trials of `train` around `cfg` (a RunConfig) until the study holds `trials`; write the sweep
    folder.

    Args:
        trials: finished (complete or pruned) trials the study should hold, over every worker: a resumed study
            runs only the missing ones.
        out: sweep folder (default `<cfg.out>-sweep`).
        storage: any database URL Optuna accepts; default SQLite `out/study.db`.
        seed: seeds the TPE sampler (default `cfg.train.seed`); offset by the trials already in the study,
            so a resumed sweep does not repeat its first proposals.
        metric: validation metric to optimise (default `cfg.train.select_metric`): maximised, or minimised for
            `loss` (`config.METRIC_DIRECTION`).

    Raises:
        ImportError: optuna is not installed (`pip install "textlora[sweep]"`).
        ConfigError: a search key or range is wrong.
    """
    optuna = _import_optuna()
    out = Path(out) if out else Path(f"{cfg.out}-sweep")
    (out / "trials").mkdir(parents=True, exist_ok=True)
    space = space if space is not None else build_space(cfg)
    metric = metric or cfg.train.select_metric
    from textlora.config import METRIC_DIRECTION

    direction = "maximize" if METRIC_DIRECTION[metric] > 0 else "minimize"
    study, rdb = _open_study(optuna, storage or f"sqlite:///{(out / 'study.db').resolve()}", study_name, prune,
                             direction)
    base_seed = cfg.train.seed if seed is None else seed
    study.sampler = optuna.samplers.TPESampler(seed=base_seed + len(study.trials))
    objective = _objective(optuna, cfg, space, metric, out, prune, progress)
    while (trial := _reserve_trial(optuna, study, rdb, trials)) is not None:
        _run_trial(optuna, study, rdb, trial, objective)
    return write_results(study, cfg, space, metric, out)


COUNTED = ("COMPLETE", "PRUNED", "RUNNING")
"""Trial states that count toward `--trials`: finished (complete or pruned) or running. Failed ones do not (the
error stops its worker; the next worker, or a rerun, runs a trial in its place)."""
HEARTBEAT_S = 30
"""How often a running trial tells a shared (non-SQLite) database that its worker is alive."""
STALE_AFTER_S = 300
"""A RUNNING trial without a heartbeat for this long belonged to a killed worker: the next reservation marks it
FAIL, so it stops counting."""


def database_url(url: str) -> str:
    """`url` with a PostgreSQL driver that is installed: SQLAlchemy 2.1 reads a bare `postgresql://` as psycopg 3,
    while the sweep extra installs psycopg2, so a bare URL uses psycopg2 unless psycopg 3 is there.

    Raises:
        ImportError: a postgresql:// URL and neither psycopg2 nor psycopg installed.
    """
    import importlib.util

    scheme, sep, rest = url.partition("://")
    if scheme != "postgresql" or importlib.util.find_spec("psycopg") is not None:
        return url
    if importlib.util.find_spec("psycopg2") is None:
        raise ImportError("--storage postgresql://... needs a PostgreSQL driver: pip install 'textlora[sweep]' "
                          "(or pip install psycopg2-binary).")
    return f"postgresql+psycopg2{sep}{rest}"


def _reserve_trial(optuna: Any, study: Any, rdb: Any, trials: int) -> Any | None:
    """Start the next trial (Optuna's ask) if the study holds fewer than `trials` finished or running ones, else
    None. Counting and starting happen under one study-wide lock: otherwise two workers could both start the
    last trial (optuna's MaxTrialsCallback only stops a worker after its trial, so k workers can overshoot by
    k - 1)."""
    if rdb.heartbeat_interval:
        with warnings.catch_warnings():  # experimental in optuna
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
    states = tuple(getattr(optuna.trial.TrialState, s) for s in COUNTED)
    with _study_lock(rdb.engine, study.study_name):
        if len(study.get_trials(deepcopy=False, states=states)) >= trials:
            return None
        with warnings.catch_warnings():  # optuna expects a heartbeat under study.optimize: _heartbeat gives it one
            warnings.filterwarnings("ignore", message="Heartbeat of storage")
            return study.ask()  # a RUNNING trial with the next study-wide number: its run folder is trials/NNN


def _run_trial(optuna: Any, study: Any, rdb: Any, trial: Any, objective: Any) -> None:
    """Run `objective` on `trial` and tell the study how it ended (as `study.optimize` would); an error marks the
    trial FAIL and is raised."""
    import gc

    with _heartbeat(rdb, trial._trial_id):
        try:
            value = objective(trial)
        except optuna.TrialPruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        except BaseException:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        else:
            study.tell(trial, value)
    gc.collect()  # as study.optimize(gc_after_trial=True): a trial's model is freed before the next one


@contextlib.contextmanager
def _heartbeat(rdb: Any, trial_id: int) -> Iterator[None]:
    """While a trial runs, record its heartbeat in a shared database every `heartbeat_interval` seconds (a
    background thread); nothing for SQLite."""
    if not rdb.heartbeat_interval:
        yield
        return
    import threading

    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            rdb.record_heartbeat(trial_id)
            stop.wait(rdb.heartbeat_interval)

    thread = threading.Thread(target=beat, name="textlora-sweep-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@contextlib.contextmanager
def _study_lock(engine: Any, study_name: str) -> Iterator[None]:
    """Hold a lock every worker of the study sees: a PostgreSQL advisory lock (the server releases it if the
    worker dies), or for SQLite an flock on `<database>.lock` (SQLite is one machine's file anyway).

    Raises:
        ConfigError: a database other than PostgreSQL or SQLite.
    """
    key = int.from_bytes(hashlib.sha256(f"textlora-sweep:{study_name}".encode()).digest()[:8], "big", signed=True)
    if engine.dialect.name == "postgresql":
        from sqlalchemy import text

        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        return
    if engine.dialect.name == "sqlite":
        if engine.url.database in (None, "", ":memory:"):  # one process's memory: no other worker can share it
            yield
            return
        import fcntl

        with open(f"{engine.url.database}.lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes, also if the worker dies
            yield
        return
    raise ConfigError(f"--storage {engine.url.drivername}://...: a sweep shares its study through PostgreSQL or a "
                      "SQLite file only (it locks the study to run exactly --trials); use postgresql://... or "
                      "sqlite:///PATH.")


def _import_optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise ImportError("textlora sweep needs optuna: pip install 'textlora[sweep]' (or pip install optuna).") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _open_study(optuna: Any, url: str, name: str, prune: bool, direction: str = "maximize",
                attempts: int = 5) -> tuple[Any, Any]:
    """Create or load the study; returns it and its `RDBStorage`. Workers starting together race to create the tables and the study,
    and SQLite answers the loser with an error, so try again after a pause. A shared database gets a heartbeat
    per running trial, so a killed worker's trial can be told apart from a live one (`STALE_AFTER_S`)."""
    url = database_url(url)
    sqlite = url.startswith("sqlite")
    kwargs = {"connect_args": {"timeout": 120}} if sqlite else {"pool_pre_ping": True}
    beat = {} if sqlite else {"heartbeat_interval": HEARTBEAT_S, "grace_period": STALE_AFTER_S}
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0) if prune else optuna.pruners.NopPruner()
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():  # the heartbeat is experimental in optuna
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = optuna.storages.RDBStorage(url, engine_kwargs=kwargs, **beat)
            return optuna.create_study(study_name=name, storage=storage, direction=direction, pruner=pruner,
                                       load_if_exists=True), storage
        except Exception:  # sqlalchemy's OperationalError/IntegrityError, wrapped differently by versions
            if attempt == attempts - 1:
                raise
            time.sleep(1.0 + attempt)
    raise AssertionError("unreachable")


def _objective(optuna: Any, cfg: Any, space: dict[str, Param], metric: str, out: Path, prune: bool,
               progress: bool) -> Any:
    from textlora.train import train

    def objective(trial: Any) -> float:
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        params = {k: p.suggest(trial, k) for k, p in space.items()}
        run_cfg = cfg.with_overrides({**params, "out": str(out / "trials" / f"{trial.number:03d}")})
        started = time.time()

        validations = itertools.count(1)

        def on_epoch(epoch: float, val: dict[str, Any]) -> None:  # after each validation (a fraction: mid-epoch)
            trial.report(val[metric], next(validations))
            if prune and epoch < run_cfg.train.epochs and trial.should_prune():
                if progress:
                    print(f"trial {trial.number}: pruned after epoch {epoch} (validation {metric} {val[metric]:.4f})")
                raise optuna.TrialPruned(f"validation {metric} {val[metric]:.4f} at epoch {epoch}")

        result = train(run_cfg, overwrite=True, progress=False, on_epoch=on_epoch)
        value = float(result.metrics["validation"][metric])
        trial.set_user_attr("test_accuracy", result.metrics["test"]["accuracy"])
        trial.set_user_attr("seconds", time.time() - started)
        trial.set_user_attr("run", str(result.out))
        if progress:
            shown = "  ".join(f"{k}={_short(v)}" for k, v in params.items())
            print(f"trial {trial.number}: validation {metric} {value:.4f}  {shown}  ({time.time() - started:.0f}s)")
        return value

    return objective


def _short(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def write_results(study: Any, cfg: Any, space: dict[str, Param], metric: str, out: Path) -> SweepResult:
    """`results.md`, `results.html`, `sweep.png` and `best.yaml` from every trial in `study`."""
    import optuna

    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    keys = list(dict.fromkeys(k for t in trials for k in t.params)) or list(space)
    headers = ["trial", "state", f"val {metric}", "test acc", *keys, "epochs", "seconds"]
    rows = [[t.number, t.state.name.lower(), _trial_value(t), t.user_attrs.get("test_accuracy"),
             *[_cell(t.params.get(k)) for k in keys], len(t.intermediate_values),
             _round(t.user_attrs.get("seconds") or _duration(t))] for t in trials]
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise ConfigError(f"no trial of study {study.study_name!r} finished (all pruned or failed); "
                          "run more trials or pass --no-prune.")
    from textlora.config import METRIC_DIRECTION

    best = max(complete, key=lambda t: METRIC_DIRECTION.get(metric, 1) * t.value)  # loss: the lowest
    best_cfg = cfg.with_overrides({**best.params, "out": str(out / "best")})
    best_cfg.to_yaml(out / "best.yaml")
    table = markdown_table(headers, rows)
    plot = plot_sweep(trials, metric, out / "sweep.png")
    write_text(out / "results.md", f"{table}\n\nbest: trial {best.number}, validation {metric} {best.value:.4f}\n")
    uri = "data:image/png;base64," + base64.b64encode(plot.read_bytes()).decode("ascii")
    page = html_page(f"textlora sweep: {study.study_name}", [
        ("Trials", html_table(headers, rows, table_id="trials")),
        ("Best", f"<p>trial {best.number}: validation {metric} {best.value:.4f}</p><pre>"
                 f"{yaml.safe_dump(best.params, sort_keys=False)}</pre>"),
        ("Plot", img(uri, "sweep results", "sweep-plot"))])
    write_text(out / "results.html", page)
    return SweepResult(out, best.value, dict(best.params), out / "best.yaml", table)


def _trial_value(t: Any) -> float | None:
    if t.value is not None:
        return t.value
    return t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None


def _cell(v: Any) -> Any:
    return f"{v:.3g}" if isinstance(v, float) else v


def _round(v: float | None) -> str | None:
    return None if v is None else f"{v:.0f}"


def _duration(t: Any) -> float | None:
    return (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else None


def plot_sweep(trials: list[Any], metric: str, path: Path) -> Path:
    """Left: the metric of each trial (pruned ones at their last report) and the best so far.
    Right: the metric against the learning rate."""
    from textlora.config import METRIC_DIRECTION

    sign = METRIC_DIRECTION.get(metric, 1)  # loss: the best so far is the lowest
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    best, best_line = -math.inf, []
    for t in trials:
        v = _trial_value(t)
        if v is None:
            continue
        done = t.state.name == "COMPLETE"
        a.scatter(t.number, v, marker="o" if done else "x", color="C0" if done else "C3")
        if "train.lr" in t.params:
            b.scatter(t.params["train.lr"], v, marker="o" if done else "x", color="C0" if done else "C3")
        if done:
            best = max(best, sign * v)
        best_line.append((t.number, sign * best if best > -math.inf else None))
    pts = [(n, v) for n, v in best_line if v is not None]
    if pts:
        a.step(*zip(*pts), where="post", color="C2", label="best so far")
        a.legend()
    a.set_xlabel("trial")
    a.set_ylabel(f"validation {metric}")
    a.set_title("trials (x: pruned)")
    b.set_xscale("log")
    b.xaxis.set_minor_formatter(plt.NullFormatter())  # minor labels of a narrow log range overlap
    b.set_xlabel("train.lr")
    b.set_ylabel(f"validation {metric}")
    b.set_title("metric vs learning rate")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
