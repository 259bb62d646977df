"""`textlora sweep` on a tiny model: the sweep folder, resuming, pruning, ranges, and two workers on one storage."""

import subprocess
import sys

import pytest
import yaml
from conftest import tiny_config

optuna = pytest.importorskip("optuna", reason="optuna is in the dev and sweep extras")

from textlora.config import RunConfig  # noqa: E402
from textlora.errors import ConfigError  # noqa: E402
from textlora.sweep import Param, build_space, load_space, parse_range, sweep  # noqa: E402

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

    again = sweep(cfg, 1, out, SMALL, seed=3, progress=False)  # resumes the same study
    trials = _study(out).trials
    assert [t.number for t in trials] == [0, 1, 2] and again.table.count("\n") == 4
    assert trials[2].params != trials[0].params  # the resumed sampler does not replay trial 0


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
    sweep(cfg, 1, out, SMALL, progress=False)
    last = _study(out).trials[-1]
    assert last.state == optuna.trial.TrialState.PRUNED and list(last.intermediate_values) == [1]
    assert not (out / "trials" / "002").exists()  # a pruned trial writes nothing
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


def test_two_workers_share_one_study(tiny_models, tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, tiny_models["bert"], tmp_path / "base", epochs=1)
    cfg.to_yaml(tmp_path / "run.yaml")
    storage = f"sqlite:///{tmp_path / 'shared' / 'study.db'}"
    (tmp_path / "shared").mkdir()
    cmd = [sys.executable, "-m", "textlora.cli", "sweep", "--config", str(tmp_path / "run.yaml"), "--trials", "2",
           "--storage", storage, "--study-name", "x", "--out", str(tmp_path / "sw"), "--quiet",
           "--range", "lora.alpha=off", "--range", "lora.dropout=off", "--range", "train.weight_decay=off"]
    workers = [subprocess.Popen([*cmd, "--seed", str(seed)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for seed in (1, 2)]
    outs = [w.communicate(timeout=600) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], [e[-2000:] for _, e in outs]
    trials = optuna.load_study(study_name="x", storage=storage).trials
    assert len(trials) == 4 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    by_worker = {}
    for t in trials:
        by_worker.setdefault(t.user_attrs["worker"], []).append(t.number)
    assert sorted(len(v) for v in by_worker.values()) == [2, 2]
    assert sorted(p.name for p in (tmp_path / "sw" / "trials").iterdir()) == ["000", "001", "002", "003"]
    assert yaml.safe_load((tmp_path / "sw" / "best.yaml").read_text())["lora"]["alpha"] == 8.0


def test_a_loss_sweep_minimises(tiny_models, tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, tiny_models["bert"], tmp_path / "base", epochs=1)
    result = sweep(cfg, 2, tmp_path / "sw", SMALL, seed=3, metric="loss", prune=False, progress=False)
    study = _study(tmp_path / "sw")
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    assert result.best_value == min(t.value for t in study.trials)
