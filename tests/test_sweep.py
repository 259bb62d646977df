"""`textlora sweep` on a tiny model: the sweep folder, resuming, pruning, ranges, and two workers on one study (SQLite,
and a real PostgreSQL: `TEXTLORA_TEST_POSTGRES`, else a throwaway cluster started by `.ci/postgres.sh`)."""

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
import yaml
from conftest import tiny_config

optuna = pytest.importorskip("optuna", reason="optuna is in the dev and sweep extras")

from textlora.config import RunConfig  # noqa: E402
from textlora.errors import ConfigError  # noqa: E402
from textlora.sweep import Param, build_space, database_url, load_space, parse_range, sweep  # noqa: E402

SMALL = {"train.lr": Param(1e-3, 3e-2, log=True), "lora.r": Param(2, 8, integer=True)}


def _study(folder, name="textlora"):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{folder / 'study.db'}")


def test_sweep_writes_its_folder_and_resumes(tiny_models, tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, tiny_models["bert"], tmp_path / "base", epochs=1)
    out = tmp_path / "sw"
    result = sweep(cfg, 2, out, SMALL, seed=3, progress=False)
    assert {"study.db", "trials", "results.md", "results.html", "sweep.png", "best.yaml"} <= {p.name for p in out.iterdir()}
    assert sorted(p.name for p in (out / "trials").iterdir()) == ["000", "001"]
    best = RunConfig.from_yaml(out / "best.yaml")
    assert best.train.lr == result.best_params["train.lr"] and best.lora.r == result.best_params["lora.r"]
    assert best.out == str(out / "best") and best.data == cfg.data
    assert result.table.count("\n") == 3 and "val accuracy" in result.table

    again = sweep(cfg, 3, out, SMALL, seed=3, progress=False)  # resumes the same study: one trial is missing
    trials = _study(out).trials
    assert [t.number for t in trials] == [0, 1, 2] and again.table.count("\n") == 4
    assert trials[2].params != trials[0].params  # the resumed sampler does not replay trial 0
    sweep(cfg, 3, out, SMALL, seed=3, progress=False)  # the study is complete: nothing more runs
    assert len(_study(out).trials) == 3


def test_bad_trials_are_pruned(tiny_models, tiny_data, tmp_path):
    """Two strong finished trials are in the study; a tiny model far below their median at epoch 1 is pruned."""
    out = tmp_path / "sw"
    out.mkdir()
    study = optuna.create_study(study_name="textlora", storage=f"sqlite:///{out / 'study.db'}", direction="maximize")
    dists = {"train.lr": optuna.distributions.FloatDistribution(1e-3, 3e-2, log=True),
             "lora.r": optuna.distributions.IntDistribution(2, 8)}
    for lr in (0.01, 0.02):
        study.add_trial(optuna.trial.create_trial(params={"train.lr": lr, "lora.r": 4}, distributions=dists,
                                                  value=0.99, intermediate_values={1: 0.99, 2: 0.99}))
    cfg = tiny_config(tiny_data, tiny_models["bert"], tmp_path / "base", epochs=3)
    sweep(cfg, 3, out, SMALL, progress=False)  # the study holds 2: one more trial
    last = _study(out).trials[-1]
    assert last.state == optuna.trial.TrialState.PRUNED and list(last.intermediate_values) == [1]
    assert not (out / "trials" / "002").exists()  # a pruned trial writes nothing
    assert len(_study(out).trials) == 3  # and counts toward --trials: no trial replaces it
    assert "pruned" in (out / "results.md").read_text()


def test_search_space_parsing_and_errors(tmp_path):
    cfg = RunConfig()
    assert set(build_space(cfg)) == {"train.lr", "train.weight_decay", "lora.r", "lora.alpha", "lora.dropout"}
    assert set(build_space(cfg.with_overrides({"model.method": "full"}))) == {"train.lr", "train.weight_decay"}
    key, p = parse_range("train.lr=1e-5:1e-3:log")
    assert key == "train.lr" and (p.low, p.high, p.log, p.integer) == (1e-5, 1e-3, True, False)
    assert parse_range("lora.dropout=off") == ("lora.dropout", None)
    assert "lora.dropout" not in build_space(cfg, {"lora.dropout": None})
    (tmp_path / "s.yaml").write_text("lora.r: {low: 4, high: 64, log: true, int: true}\nlora.alpha: null\n")
    space = build_space(cfg, load_space(tmp_path / "s.yaml"))
    assert space["lora.r"] == Param(4, 64, True, True) and "lora.alpha" not in space
    with pytest.raises(ConfigError, match="unknown config key 'train.lrr'"):
        build_space(cfg, {"train.lrr": Param(1, 2)})
    with pytest.raises(ConfigError, match="low < high"):
        parse_range("train.lr=1e-3:1e-5")
    with pytest.raises(ConfigError, match="key=low:high"):
        parse_range("train.lr")


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def postgres_url():
    """A real PostgreSQL: `TEXTLORA_TEST_POSTGRES` (CI starts one with .ci/postgres.sh), else a throwaway cluster
    started here by the same script when PostgreSQL's binaries exist, else a skip that says why."""
    pytest.importorskip("psycopg2", reason="the PostgreSQL driver psycopg2 is in the sweep extra")
    if os.environ.get("TEXTLORA_TEST_POSTGRES"):
        yield os.environ["TEXTLORA_TEST_POSTGRES"]
        return
    if not (shutil.which("initdb") or glob.glob("/usr/lib/postgresql/*/bin/initdb")):
        pytest.skip("no PostgreSQL: set TEXTLORA_TEST_POSTGRES=postgresql://... or install Debian's postgresql "
                    "(.ci/postgres.sh does both)")
    folder = tempfile.mkdtemp(prefix="textlora-pg-")  # under /tmp: the `postgres` user must reach it when we are root
    script = REPO / ".ci" / "postgres.sh"
    started = subprocess.run([str(script), "start", folder], capture_output=True, text=True, timeout=300,
                             env={**os.environ, "TEXTLORA_PG_NO_INSTALL": "1"})
    assert started.returncode == 0, started.stderr[-2000:]
    yield started.stdout.strip().splitlines()[-1]
    subprocess.run([str(script), "stop", folder], capture_output=True, timeout=120)
    shutil.rmtree(folder, ignore_errors=True)


def _two_workers(cfg, tmp_path, storage, study, trials):
    """Two `textlora sweep` processes on one study with `--trials trials`; returns the study when both are done."""
    cfg.to_yaml(tmp_path / "run.yaml")
    cmd = [sys.executable, "-m", "textlora.cli", "sweep", "--config", str(tmp_path / "run.yaml"), "--trials",
           str(trials), "--storage", storage, "--study-name", study, "--out", str(tmp_path / "sw"), "--quiet",
           "--range", "lora.alpha=off", "--range", "lora.dropout=off", "--range", "train.weight_decay=off"]
    workers = [subprocess.Popen([*cmd, "--seed", str(seed)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for seed in (1, 2)]
    outs = [w.communicate(timeout=600) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], [e[-2000:] for _, e in outs]
    return optuna.load_study(study_name=study, storage=database_url(storage))


def _check_exactly(study, trials, sweep_folder):
    """`trials` finished trials, none running or failed, each number once with its own finished run folder."""
    states = [t.state for t in study.trials]
    assert len(states) == trials, states
    assert all(s in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for s in states), states
    numbers = sorted(t.number for t in study.trials)
    assert numbers == list(range(trials))
    runs = [t.user_attrs["run"] for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(set(runs)) == len(runs)
    assert sorted(Path(r).name for r in runs) == [f"{t.number:03d}" for t in sorted(study.trials, key=lambda t: t.number)
                                                  if t.state == optuna.trial.TrialState.COMPLETE]
    assert all((Path(r) / "manifest.json").is_file() for r in runs)
    assert sorted(p.name for p in (sweep_folder / "trials").iterdir() if not p.name.startswith(".")) == \
        sorted(Path(r).name for r in runs)


def test_two_workers_share_one_study(tiny_models, tiny_data, tmp_path):
    """SQLite: two workers, `--trials 3` for the study (not per worker): exactly 3 trials, none twice."""
    cfg = tiny_config(tiny_data, tiny_models["bert"], tmp_path / "base", epochs=1)
    (tmp_path / "shared").mkdir()
    study = _two_workers(cfg, tmp_path, f"sqlite:///{tmp_path / 'shared' / 'study.db'}", "x", 3)
    _check_exactly(study, 3, tmp_path / "sw")
    assert yaml.safe_load((tmp_path / "sw" / "best.yaml").read_text())["lora"]["alpha"] == 8.0


def test_two_workers_on_postgresql_run_exactly_n_trials(postgres_url, tiny_models, tiny_data, tmp_path):
    """A real PostgreSQL: two workers on one fresh study with `--trials 4`: 4 finished trials in all, every trial
    number once with its own run folder, none left running or failed; a rerun with `--trials 5` adds one."""
    cfg = tiny_config(tiny_data, tiny_models["bert"], tmp_path / "base", epochs=1)
    name = f"test-{uuid.uuid4().hex[:12]}"  # the database outlives the test
    study = _two_workers(cfg, tmp_path, postgres_url, name, 4)
    _check_exactly(study, 4, tmp_path / "sw")
    again = sweep(cfg, 5, tmp_path / "sw", {"train.lr": Param(1e-3, 3e-2, log=True)}, postgres_url, name,
                  progress=False)
    _check_exactly(optuna.load_study(study_name=name, storage=database_url(postgres_url)), 5, tmp_path / "sw")
    assert again.table.count("\n") == 6


def test_a_killed_workers_trial_is_failed_and_replaced_on_postgresql(postgres_url, tiny_models, tiny_data, tmp_path,
                                                                     monkeypatch):
    """A worker killed mid-trial leaves a RUNNING trial whose heartbeat stops: once it is older than
    `STALE_AFTER_S` the next worker marks it FAIL and runs a replacement, so the study still ends with
    `--trials` finished trials (here 2, numbers 1 and 2, beside the dead one, 0)."""
    import time

    from textlora import sweep as sweep_module

    monkeypatch.setattr(sweep_module, "STALE_AFTER_S", 2)
    monkeypatch.setattr(sweep_module, "HEARTBEAT_S", 1)
    cfg = tiny_config(tiny_data, tiny_models["bert"], tmp_path / "base", epochs=1)
    name = f"test-{uuid.uuid4().hex[:12]}"
    study, storage = sweep_module._open_study(optuna, postgres_url, name, prune=True)
    dead = study.ask()  # the killed worker's trial: it beat once, then nothing
    storage.record_heartbeat(dead._trial_id)
    assert storage.get_trial(dead._trial_id).state == optuna.trial.TrialState.RUNNING
    time.sleep(3)
    sweep(cfg, 2, tmp_path / "sw", {"train.lr": Param(1e-3, 3e-2, log=True)}, postgres_url, name, progress=False)
    trials = {t.number: t.state for t in optuna.load_study(study_name=name, storage=database_url(postgres_url)).trials}
    assert trials[0] == optuna.trial.TrialState.FAIL, trials
    finished = {n for n, s in trials.items() if s in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)}
    assert finished == {1, 2}, trials
    assert sorted(p.name for p in (tmp_path / "sw" / "trials").iterdir() if not p.name.startswith(".")) == ["001", "002"]


def test_a_loss_sweep_minimises(tiny_models, tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, tiny_models["bert"], tmp_path / "base", epochs=1)
    result = sweep(cfg, 2, tmp_path / "sw", SMALL, seed=3, metric="loss", prune=False, progress=False)
    study = _study(tmp_path / "sw")
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    assert result.best_value == min(t.value for t in study.trials)


def test_database_urls_and_the_databases_a_study_can_be_locked_in(tmp_path):
    import importlib.util
    from types import SimpleNamespace

    from textlora.sweep import _study_lock

    bare = "postgresql://textlora@127.0.0.1:5432/textlora"
    psycopg3 = importlib.util.find_spec("psycopg") is not None
    assert database_url(bare) == (bare if psycopg3 else "postgresql+psycopg2://textlora@127.0.0.1:5432/textlora")
    for url in ("postgresql+psycopg2://u@h/db", f"sqlite:///{tmp_path}/s.db", "sqlite://"):
        assert database_url(url) == url
    mysql = SimpleNamespace(dialect=SimpleNamespace(name="mysql"), url=SimpleNamespace(drivername="mysql+pymysql"))
    with pytest.raises(ConfigError, match=r"--storage mysql\+pymysql://...: a sweep shares its study through "
                                          "PostgreSQL or a SQLite file only"), _study_lock(mysql, "x"):
        pass
