"""Training runs unchanged under torchrun: 2 CPU processes (gloo) match a single process."""

import json
import socket
import subprocess
import sys

import pytest
from conftest import tiny_config

from textlora.train import train


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("grad_accum", [1, 2], ids=["step", "grad_accum"])
def test_two_process_ddp_matches_single_process(tiny_models, tiny_data, tmp_path, grad_accum):
    """grad_accum=2: each rank runs its 4 rows as 2 micro-batches, the first under DDP's no_sync."""
    def cfg(out, **kw):  # batch 8 splits evenly over 2 ranks for all but the last (2-row) batch
        return tiny_config(tiny_data, tiny_models["bert"], out, epochs=2, num_threads=1, **kw).with_overrides(
            {"model.dropout": 0.0, "lora.dropout": 0.0})

    single = train(cfg(tmp_path / "single"), progress=False)
    cfg(tmp_path / "ddp", grad_accum=grad_accum).with_overrides({"train.report_to": ["tensorboard"]}).to_yaml(
        tmp_path / "ddp.yaml")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", "-m", "textlora.cli", "train", "--config", str(tmp_path / "ddp.yaml"),
           "--quiet"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    ddp = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    for a, b in zip(ddp["history"], single.metrics["history"]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-3)
    for split in ("validation", "test"):
        assert ddp[split]["loss"] == pytest.approx(single.metrics[split]["loss"], rel=1e-3)
        assert ddp[split]["accuracy"] == pytest.approx(single.metrics[split]["accuracy"], abs=1 / 30 + 1e-9)
    manifest = json.loads((tmp_path / "ddp" / "manifest.json").read_text())
    assert manifest["method"] == "lora"
    events = list((tmp_path / "tensorboard" / "ddp").iterdir())  # train.report_to: rank 0 alone logs
    assert len(events) == 1 and events[0].name.startswith("events.out.tfevents.")
