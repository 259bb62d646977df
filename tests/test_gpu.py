"""CUDA paths on tiny models: training (fp32, bf16, fp16), resume across devices, the layer cache, qlora, predict,
serve and a one-process torchrun on nccl. Marked `gpu` (deselected by default: `pytest -m gpu` runs them) and skipped
where torch sees no GPU; bench/gpu_check.sh runs them on a GPU machine."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import tiny_config

from textlora.checkpoint import checkpoint_dir
from textlora.predict import Predictor
from textlora.train import train

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _cfg(tiny_models, tiny_data, out, **train_kw):
    return tiny_config(tiny_data, tiny_models["bert"], out, epochs=2, **{"device": "cuda", "checkpoint_every": 5,
                                                                          **train_kw})


def _saved_logits(run, split="test"):
    return np.load(run / "predictions.npz")[f"{split}_logits"]


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16", "auto"])
def test_train_on_cuda_and_predict_anywhere(tiny_models, tiny_data, tmp_path, precision):
    if precision == "bf16" and not torch.cuda.is_bf16_supported(including_emulation=False):
        pytest.skip("this GPU has no bf16")
    out = tmp_path / "run"
    result = train(_cfg(tiny_models, tiny_data, out, precision=precision), progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["device"]["type"] == "cuda" and manifest["device"]["gpu"]
    assert manifest["precision"] in ("fp32", "bf16", "fp16")
    assert np.isfinite(result.metrics["test"]["loss"])
    texts = ["good great happy", "awful sad bad", "table chair door"]
    on_gpu = Predictor.load(out, device="cuda")
    on_cpu = Predictor.load(out, device="cpu")
    assert on_gpu.device.type == "cuda"
    np.testing.assert_allclose(on_gpu.logits(texts), on_cpu.logits(texts), atol=1e-4)
    # evaluation stays fp32: the saved test logits are what an fp32 Predictor computes
    from textlora.data.splits import load_dataset

    test_texts = load_dataset(result_config(out).data).test.texts
    np.testing.assert_allclose(on_cpu.logits(test_texts), _saved_logits(out), atol=1e-4)


def result_config(out):
    from textlora.config import RunConfig

    return RunConfig.from_yaml(out / "config.yaml")


def _crash_after_epoch_1(cfg):
    def on_epoch(epoch, val):
        if epoch == 1:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress=False, on_epoch=on_epoch)
    assert any(checkpoint_dir(cfg.out).glob("step-*.pt"))


def test_resume_on_the_gpu_is_exact_and_a_gpu_checkpoint_resumes_on_the_cpu(tiny_models, tiny_data, tmp_path):
    kw = {"precision": "fp32"}
    cfg = _cfg(tiny_models, tiny_data, tmp_path / "a", **kw).with_overrides({"model.dropout": 0.1})
    reference = train(cfg.with_overrides({"out": str(tmp_path / "ref")}), progress=False)
    _crash_after_epoch_1(cfg)
    resumed = train(cfg, progress=False, resume="must")  # same device: exact, CUDA RNG state restored
    assert resumed.metrics["test"]["loss"] == pytest.approx(reference.metrics["test"]["loss"], abs=1e-6)
    assert resumed.metrics["history"][1]["train_loss"] == pytest.approx(reference.metrics["history"][1]["train_loss"],
                                                                        abs=1e-6)

    cfg_b = _cfg(tiny_models, tiny_data, tmp_path / "b", **kw)
    _crash_after_epoch_1(cfg_b)
    on_cpu = train(cfg_b.with_overrides({"train.device": "cpu"}), progress=False, resume="must")
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["device"]["type"] == "cpu"
    assert np.isfinite(on_cpu.metrics["test"]["loss"])


def test_a_cpu_checkpoint_resumes_on_the_gpu(tiny_models, tiny_data, tmp_path):
    cfg = _cfg(tiny_models, tiny_data, tmp_path / "c", precision="fp32")
    _crash_after_epoch_1(cfg.with_overrides({"train.device": "cpu"}))
    result = train(cfg, progress=False, resume="must")
    assert json.loads((tmp_path / "c" / "manifest.json").read_text())["device"]["type"] == "cuda"
    assert np.isfinite(result.metrics["test"]["loss"])


def test_layer_cache_on_the_gpu_matches_no_cache(tiny_models, tiny_data, tmp_path):
    kw = {"precision": "fp32"}
    cached = train(_cfg(tiny_models, tiny_data, tmp_path / "cached", **kw).with_overrides({"lora.top_layers": 1}),
                   progress=False)
    plain = train(_cfg(tiny_models, tiny_data, tmp_path / "plain", cache_frozen=False, **kw)
                  .with_overrides({"lora.top_layers": 1}), progress=False)
    assert cached.metrics["layer_cache"]["layers"] == 1
    assert cached.metrics["test"]["loss"] == pytest.approx(plain.metrics["test"]["loss"], abs=1e-4)


def test_qlora_on_the_gpu_loads_on_a_cpu(tiny_models, tiny_data, tmp_path):
    pytest.importorskip("bitsandbytes")
    out = tmp_path / "q"
    result = train(_cfg(tiny_models, tiny_data, out, method="qlora"), progress=False)
    assert np.isfinite(result.metrics["test"]["loss"])
    clf = Predictor.load(out, device="cpu")
    assert len(clf.predict(["good great happy"])) == 1


def test_serve_registry_on_the_gpu(tiny_models, tiny_data, tmp_path):
    from textlora.serve.registry import Registry, RunSpec

    out = tmp_path / "s"
    train(_cfg(tiny_models, tiny_data, out, precision="fp32"), progress=False)
    reg = Registry.load([RunSpec.parse(f"s={out}")], device="cuda")
    assert reg.device.type == "cuda"
    texts = ["good great happy", "awful sad bad"]
    np.testing.assert_allclose(reg.scores("s", texts), Predictor.load(out, device="cpu").predict_proba(texts),
                               atol=1e-4)


def test_one_process_torchrun_on_nccl(tiny_models, tiny_data, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _cfg(tiny_models, tiny_data, tmp_path / "ddp", precision="fp32").to_yaml(tmp_path / "ddp.yaml")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1", "--master_addr=127.0.0.1",
           f"--master_port={port}", "-m", "textlora.cli", "train", "--config", str(tmp_path / "ddp.yaml"), "--quiet"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    manifest = json.loads((tmp_path / "ddp" / "manifest.json").read_text())
    assert manifest["device"]["type"] == "cuda" and manifest["world_size"] == 1
