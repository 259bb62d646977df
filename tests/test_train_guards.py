"""Training never finishes a broken run (issue 19): a non-finite loss stops it, select_metric=loss keeps the
lowest-loss epoch."""

import json

import numpy as np
import pytest
import torch
from conftest import make_rows, tiny_config, write_jsonl

from textlora import cli
from textlora.checkpoint import checkpoint_dir
from textlora.errors import ConfigError, TextloraError
from textlora.heads import SingleLabel
from textlora.losses import Loss
from textlora.train import train


def _nan_from_step(step, monkeypatch):
    """Make the single-label loss NaN from the `step`-th call on (the steps before train normally)."""
    calls = []

    def loss(logits, y, gamma, weight):
        calls.append(1)
        value = torch.nn.functional.cross_entropy(logits, y)
        return value * float("nan") if len(calls) >= step else value

    monkeypatch.setattr(SingleLabel, "loss_fn", lambda self, tc, targets: Loss(loss, self.labels))


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
                     "--epochs", "1", "--quiet", "train.eval_base=false", "model.max_length=32"])
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


def test_max_length_over_the_models_positions_is_a_config_error(tiny_models, tmp_path):
    """The tiny BERT embeds 64 positions: a 150-token text at max_length 100 crashed the forward pass."""
    rows = make_rows(30)
    rows[0]["text"] = " ".join(["good"] * 150)
    data = write_jsonl(tmp_path / "data" / "train.jsonl", rows).parent
    cfg = tiny_config(data, tiny_models["bert"], tmp_path / "run", epochs=1).with_overrides({"model.max_length": 100})
    with pytest.raises(ConfigError, match=r"^model.max_length \(--max-length\) is 100, but .*bert has 64 positions; "
                                          r"pass --max-length 64 or less\.$"):
        train(cfg, progress=False)
    assert not (tmp_path / "run").exists()
    train(cfg.with_overrides({"model.max_length": 64}), progress=False)  # the limit itself is fine
