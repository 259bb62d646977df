"""Nothing lost: SIGKILL mid-epoch then resume gives the uninterrupted result; same seed, same metrics."""

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import tiny_config, write_splits

from textlora.checkpoint import checkpoint_dir, load_latest, save_checkpoint
from textlora.cli import main
from textlora.errors import ConfigError, TextloraError
from textlora.train import train

METRIC_KEYS = ("accuracy", "f1_macro", "loss")


@pytest.fixture(scope="module")
def long_data(tmp_path_factory):
    """Enough rows that an epoch is 100 steps of 4 on a tiny model."""
    return write_splits(tmp_path_factory.mktemp("long"), 400, 60, 60)


def _cfg(data, model, out, **train_kw):
    cfg = tiny_config(data, model, out, epochs=2, batch_size=4, checkpoint_every=10, num_threads=1, **train_kw)
    return cfg.with_overrides({"model.dropout": 0.1, "lora.dropout": 0.1})  # dropout: RNG state must resume too


def _train_cmd(cfg_path):
    return [sys.executable, "-m", "textlora.cli", "train", "--config", str(cfg_path), "--quiet"]


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tiny_models, long_data, tmp_path):
    reference = train(_cfg(long_data, tiny_models["bert"], tmp_path / "ref"), progress=False)

    out = tmp_path / "killed"
    cfg = _cfg(long_data, tiny_models["bert"], out)
    cfg.to_yaml(tmp_path / "run.yaml")
    proc = subprocess.Popen(_train_cmd(tmp_path / "run.yaml"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    folder = checkpoint_dir(out)
    killed_at = None
    try:
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None:
            ckpts = sorted(folder.glob("step-*.pt")) if folder.exists() else []
            step = int(ckpts[-1].stem.split("-")[1]) if ckpts else 0
            if step >= 20 and step % 100:  # mid-epoch: epochs end at steps 100 and 200
                proc.send_signal(signal.SIGKILL)
                killed_at = step
                break
            time.sleep(0.01)
    finally:
        if proc.poll() is None and killed_at is None:
            proc.kill()
        proc.wait(timeout=60)
    assert killed_at is not None, "training ended before it could be killed mid-epoch"
    assert proc.returncode == -signal.SIGKILL and not out.exists()

    resumed = subprocess.run(_train_cmd(tmp_path / "run.yaml")[:-1], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from the checkpoint at step" in resumed.stdout
    m = json.loads((out / "metrics.json").read_text())
    for split in ("validation", "test"):
        for k in METRIC_KEYS:
            assert m[split][k] == pytest.approx(reference.metrics[split][k], abs=1e-6), (split, k)
    assert [h["train_loss"] for h in m["history"]] == pytest.approx(
        [h["train_loss"] for h in reference.metrics["history"]], abs=1e-6)
    assert not folder.exists()  # checkpoints are removed once the run is committed


def test_same_seed_same_metrics(tiny_models, tiny_data, tmp_path):
    a = train(tiny_config(tiny_data, tiny_models["distilbert"], tmp_path / "a", epochs=2), progress=False)
    b = train(tiny_config(tiny_data, tiny_models["distilbert"], tmp_path / "b", epochs=2), progress=False)
    for split in ("validation", "test"):
        assert a.metrics[split] == b.metrics[split]
    assert [h["train_loss"] for h in a.metrics["history"]] == [h["train_loss"] for h in b.metrics["history"]]
    c = train(tiny_config(tiny_data, tiny_models["distilbert"], tmp_path / "c", epochs=2, seed=7), progress=False)
    assert [h["train_loss"] for h in c.metrics["history"]] != [h["train_loss"] for h in a.metrics["history"]]


def test_changed_config_does_not_resume(tiny_models, tiny_data, tmp_path):
    out = tmp_path / "run"
    cfg = tiny_config(tiny_data, tiny_models["bert"], out, epochs=1)
    save_checkpoint(checkpoint_dir(out), {"step": 3, "fingerprint": "other-config"})
    with pytest.raises(ConfigError, match="--resume: no checkpoint of this config and data"):
        train(cfg, progress=False, resume="must")
    train(cfg, progress=False)  # auto: discards the foreign checkpoint and starts fresh
    assert not checkpoint_dir(out).exists()


def test_torn_checkpoint_falls_back_to_the_previous(tmp_path):
    folder = tmp_path / "ck"
    save_checkpoint(folder, {"step": 1, "fingerprint": "f", "x": torch.ones(2)})
    save_checkpoint(folder, {"step": 2, "fingerprint": "f", "x": torch.zeros(2)})
    (folder / "step-000000002.pt").write_bytes(b"torn")
    assert load_latest(folder, "f")["step"] == 1


def test_keeps_only_the_last_k(tmp_path):
    for step in range(1, 6):
        save_checkpoint(tmp_path, {"step": step, "fingerprint": "f"}, keep=2)
    assert sorted(p.name for p in tmp_path.glob("step-*.pt")) == ["step-000000004.pt", "step-000000005.pt"]


def _disk_full_after(n_saves):
    """A torch.save that writes some bytes and then finds the disk full, from the (n_saves+1)-th call on."""
    real, calls = torch.save, []

    def save(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) <= n_saves:
            return real(obj, f, *args, **kwargs)
        with contextlib.ExitStack() as stack:
            fh = f if hasattr(f, "write") else stack.enter_context(open(f, "wb"))
            fh.write(b"partial checkpoint bytes")
            fh.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    return save


def test_disk_full_while_checkpointing_keeps_the_last_good_one(tmp_path, monkeypatch):
    folder = tmp_path / "ck"
    save_checkpoint(folder, {"step": 1, "fingerprint": "f", "x": torch.ones(2)})
    monkeypatch.setattr("textlora.checkpoint.torch.save", _disk_full_after(0))
    with pytest.raises(TextloraError, match=r"cannot write checkpoint .*step-000000002.pt: no space left on device "
                                            r"\(the last good one, step-000000001.pt, is kept\); free some space and rerun the "
                                            r"same command to resume from it, or set train.checkpoint_every=0") as e:
        save_checkpoint(folder, {"step": 2, "fingerprint": "f", "x": torch.zeros(2)})
    assert "\n" not in str(e.value)
    assert sorted(p.name for p in folder.iterdir()) == ["step-000000001.pt"]  # the partial file is gone
    assert load_latest(folder, "f")["step"] == 1


def test_disk_full_during_training_is_one_line_and_resumable(tiny_models, tiny_data, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    cfg = tiny_config(tiny_data, tiny_models["bert"], out, epochs=2, checkpoint_every=4)
    cfg.to_yaml(tmp_path / "run.yaml")
    data_before = {p.name: p.read_bytes() for p in tiny_data.iterdir()}
    monkeypatch.setattr("textlora.checkpoint.torch.save", _disk_full_after(1))
    assert main(["train", "--config", str(tmp_path / "run.yaml"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write checkpoint ") and err.count("\n") == 1, err
    assert "no space left on device (the last good one, step-000000004.pt, is kept)" in err
    assert sorted(p.name for p in checkpoint_dir(out).iterdir()) == ["step-000000004.pt"]
    assert not out.exists() and not (tmp_path / ".run.lock").exists()
    assert {p.name: p.read_bytes() for p in tiny_data.iterdir()} == data_before
    monkeypatch.undo()  # space freed: the same command resumes from step 4
    assert main(["train", "--config", str(tmp_path / "run.yaml")]) == 0
    assert "resuming from the checkpoint at step 4" in capsys.readouterr().out


def test_temporary_files_of_a_killed_save_are_removed(tmp_path):
    folder = tmp_path / "ck"
    folder.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (folder / f".step-000000003.pt.tmp-{int(dead.stdout)}").write_bytes(b"torn")
    (folder / f".step-000000003.pt.tmp-{os.getppid()}").write_bytes(b"a live writer's")
    save_checkpoint(folder, {"step": 4, "fingerprint": "f"})
    assert sorted(p.name for p in folder.iterdir()) == [f".step-000000003.pt.tmp-{os.getppid()}", "step-000000004.pt"]
