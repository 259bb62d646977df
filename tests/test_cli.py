"""The `textlora` command: train -> predict -> eval on a tiny model, and errors without tracebacks."""

import json
import subprocess
import sys

import pytest
from conftest import write_jsonl

from textlora.cli import build_parser, config_from_args, main


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "textlora.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd)


def test_flags_and_overrides_build_the_config(tmp_path):
    (tmp_path / "c.yaml").write_text("train:\n  epochs: 5\n  lr: 0.002\nlora:\n  r: 4\n")
    args = build_parser().parse_args(["train", "--config", str(tmp_path / "c.yaml"), "--data", "d", "--r", "8",
                                      "--target-modules", "query,value", "--precision", "bf16", "train.lr=3e-4",
                                      "model.method=full"])
    cfg = config_from_args(args)
    assert (cfg.train.epochs, cfg.train.lr, cfg.lora.r, cfg.model.method) == (5, 3e-4, 8, "full")
    assert cfg.train.precision == "bf16"
    assert cfg.lora.target_modules == ["query", "value"] and cfg.data.path == "d"


def test_train_predict_eval(tiny_models, tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--data", str(tiny_data), "--model", str(tiny_models["distilbert"]), "--out", str(out),
                 "--epochs", "1", "--batch-size", "8", "--quiet", "model.max_length=32"])
    assert code == 0
    assert "test accuracy:" in capsys.readouterr().out
    assert (out / "confusion_test.png").stat().st_size > 1000
    saved = (out / "config.yaml").read_text()
    assert "max_length: 32" in saved and "epochs: 1" in saved

    assert main(["predict", str(out), "good day", "bad day"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].split("\t")[0] in {"neg", "neu", "pos"}

    (tmp_path / "in.txt").write_text("good day\n\nthe awful chair\n")
    assert main(["predict", str(out), "--input", str(tmp_path / "in.txt"), "--output", str(tmp_path / "o.jsonl")]) == 0
    rows = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and set(rows[0]["scores"]) == {"neg", "neu", "pos"}
    assert abs(sum(rows[0]["scores"].values()) - 1) < 1e-4

    assert main(["eval", str(out), "--data", str(tiny_data), "--split", "test",
                 "--output", str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["n"] == 30


@pytest.mark.parametrize("args, message", [
    (["train", "--data", "{tmp}/missing", "--out", "{tmp}/o"], "error: data path {tmp}/missing not found"),
    (["train", "--data", "{tmp}/bad.jsonl", "--out", "{tmp}/o"], "error: bad.jsonl line 2: column 'text' is empty"),
    (["train", "--data", "{tmp}/bad.jsonl", "train.lrr=1"], "error: unknown config key 'train.lrr'"),
    (["predict", "{tmp}/nope", "hi"], "error: run folder {tmp}/nope not found"),
])
def test_errors_are_one_line_without_traceback(tmp_path, args, message):
    write_jsonl(tmp_path / "bad.jsonl", [{"text": "ok", "label": "a"}, {"text": "", "label": "b"}])
    r = run_cli(*[a.format(tmp=tmp_path) for a in args])
    assert r.returncode == 2
    assert message.format(tmp=tmp_path) in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()


def test_import_is_light():
    code = "import sys, textlora, textlora.config, textlora.cli; print(sorted({'torch', 'transformers', 'peft'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_help_shows_each_fields_documentation(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Peak learning rate; null picks the method's default" in text and "[train.lr]" in text
    assert "sets data.path" not in text


def test_serve_flags_are_the_serve_options_fields():
    import dataclasses

    from textlora.serve.options import ServeOptions

    args = build_parser().parse_args(["serve", "r1", "--max-queue", "100", "--no-batching", "--precision", "bf16",
                                      "--header-timeout-s", "2.5", "--threads", "3"])
    opts = ServeOptions(**{f.name: getattr(args, f.name) for f in dataclasses.fields(ServeOptions)})
    assert (opts.max_queue, opts.batching, opts.precision, opts.header_timeout_s, opts.threads) == (100, False, "bf16",
                                                                                                  2.5, 3)
    defaults = build_parser().parse_args(["serve", "r1"])
    assert all(getattr(defaults, f.name) == f.default for f in dataclasses.fields(ServeOptions))


def test_a_runs_config_records_what_ran_and_retrains_the_same(tiny_models, tiny_data, tmp_path, capsys):
    """config.yaml holds the resolved values (the lr the method chose, gradient checkpointing on or off), and
    `textlora train --config RUN/config.yaml` trains the same run again."""
    from textlora.config import RunConfig

    first = tmp_path / "first"
    assert main(["train", "--data", str(tiny_data), "--model", str(tiny_models["bert"]), "--out", str(first),
                 "--epochs", "1", "--batch-size", "8", "--precision", "fp32", "--quiet", "model.max_length=32"]) == 0
    saved = RunConfig.from_yaml(first / "config.yaml")
    assert saved.train.lr == 1e-3 and saved.train.gradient_checkpointing is False  # lora's defaults, written out
    assert saved.train.trim_memory_every == 0
    assert "lr: 0.001" in (first / "config.yaml").read_text()
    again = tmp_path / "again"
    assert main(["train", "--config", str(first / "config.yaml"), "--out", str(again), "--quiet"]) == 0
    m1, m2 = (json.loads((p / "metrics.json").read_text()) for p in (first, again))
    assert m1["test"] == m2["test"] and m1["validation"] == m2["validation"]


def test_warnings_are_one_line(tiny_models, tmp_path):
    """The split-overlap warning (an actionable one) comes as `warning: ...`, without file path or source line."""
    rows = [{"text": "good day", "label": "pos"}, {"text": "bad day", "label": "neg"}] * 3
    for split in ("train", "validation", "test"):
        write_jsonl(tmp_path / "d" / f"{split}.jsonl", rows)
    r = run_cli("train", "--data", tmp_path / "d", "--model", tiny_models["bert"], "--out", tmp_path / "o",
                "--epochs", "1", "--quiet", "model.max_length=32", "train.precision=fp32")
    assert r.returncode == 0, r.stderr[-2000:]
    warning = [line for line in r.stderr.splitlines() if "more than one split" in line]
    assert len(warning) == 1 and warning[0].startswith("warning: texts occur"), r.stderr
    assert "load_dataset(" not in r.stderr  # no source line
