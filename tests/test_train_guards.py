"""Training never finishes a broken run (issue 19): a non-finite loss stops it, select_metric=loss keeps the
lowest-loss epoch."""

import json

import numpy as np
import pytest
import torch
from conftest import tiny_config

from textlora import cli
from textlora import train as train_module
from textlora.checkpoint import checkpoint_dir
from textlora.errors import TextloraError
from textlora.train import train


def _nan_from_step(step, monkeypatch):
    """Make the single-label loss NaN from the `step`-th call on (the steps before train normally)."""
    calls = []

    def loss(logits, y):
        calls.append(1)
        value = torch.nn.functional.cross_entropy(logits, y)
        return value * float("nan") if len(calls) >= step else value

    monkeypatch.setitem(train_module._LOSSES, False, loss)


def test_a_non_finite_loss_stops_training_and_writes_no_run(tiny_models, tiny_data, tmp_path, monkeypatch):
    _nan_from_step(3, monkeypatch)
    out = tmp_path / "run"
    cfg = tiny_config(tiny_data, tiny_models["bert"], out, epochs=1, eval_base=False, checkpoint_every=1)
    with pytest.raises(TextloraError) as e:
        train(cfg, progress=False)
    message = str(e.value)
    assert type(e.value).__name__ == "TrainingError" and "\n" not in message
    assert message.startswith("training diverged: the loss is nan at step 3 (epoch 1), so no run was written; "
                              f"the checkpoints before it stay in {checkpoint_dir(out)}. Lower train.lr (it is 0.01)")
    assert not out.exists()
    kept = sorted(p.name for p in checkpoint_dir(out).glob("step-*.pt"))
    assert kept == ["step-000000001.pt", "step-000000002.pt"]  # the last good ones (keep_checkpoints=2), no NaN one


def test_the_cli_exits_2_with_one_line(tiny_models, tiny_data, tmp_path, monkeypatch, capsys):
    _nan_from_step(1, monkeypatch)
    out = tmp_path / "run"
    code = cli.main(["train", "--data", str(tiny_data), "--model", str(tiny_models["bert"]), "--out", str(out),
                     "--epochs", "1", "--quiet", "train.eval_base=false"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and not out.exists()
    assert err[-1].startswith("error: training diverged: the loss is nan at step 1 (epoch 1), so no run was written.")


def test_select_metric_loss_keeps_the_lowest_validation_loss(tiny_models, tiny_data, tmp_path):
    out = tmp_path / "run"
    cfg = tiny_config(tiny_data, tiny_models["bert"], out, epochs=3, eval_base=False, select_metric="loss", lr=3e-2)
    result = train(cfg, progress=False)
    losses = [h["val_loss"] for h in result.metrics["history"]]
    assert int(np.argmin(losses)) != int(np.argmax(losses))
    assert result.best_epoch == int(np.argmin(losses)) + 1
    assert result.metrics["validation"]["loss"] == pytest.approx(min(losses), rel=1e-4)
    assert json.loads((out / "metrics.json").read_text())["best_epoch"] == result.best_epoch
