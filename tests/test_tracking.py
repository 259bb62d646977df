"""Experiment tracking (train.report_to) read back from real TensorBoard event files and a real MLflow store, and
the model card (README.md) of every run folder."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from conftest import tiny_config, write_splits

from textlora.errors import ConfigError
from textlora.tracking import final_metrics, flat_params
from textlora.train import train

pytest.importorskip("mlflow")
pytest.importorskip("tensorboard")

STEPS_PER_EPOCH = 12  # 90 training rows, batch 8


def _tb(folder) -> tuple[dict[str, list[tuple[int, float]]], dict]:
    """Every scalar of the event files in `folder` as {tag: [(step, value), ...]}, and the hparams plugin data, read
    as TensorBoard reads them (its plugin accumulator: float64 scalars are tensors, and it honours purge_step)."""
    from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2
    from tensorboard.util import tensor_util

    ea = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    ea.Reload()
    scalars = {tag: [(e.step, tensor_util.make_ndarray(e.tensor_proto).item()) for e in ea.Tensors(tag)]
               for tag in ea.Tags()["tensors"] if ea.SummaryMetadata(tag).plugin_data.plugin_name == "scalars"}
    hp = {tag.split("/")[-1]: plugin_data_pb2.HParamsPluginData.FromString(content)
          for tag, content in ea.PluginTagToContent("hparams").items()}
    return scalars, hp


def _mlflow_runs(uri: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("textlora")
    return client, client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])


def _history(client, run_id: str, name: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, name))


def _expected(out) -> dict[str, list[tuple[int, float]]]:
    """What the trackers must hold, from the run folder alone: loss_log.jsonl, metrics.json's history and metrics."""
    log = [json.loads(x) for x in (out / "loss_log.jsonl").read_text().splitlines()]
    m = json.loads((out / "metrics.json").read_text())
    last = {}  # the step each epoch's validation ran after
    for rec in log:
        last[rec["epoch"]] = rec["step"]
    want = {"train/loss": [(r["step"], r["loss"]) for r in log], "train/lr": [(r["step"], r["lr"]) for r in log]}
    for h in m["history"]:
        for k, v in h.items():
            if k.startswith("val_"):
                want.setdefault(f"val/{k[4:]}", []).append((last[h["epoch"]], v))
    final_step = log[-1]["step"]
    want.update({k: [(final_step, v)] for k, v in final_metrics(m).items()})
    return want


@pytest.fixture(scope="module")
def tracked(tiny_models, tmp_path_factory):
    """One tiny lora run with report_to [tensorboard, mlflow] at their defaults (beside the run folder), and the
    CLI's before_commit (report.html, confusion figures)."""
    import os

    from textlora.report import write_run_artifacts

    root = tmp_path_factory.mktemp("tracked")
    out = root / "runs" / "r1"
    cfg = tiny_config(write_splits(root / "data"), tiny_models["bert"], out, epochs=2,
                      report_to=["tensorboard", "mlflow"])
    env = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        result = train(cfg, progress=False, before_commit=write_run_artifacts)
    finally:
        if env is not None:
            os.environ["MLFLOW_TRACKING_URI"] = env
    return result, root


def test_tensorboard_events_read_back_equal_the_run_folder(tracked):
    result, root = tracked
    out = result.out
    scalars, hp = _tb(root / "runs" / "tensorboard" / "r1")
    want = _expected(out)
    assert scalars == want  # names, steps and values exactly (float64), each step once
    assert len(scalars["train/loss"]) == 2 * STEPS_PER_EPOCH and scalars["val/accuracy"][1][0] == 24
    assert scalars["test/accuracy"] == [(24, result.metrics["test"]["accuracy"])]
    config = yaml.safe_load((out / "config.yaml").read_text())
    params = {k: (float(v) if isinstance(v, (bool, int, float)) else v) for k, v in flat_params(config).items()}
    start = hp["session_start_info"].session_start_info.hparams
    got = {k: (v.number_value if v.HasField("number_value") else v.string_value) for k, v in start.items()}
    assert got == params and got["train.lr"] == 1e-2 and got["lora.r"] == 4
    assert hp["session_end_info"].session_end_info.status == 1  # STATUS_SUCCESS


def test_mlflow_run_reads_back_equal_to_the_run_folder(tracked):
    result, root = tracked
    out = result.out
    client, runs = _mlflow_runs(f"sqlite:///{root / 'runs' / 'mlflow.db'}")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name == "r1"
    assert run.data.tags["textlora.run_folder"] == str(out.resolve())
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert run.data.params == {k: str(v) for k, v in flat_params(config).items()}
    want = _expected(out)
    assert set(run.data.metrics) == set(want)
    for name, points in want.items():
        assert _history(client, run.info.run_id, name) == points, name
    assert run.data.metrics["validation/f1_macro"] == result.metrics["validation"]["f1_macro"]
    listed = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert listed == {"metrics.json", "config.yaml", "labels.json", "README.md", "adapter", "report.html",
                      "confusion_validation.png", "confusion_test.png"}
    assert {a.path for a in client.list_artifacts(run.info.run_id, "adapter")} >= {
        "adapter/adapter_config.json", "adapter/adapter_model.safetensors"}
    got = client.download_artifacts(run.info.run_id, "metrics.json", str(root))
    assert open(got, "rb").read() == (out / "metrics.json").read_bytes()
    assert (root / "runs" / "mlartifacts").is_dir()  # beside the store, not in the current folder


def test_a_failed_run_ends_failed_in_a_file_store_and_closes_the_event_file(tiny_models, tiny_data, tmp_path,
                                                                           monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the file store behind this switch
    uri = (tmp_path / "mlruns").as_uri()
    cfg = tiny_config(tiny_data, tiny_models["bert"], tmp_path / "run", epochs=2, report_to=["mlflow", "tensorboard"],
                      mlflow_uri=uri, tracking_dir=str(tmp_path / "tb"))

    def stop(epoch: int, val: dict) -> None:
        raise RuntimeError("stopped by the test")

    with pytest.raises(RuntimeError, match="stopped by the test"):
        train(cfg, progress=False, on_epoch=stop)
    assert not (tmp_path / "run").exists()
    client, runs = _mlflow_runs(uri)
    assert [r.info.status for r in runs] == ["FAILED"]
    steps = _history(client, runs[0].info.run_id, "train/loss")
    assert [s for s, _ in steps] == list(range(1, STEPS_PER_EPOCH + 1))
    assert _history(client, runs[0].info.run_id, "val/accuracy")[0][0] == STEPS_PER_EPOCH
    scalars, hp = _tb(tmp_path / "tb" / "run")  # written at close: the writer was flushed and closed
    assert hp["session_end_info"].session_end_info.status == 2  # STATUS_FAILURE
    assert [s for s, _ in scalars["train/loss"]] == list(range(1, STEPS_PER_EPOCH + 1))


def test_a_resumed_run_logs_each_step_once(tiny_models, tiny_data, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "runs" / "r"
    cfg = tiny_config(tiny_data, tiny_models["bert"], out, epochs=2, checkpoint_every=5,
                      report_to=["tensorboard", "mlflow"])

    def stop(epoch: int, val: dict) -> None:
        if epoch == 2:
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        train(cfg, progress=False, on_epoch=stop)  # logged steps 1-24; the last checkpoint is at step 20
    train(cfg, progress=False)  # resumes at step 21
    scalars, _ = _tb(tmp_path / "runs" / "tensorboard" / "r")
    assert scalars == _expected(out)  # steps 21-24 and the step-24 validation of the killed run are hidden
    client, runs = _mlflow_runs(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    assert [r.info.status for r in runs] == ["FAILED", "FINISHED"]
    assert runs[1].data.tags["textlora.resumed_from_step"] == "20"
    assert [s for s, _ in _history(client, runs[1].info.run_id, "train/loss")] == list(range(21, 25))


def test_a_missing_extra_is_one_line_before_anything_loads(tiny_models, tiny_data, tmp_path, monkeypatch, capsys):
    import importlib.util

    from textlora.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    monkeypatch.setattr("textlora.train.load_dataset", lambda *a: pytest.fail("data loaded before the check"))
    cfg = tiny_config(tiny_data, tiny_models["bert"], tmp_path / "run", report_to=["tensorboard", "mlflow"])
    with pytest.raises(ConfigError, match=r"^train.report_to: mlflow needs the package 'mlflow', which is not "
                                          r"installed: pip install 'textlora\[track\]'"):
        train(cfg, progress=False)
    cfg.to_yaml(tmp_path / "run.yaml")
    assert main(["train", "--config", str(tmp_path / "run.yaml"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: train.report_to: mlflow needs") and err.count("\n") == 1
    assert not (tmp_path / "run").exists() and not (tmp_path / "tensorboard").exists()


def test_report_to_from_flag_override_and_yaml(tmp_path):
    from textlora.cli import build_parser, config_from_args
    from textlora.config import RunConfig

    args = build_parser().parse_args(["train", "--data", "d", "--report-to", "mlflow,tensorboard"])
    assert config_from_args(args).train.report_to == ["mlflow", "tensorboard"]
    args = build_parser().parse_args(["train", "--data", "d", "train.report_to=[tensorboard]",
                                      "train.tracking_dir=tb"])
    cfg = config_from_args(args)
    assert cfg.train.report_to == ["tensorboard"] and cfg.train.tracking_dir == "tb"
    assert RunConfig().train.report_to is None
    cfg.to_yaml(tmp_path / "c.yaml")
    assert RunConfig.from_yaml(tmp_path / "c.yaml") == cfg
    with pytest.raises(ConfigError, match=r"train.report_to must be a list of tensorboard, mlflow or null, "
                                          r"got \['mlflow', 'wandb'\]"):
        RunConfig().with_overrides({"train.report_to": "mlflow,wandb"})
    with pytest.raises(ConfigError, match="train.tracking_dir .* is inside --out runs/x"):
        from textlora.tracking import tracking

        with tracking(RunConfig().with_overrides({"out": "runs/x", "train.report_to": ["tensorboard"],
                                                  "train.tracking_dir": "runs/x/tb"})):
            pass


def test_a_store_that_cannot_be_opened_is_one_line(tmp_path):
    from textlora.config import RunConfig
    from textlora.tracking import tracking

    cfg = RunConfig().with_overrides({"out": str(tmp_path / "r"), "train.report_to": ["mlflow"],
                                      "train.mlflow_uri": "nosuchscheme://x"})
    with pytest.raises(ConfigError, match=r"^train.report_to: cannot open mlflow at nosuchscheme://x \(.+\); check "
                                          r"train.mlflow_uri or \$MLFLOW_TRACKING_URI.$") as e:
        with tracking(cfg):
            pass
    assert "\n" not in str(e.value)


def test_tracking_settings_do_not_stop_a_resume():
    from textlora.checkpoint import fingerprint
    from textlora.config import RunConfig

    cfg = RunConfig()
    tracked = cfg.with_overrides({"train.report_to": ["mlflow"], "train.mlflow_uri": "sqlite:///x.db"})
    assert fingerprint(cfg.to_dict(), {}) == fingerprint(tracked.to_dict(), {})


# --- the model card ---------------------------------------------------------------------------------------------

def test_every_run_folder_has_a_model_card(tracked):
    from huggingface_hub import ModelCard

    result, _ = tracked
    out, m = result.out, result.metrics
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "peft" and card.data.pipeline_tag == "text-classification"
    assert {"textlora", "lora"} <= set(card.data.tags)
    results = {(r.dataset_split, r.metric_config): r.metric_value for r in card.data.eval_results}
    assert results[("test", "accuracy")] == m["test"]["accuracy"]
    assert results[("validation", "f1_macro")] == m["validation"]["f1_macro"]
    text = card.text
    for label in ("neg", "neu", "pos"):
        assert f"| {label} |" in text
    base = json.loads((out / "manifest.json").read_text())["base_model"]["name"]
    assert f"`{base}`" in text and "LoRA adapter" in text and "r=4, alpha=8.0" in text
    assert f"| test | {m['test']['accuracy']:.4f} | {m['test']['f1_macro']:.4f} |" in text
    assert 'textlora.load("path/to/this/folder")' in text and "PeftModel.from_pretrained(base" in text
    assert "## Intended use and limitations" in text


def test_the_card_names_a_hub_base_in_its_metadata(tracked, tmp_path):
    from textlora.card import model_card
    from textlora.run_folder import Run

    result, _ = tracked
    copy = tmp_path / "r1"
    shutil.copytree(result.out, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["base_model"]["name"] = "sentence-transformers/all-MiniLM-L6-v2"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    card = model_card(Run.open(copy))
    assert card.data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert "(https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2)" in card.text


def test_predict_and_serve_ignore_the_card(tracked):
    from textlora.predict import Predictor
    from textlora.serve.registry import Registry, RunSpec

    result, _ = tracked
    assert (result.out / "README.md").is_file()
    clf = Predictor.load(result.out)
    reg = Registry.load([RunSpec.parse(f"r1={result.out}")])
    texts = ["good great day", "the bad chair"]
    assert clf.predict_proba(texts).shape == (2, 3)
    assert reg.scores("r1", texts).shape == (2, 3)


def test_importing_train_loads_no_tracker():
    import subprocess
    import sys

    code = "import sys, textlora.train; print(sorted({'mlflow', 'tensorboard'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
