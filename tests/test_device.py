"""The device layer on a CPU-only machine: resolution, the one-line errors, device-neutral checkpoints, and no
tensor created off the run's device (checked under torch's meta default device)."""

import json
import subprocess
import sys

import pytest
import torch
from conftest import tiny_config

from textlora import device as devices
from textlora.checkpoint import checkpoint_dir
from textlora.config import RunConfig
from textlora.errors import ConfigError
from textlora.model.precision import resolve_precision
from textlora.train import train

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the errors of a machine without CUDA")


@pytest.fixture
def cpu_only(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_auto_is_the_cpu_without_cuda(cpu_only):
    assert devices.resolve("auto") == torch.device("cpu")
    assert devices.resolve("cpu") == torch.device("cpu")


@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:1"])
def test_cuda_without_a_gpu_is_one_line(cpu_only, spec):
    with pytest.raises(ConfigError, match="no CUDA GPU") as e:
        devices.resolve(spec)
    assert "\n" not in str(e.value) and "--device cpu" in str(e.value)


def test_gpu_index_past_the_last(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert devices.resolve("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match=r"2 GPU\(s\): use cuda:0..cuda:1"):
        devices.resolve("cuda:2")
    monkeypatch.setenv("LOCAL_RANK", "1")  # torchrun: each rank takes its own GPU
    assert devices.resolve("auto") == torch.device("cuda", 1)
    assert devices.resolve("cuda") == torch.device("cuda", 1)


@pytest.mark.parametrize("spec", ["gpu", "CUDA", "cuda:x", "mps", "", "cuda:"])
def test_unknown_device_settings(spec):
    with pytest.raises(ConfigError, match="auto, cpu, cuda or cuda:N"):
        devices.check_spec(spec)
    with pytest.raises(ConfigError, match="device"):
        RunConfig.from_dict({"train": {"device": spec}})


def test_precision_auto_per_device(monkeypatch):
    from textlora.model import precision as p

    monkeypatch.setattr(p, "native_bf16", lambda device="cpu", cpuinfo=None: device == "cuda")
    assert resolve_precision("auto", "cpu") == "fp32"  # a CPU that emulates bf16 stays fp32
    assert resolve_precision("auto", "cuda") == "bf16"
    monkeypatch.setattr(p, "native_bf16", lambda device="cpu", cpuinfo=None: device == "cpu")
    assert resolve_precision("auto", "cpu") == "bf16"  # AMX / AVX512-BF16
    assert resolve_precision("auto", "cuda") == "fp16"  # a GPU without bf16: fp16 with a gradient scaler
    assert resolve_precision("fp32", "cuda") == "fp32"
    with pytest.raises(ConfigError, match="fp16' needs a CUDA GPU"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ConfigError, match="precision must be one of"):
        resolve_precision("int4", "cpu")


def test_grad_scaler_only_for_fp16_on_a_gpu():
    from textlora.model.precision import grad_scaler

    assert not grad_scaler("fp16", torch.device("cpu")).is_enabled()
    assert not grad_scaler("bf16", torch.device("cpu")).is_enabled()


@no_cuda
def test_train_on_a_missing_gpu_fails_before_any_work(tiny_models, tmp_path):
    cfg = tiny_config(tmp_path / "no-such-data", tiny_models["bert"], tmp_path / "run", device="cuda")
    with pytest.raises(ConfigError, match="no CUDA GPU"):  # not the DataError of the missing data
        train(cfg, progress=False)
    assert not (tmp_path / "run").exists()


@no_cuda
@pytest.mark.parametrize("command", [["predict", "RUN", "hello"], ["eval", "RUN", "--data", "DATA"],
                                     ["serve", "RUN"], ["export", "RUN", "--out", "X"]])
def test_cli_device_flag_on_a_missing_gpu(tiny_run, command, tmp_path):
    argv = [a.replace("RUN", str(tiny_run)).replace("DATA", str(tmp_path)).replace("X", str(tmp_path / "x"))
            for a in command]
    r = subprocess.run([sys.executable, "-m", "textlora.cli", *argv, "--device", "cuda"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.count("\n") == 1 and "no CUDA GPU" in r.stderr, r.stderr


@pytest.fixture(scope="module")
def tiny_run(tiny_models, tmp_path_factory):
    from conftest import write_splits

    root = tmp_path_factory.mktemp("device")
    data = write_splits(root / "data")
    cfg = tiny_config(data, tiny_models["bert"], root / "run", epochs=1, device="cpu")
    train(cfg, progress=False)
    return root / "run"


def test_manifest_records_device_and_precision(tiny_run):
    manifest = json.loads((tiny_run / "manifest.json").read_text())
    assert manifest["device"] == {"device": "cpu", "type": "cpu"}
    assert manifest["precision"] in ("fp32", "bf16")
    assert manifest["world_size"] == 1


def test_checkpoints_are_device_neutral_and_resume_under_another_device_setting(tiny_models, tiny_data, tmp_path):
    """Every tensor of a checkpoint is on the host, and `train.device` is not part of its identity: the same run
    resumes whether it asks for 'cpu' or 'auto' (on a GPU machine: killed on the GPU, resumed on the CPU)."""
    out = tmp_path / "run"

    def on_epoch(epoch, val):
        if epoch == 1:
            raise KeyboardInterrupt  # a crash in epoch 1, after its mid-epoch checkpoints

    cfg = tiny_config(tiny_data, tiny_models["bert"], out, epochs=2, device="auto", precision="fp32",
                      checkpoint_every=5)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress=False, on_epoch=on_epoch)
    tensors = []

    def walk(x):
        if isinstance(x, torch.Tensor):
            tensors.append(x)
        elif isinstance(x, dict):
            [walk(v) for v in x.values()]
        elif isinstance(x, (list, tuple)):
            [walk(v) for v in x]
    raw = torch.load(sorted(checkpoint_dir(out).glob("step-*.pt"))[-1], weights_only=True)
    walk(raw)
    assert tensors and all(t.device.type == "cpu" for t in tensors)
    assert "cpu" in raw["rng"] and raw["optimizer"]["state"]

    resumed = train(cfg.with_overrides({"train.device": "cpu"}), progress=False, resume="must")
    reference = train(cfg.with_overrides({"out": str(tmp_path / "ref")}), progress=False)
    assert resumed.metrics["test"]["loss"] == pytest.approx(reference.metrics["test"]["loss"], abs=1e-6)


def test_no_tensor_is_created_off_the_model_device(tiny_models, tiny_data, tmp_path):
    """A training step, an evaluation and a prediction with torch's default device set to 'meta' and the model on
    the CPU: any tensor textlora made without naming a device would be a meta tensor and fail the step."""
    from textlora.data.splits import load_dataset
    from textlora.distributed import Dist
    from textlora.loop import fit
    from textlora.model.adapters import build_model
    from textlora.model.load import load_base
    from textlora.predict import Predictor
    from textlora.train import _loop, _prepare, _targets

    cfg = tiny_config(tiny_data, tiny_models["bert"], tmp_path / "run", epochs=1, precision="fp32")
    data = load_dataset(cfg.data)
    base = load_base(cfg.model.name, data.label_map)
    prep = _prepare(data, base.tokenizer, cfg)
    model = build_model(base.model, "lora", cfg.lora, base.new_modules)
    before = {k: v.clone() for k, v in model.named_parameters() if v.requires_grad}
    with torch.device("meta"):
        loss = prep.kind.loss_fn(cfg.train, _targets(prep, "train"))  # as _train builds it
        loop = _loop(model, prep, cfg, Dist(device=torch.device("cpu")), None, "fp32", None, loss)
        fitted = fit(loop, cfg.train, progress=False)
    assert fitted.best_epoch == 1 and len(fitted.history) == 1
    after = dict(model.named_parameters())
    assert all(after[k].device.type == "cpu" for k in before)
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the steps ran and changed the adapters

    train(cfg, progress=False)
    clf = Predictor.load(tmp_path / "run", device="cpu")
    expected = clf.predict_proba(["good great day", "awful sad night"])
    with torch.device("meta"):
        got = clf.predict_proba(["good great day", "awful sad night"])
    assert got == pytest.approx(expected)


def test_predictor_device_and_batch_defaults(tiny_run, monkeypatch):
    from textlora import predict

    clf = predict.Predictor.load(tiny_run, device="auto")
    assert clf.device == devices.resolve("auto")
    assert devices.eval_batch_size(torch.device("cpu")) == 32
    assert devices.eval_batch_size(torch.device("cuda", 0)) == 256
    assert devices.eval_batch_size(torch.device("cpu"), 7) == 7
    monkeypatch.setattr(predict.devices, "resolve", lambda spec: torch.device("cuda", 0))  # as if on a GPU
    with pytest.raises(ConfigError, match="int8 is PyTorch's CPU"):
        predict.Predictor.load(tiny_run, device="cuda", int8=True)
