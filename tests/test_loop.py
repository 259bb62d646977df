"""The loop's stopping rules and gradient accumulation: patience, eval_every, max_minutes and grad_accum, each
resumed exactly from a checkpoint (bit for bit against an uninterrupted run)."""

import json
import subprocess
import sys

import pytest
import torch
from conftest import tiny_config, write_jsonl
from test_multilabel import multilabel_rows

from textlora.checkpoint import checkpoint_dir
from textlora.config import RunConfig
from textlora.errors import ConfigError
from textlora.train import train

TIMING = ("seconds", "train_examples_per_s")


def _history(metrics: dict) -> list[dict]:
    """The history without its wall-clock fields."""
    return [{k: v for k, v in h.items() if k not in TIMING} for h in metrics["history"]]


def _same_run(a: dict, b: dict) -> None:
    """Bit-for-bit the same trajectory and result: every validation record and the final metrics."""
    assert _history(a) == _history(b)
    for key in ("best_epoch", "best_step", "stopped_early"):
        assert a.get(key) == b.get(key), key
    for split in ("validation", "test"):
        assert {k: a[split][k] for k in ("accuracy", "f1_macro", "loss")} == \
               {k: b[split][k] for k in ("accuracy", "f1_macro", "loss")}, split


class _Interrupt(Exception):
    """Stands in for a kill: raised from `on_epoch`, it ends training with the checkpoints on disk and no run."""


def _interrupt_at(n: int):
    """An `on_epoch` hook that interrupts training at its `n`-th validation, before that step's checkpoint."""
    seen = []

    def hook(epoch, val):
        seen.append(epoch)
        if len(seen) == n:
            raise _Interrupt(epoch)
    return hook


def test_grad_accum_4_micro_batches_of_8_match_batch_32(tiny_models, tiny_data, tmp_path):
    """batch_size is the batch of an optimizer step; grad_accum=4 runs it as micro-batches of 8 (the last batch of
    26 rows as 7+7+7+5, weighted by rows): the same steps, schedule and metrics as one batch of 32."""
    whole = train(tiny_config(tiny_data, tiny_models["bert"], tmp_path / "b32", epochs=3, batch_size=32),
                  progress=False).metrics
    micro = train(tiny_config(tiny_data, tiny_models["bert"], tmp_path / "b8x4", epochs=3, batch_size=32,
                              grad_accum=4), progress=False).metrics
    log = {name: [json.loads(line) for line in (tmp_path / name / "loss_log.jsonl").read_text().splitlines()]
           for name in ("b32", "b8x4")}
    assert [r["step"] for r in log["b8x4"]] == [r["step"] for r in log["b32"]] == list(range(1, 10))  # 3 a epoch
    assert [r["lr"] for r in log["b8x4"]] == [r["lr"] for r in log["b32"]]
    assert [r["loss"] for r in log["b8x4"]] == pytest.approx([r["loss"] for r in log["b32"]], rel=1e-5, abs=1e-6)
    for split in ("validation", "test"):
        for k in ("accuracy", "f1_macro"):
            assert micro[split][k] == whole[split][k]
        assert micro[split]["loss"] == pytest.approx(whole[split]["loss"], rel=1e-5)
    # the tolerance tells trajectories apart: batches of 8 stepped one by one (12 steps an epoch) end elsewhere
    eight = train(tiny_config(tiny_data, tiny_models["bert"], tmp_path / "b8", epochs=3, batch_size=8),
                  progress=False).metrics
    assert eight["validation"]["loss"] != pytest.approx(whole["validation"]["loss"], rel=1e-5)


@pytest.mark.parametrize("loss", ["ce", "focal"])
def test_grad_accum_with_class_weights_matches_the_whole_batch(tiny_models, tiny_data, tmp_path, loss):
    """A class-weighted loss divides by the rows' total weight, not their count: micro-batches are weighted by
    their share of that weight (`Loss.norm`), so 4 x 8 still gives batch 32's gradient."""
    weights = {"pos": 5.0, "neg": 1.0, "neu": 0.25}
    runs = {name: train(tiny_config(tiny_data, tiny_models["bert"], tmp_path / name, epochs=2, batch_size=32,
                                    class_weights=weights, loss=loss, **kw), progress=False).metrics
            for name, kw in (("whole", {}), ("micro", {"grad_accum": 4}))}
    steps = {name: [json.loads(line)["loss"] for line in (tmp_path / name / "loss_log.jsonl").read_text().splitlines()]
             for name in runs}
    assert steps["micro"] == pytest.approx(steps["whole"], rel=1e-5, abs=1e-6)
    assert runs["micro"]["validation"]["loss"] == pytest.approx(runs["whole"]["validation"]["loss"], rel=1e-5)


def test_grad_accum_multilabel_matches(tiny_models, tmp_path):
    """Multi-label: the loss is a mean over rows and labels; micro-batches weighted by rows still give the
    whole batch's gradient."""
    for split, (n, seed) in {"train": (60, 1), "validation": (20, 2), "test": (20, 3)}.items():
        write_jsonl(tmp_path / "data" / f"{split}.jsonl", multilabel_rows(n, seed))

    def run(name, **kw):
        cfg = tiny_config(tmp_path / "data", tiny_models["bert"], tmp_path / name, epochs=2, batch_size=16, **kw)
        return train(cfg.with_overrides({"data.label_column": "labels"}), progress=False).metrics

    whole, micro = run("whole"), run("micro", grad_accum=3)  # 16 rows as 6+6+4; the last batch of 12 as 4+4+4
    assert [h["train_loss"] for h in micro["history"]] == pytest.approx([h["train_loss"] for h in whole["history"]],
                                                                        rel=1e-5)
    assert micro["validation"]["loss"] == pytest.approx(whole["validation"]["loss"], rel=1e-5)
    assert micro["test"]["f1_macro"] == pytest.approx(whole["test"]["f1_macro"], abs=1e-9)


def test_eval_every_records_each_validation_with_its_step_and_epoch(tiny_models, tiny_data, tmp_path):
    """90 rows in batches of 8: 12 steps an epoch; validations every 5 steps and at each epoch end."""
    result = train(tiny_config(tiny_data, tiny_models["bert"], tmp_path / "run", epochs=2, eval_every=5),
                   progress=False)
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [h["step"] for h in m["history"]] == [5, 10, 12, 15, 20, 24]
    assert [h["epoch"] for h in m["history"]] == [0.4167, 0.8333, 1, 1.25, 1.6667, 2]
    best = max(m["history"], key=lambda h: h["val_accuracy"])  # the first of the best: a tie is no improvement
    assert (m["best_step"], m["best_epoch"]) == (best["step"], -(-best["epoch"] // 1))
    assert m["validation"]["accuracy"] == best["val_accuracy"]  # the run keeps the best validation's weights
    assert "stopped_early" not in m and result.best_epoch == m["best_epoch"]
    log = [json.loads(line) for line in (tmp_path / "run" / "loss_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 25)) and [r["epoch"] for r in log] == [1] * 12 + [2] * 12


def _scripted_fit(tiny_models, tiny_data, tmp_path, scores, **train_kw):
    """`fit` on the tiny BERT with the validation replaced by `scores` (one accuracy per validation)."""
    from textlora.data.splits import load_dataset
    from textlora.distributed import Dist
    from textlora.loop import fit
    from textlora.model.adapters import build_model, trainable_state
    from textlora.model.load import load_base
    from textlora.train import _loop, _prepare, _targets

    cfg = tiny_config(tiny_data, tiny_models["bert"], tmp_path / "run", **train_kw)
    data = load_dataset(cfg.data)
    base = load_base(cfg.model.name, data.label_map)
    prep = _prepare(data, base.tokenizer, cfg)
    model = build_model(base.model, "lora", cfg.lora, base.new_modules)
    loop = _loop(model, prep, cfg, Dist(), None, "fp32", None, prep.kind.loss_fn(cfg.train, _targets(prep, "train")))
    weights, remaining = {}, list(scores)

    def validate():
        weights[loop.state.step] = {k: v.clone() for k, v in trainable_state(model).items()}
        return {"accuracy": remaining.pop(0), "f1_macro": 0.0, "loss": 1.0}
    loop.validate = validate
    return fit(loop, cfg.train, progress=False), model, weights


def test_patience_stops_after_n_validations_without_improvement_and_keeps_the_best(tiny_models, tiny_data,
                                                                                    tmp_path):
    from textlora.model.adapters import trainable_state

    fitted, model, weights = _scripted_fit(tiny_models, tiny_data, tmp_path, [0.5, 0.6, 0.6, 0.55, 0.9, 0.9],
                                           epochs=3, eval_every=4, patience=2)
    # validations at steps 4, 8, 12 (epoch end), 16: 0.6 at step 8 is the best; a tie and a drop spend the patience
    assert [h["step"] for h in fitted.history] == [4, 8, 12, 16]
    assert fitted.stopped_early == {"reason": "patience", "at_epoch": 1.3333, "at_step": 16}
    assert (fitted.best_epoch, fitted.best_step) == (1, 8)
    kept = trainable_state(model)
    assert all(torch.equal(kept[k], weights[8][k]) for k in kept)  # the best validation's weights, not step 16's
    assert not all(torch.equal(weights[16][k], weights[8][k]) for k in kept)


def test_patience_is_not_spent_by_an_improving_run(tiny_models, tiny_data, tmp_path):
    fitted, _, _ = _scripted_fit(tiny_models, tiny_data, tmp_path, [0.5, 0.4, 0.6, 0.5, 0.7, 0.6], epochs=2,
                                 eval_every=5, patience=2)
    assert fitted.stopped_early is None and [h["step"] for h in fitted.history] == [5, 10, 12, 15, 20, 24]
    assert (fitted.best_epoch, fitted.best_step) == (2, 20)


def _resume_cfg(data, model, out, epochs=4, **train_kw):
    cfg = tiny_config(data, model, out, epochs=epochs, checkpoint_every=5, num_threads=1, **train_kw)
    return cfg.with_overrides({"model.dropout": 0.1, "lora.dropout": 0.1})  # dropout: the RNG state must resume too


@pytest.mark.parametrize("train_kw, interrupt", [
    # stops at step 20 by patience; interrupted at the validation of step 12: resumes from step 10
    ({"eval_every": 5, "patience": 2, "lr": 1e-1, "select_metric": "loss"}, 3),
    ({"grad_accum": 3, "eval_every": 4}, 3),  # at the validation of step 12: resumes from step 10
], ids=["patience+eval_every", "grad_accum+eval_every"])
def test_interrupted_then_resumed_matches_uninterrupted(tiny_models, tiny_data, tmp_path, train_kw, interrupt):
    """Checkpoints every 5 steps, validations every 4 or 5: the resumed run restores the history, the best weights
    and score and the validations since the best from a checkpoint written after a mid-epoch validation."""
    reference = train(_resume_cfg(tiny_data, tiny_models["bert"], tmp_path / "ref", **train_kw), progress=False)
    cfg = _resume_cfg(tiny_data, tiny_models["bert"], tmp_path / "run", **train_kw)
    with pytest.raises(_Interrupt):
        train(cfg, progress=False, on_epoch=_interrupt_at(interrupt))
    assert sorted(p.name for p in checkpoint_dir(cfg.out).glob("step-*.pt")) == ["step-000000005.pt",
                                                                                 "step-000000010.pt"]
    resumed = train(cfg, progress=False, resume="must")
    _same_run(resumed.metrics, reference.metrics)
    if "patience" in train_kw:
        assert reference.metrics["stopped_early"]["reason"] == "patience"  # the resumed run stops at the same step
        assert reference.metrics["stopped_early"]["at_step"] > 12


def test_max_minutes_stops_at_a_step_boundary_and_a_rerun_continues_exactly(tiny_models, tiny_data, tmp_path):
    """A budget spent after the first step: the run is written (validated at step 1, stopped_early recorded), its
    checkpoint kept; each rerun with --overwrite continues one budget more; one without a budget finishes the run
    exactly as if it had never stopped (the budget's extra validations are not part of the trajectory)."""
    reference = train(_resume_cfg(tiny_data, tiny_models["bert"], tmp_path / "ref", eval_every=5, epochs=2),
                      progress=False)
    out = tmp_path / "run"
    cfg = _resume_cfg(tiny_data, tiny_models["bert"], out, eval_every=5, epochs=2)
    budget = cfg.with_overrides({"train.max_minutes": 1e-6})
    first = train(budget, progress=False).metrics
    assert first["stopped_early"] == {"reason": "max_minutes", "at_epoch": 0.0833, "at_step": 1}
    assert [h["step"] for h in first["history"]] == [1] and first["best_step"] == 1
    assert json.loads((out / "metrics.json").read_text())["stopped_early"]["at_step"] == 1
    assert sorted(p.name for p in checkpoint_dir(out).glob("step-*.pt")) == ["step-000000001.pt"]
    second = train(budget, overwrite=True, progress=False).metrics
    assert second["stopped_early"]["at_step"] == 2 and [h["step"] for h in second["history"]] == [2]
    final = train(cfg, overwrite=True, progress=False, resume="must").metrics
    _same_run(final, reference.metrics)
    assert not checkpoint_dir(out).exists()


def test_cli_prints_where_patience_stopped(tiny_models, tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, tiny_models["bert"], tmp_path / "run", epochs=6, lr=5e-2)
    cfg.to_yaml(tmp_path / "run.yaml")
    r = subprocess.run([sys.executable, "-m", "textlora.cli", "train", "--config", str(tmp_path / "run.yaml"),
                        "--quiet", "--patience", "1", "--eval-every", "3"], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    stop = m["stopped_early"]
    assert stop["reason"] == "patience" and stop["at_step"] == m["history"][-1]["step"] < 72
    assert f"stopped early at epoch {stop['at_epoch']} (step {stop['at_step']}): no better validation in 1 in a " \
           "row" in r.stdout
    assert RunConfig.from_yaml(tmp_path / "run" / "config.yaml").train.patience == 1


def test_new_train_keys_are_validated_and_round_trip(tmp_path):
    with pytest.raises(ConfigError, match=r"train.grad_accum must be an integer in \[1, .*got 0; "
                                          r"train.patience must be an integer in \[1, .*got 0; "
                                          r"train.max_minutes must be a finite number > 0 or null, got -1"):
        RunConfig.from_dict({"train": {"grad_accum": 0, "patience": 0, "max_minutes": -1}})
    cfg = RunConfig.from_dict({"train": {"grad_accum": 4, "eval_every": 100, "patience": 3, "max_minutes": 90.5}})
    cfg.to_yaml(tmp_path / "c.yaml")
    assert RunConfig.from_yaml(tmp_path / "c.yaml") == cfg


def test_stopping_rules_are_not_part_of_a_checkpoints_identity():
    from textlora.checkpoint import fingerprint

    base = RunConfig().to_dict()
    same = RunConfig.from_dict({"train": {"patience": 3, "max_minutes": 5}}).to_dict()
    assert fingerprint(base, {}) == fingerprint(same, {})
    for changed in ({"grad_accum": 2}, {"eval_every": 10}):  # they change the trajectory: a fresh start
        assert fingerprint(RunConfig.from_dict({"train": changed}).to_dict(), {}) != fingerprint(base, {})
