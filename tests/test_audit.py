"""`textlora audit` on a tiny model and a tiny dataset with planted label flips and duplicates: suspects with file
row numbers, duplicates, stats, cross-validated scores, the page, reuse of finished folds, one-line errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_rows, tiny_config, write_jsonl

import textlora
from textlora.auditing import audit
from textlora.auditing.checks import duplicates, label_issues, normalize_text
from textlora.cli import main
from textlora.data.splits import load_dataset
from textlora.errors import DataError

FLIPPED = {4: "neu", 11: "pos", 25: "pos"}
"""Training rows (0-based) whose label is planted wrong, and the wrong label."""


def _rows() -> dict[str, list[dict]]:
    train = make_rows(60, seed=1)
    for i, wrong in FLIPPED.items():
        assert train[i]["label"] != wrong
        train[i] = {**train[i], "label": wrong}
    validation, test = make_rows(24, seed=2), make_rows(24, seed=3)
    conflict = {"text": "the chair is Good", "label": "pos"}
    train += [conflict, {"text": "  THE chair   is good ", "label": "neu"}]  # same text, two labels
    test[0] = {"text": train[7]["text"].upper(), "label": train[7]["label"]}  # a training text in test
    return {"train": train, "validation": validation, "test": test}


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("audit_data")
    for split, rows in _rows().items():
        write_jsonl(root / f"{split}.jsonl", rows)
    return root


@pytest.fixture(scope="module")
def audited(planted, tiny_models, tmp_path_factory):
    out = tmp_path_factory.mktemp("audit") / "a"
    cfg = tiny_config(planted, tiny_models["bert"], out / "unused", method="head", epochs=2)
    return cfg, out, audit(cfg, out, folds=3, fresh_process=False, progress=False)


def test_suspects_are_ranked_with_their_file_rows_and_labels(audited, planted):
    _, out, result = audited
    lines = (planted / "train.jsonl").read_text().splitlines()
    written = [json.loads(x) for x in (out / "suspects.jsonl").read_text().splitlines()]
    assert written == [s.to_dict() for s in result.suspects] and written
    assert [s["rank"] for s in written] == list(range(1, len(written) + 1))
    assert [s["score"] for s in written] == sorted(s["score"] for s in written)  # most suspect first
    for s in written:
        row = json.loads(lines[s["row"] - 1])  # JSONL: line numbers, 1-based
        assert s["row_name"] == f"line {s['row']}" and s["text"] == row["text"] and s["given"] == row["label"]
        p = result.proba[s["index"]]
        assert s["suggested"] == result.labels[int(np.argmax(p))]
        assert s["score"] == pytest.approx(p[result.labels.index(s["given"])], abs=1e-6)
    assert np.allclose(result.proba.sum(axis=1), 1) and not np.isnan(result.proba).any()
    assert sorted(result.ranking.tolist()) == list(range(len(result.quality)))
    assert np.all(np.diff(result.quality[result.ranking]) >= 0)


def test_duplicates_stats_and_cross_validated_scores(audited):
    _, out, result = audited
    conflict = [d for d in result.duplicates if d.conflicting]
    assert [(d.kind, len(d.rows)) for d in conflict] == [("within train", 2)]
    assert {r["row_name"] for r in conflict[0].rows} == {"line 61", "line 62"}
    across = [d for d in result.duplicates if d.kind == "across train/test"]
    assert len(across) == 1 and {r["row_name"] for r in across[0].rows} == {"line 8", "line 1"}
    assert len(json.loads(json.dumps([d.to_dict() for d in result.duplicates]))) == \
        len((out / "duplicates.jsonl").read_text().splitlines())
    train = result.stats["train"]
    assert train["rows"] == 62 and sum(c["count"] for c in train["classes"].values()) == 62
    assert train["classes"]["neu"]["count"] == 20 + 1 - 1 + 1  # rows 2, 5, 8, ...; row 4 in, row 11 out; conflict
    assert train["words"]["max"] >= train["words"]["median"] >= 1
    acc = [f.accuracy for f in result.folds]
    assert len(result.folds) == 3 and sum(f.rows for f in result.folds) == 62
    assert result.cv["accuracy_mean"] == pytest.approx(np.mean(acc))
    assert result.cv["accuracy_std"] == pytest.approx(np.std(acc, ddof=1))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cv"] == result.cv and summary["suspects"] == len(result.suspects)


def test_the_page_is_self_contained(audited):
    _, out, result = audited
    page = (out / "audit.html").read_text()
    for section in ("Cross-validated scores", "Suspected label errors", "Duplicated texts", "Class balance",
                    "Text length"):
        assert f"<h2>{section}</h2>" in page
    assert "<script" not in page and "http://" not in page and "https://" not in page
    assert f"{result.cv['accuracy_mean']:.4f} ± {result.cv['accuracy_std']:.4f}" in page


def test_a_rerun_reuses_finished_folds_and_retrains_a_missing_one(audited):
    cfg, out, first = audited
    done = {k: (out / "folds" / str(k) / "fold.json").stat().st_mtime_ns for k in (1, 2, 3)}
    again = audit(cfg, out, folds=3, fresh_process=False, progress=False)
    assert [f.reused for f in again.folds] == [True, True, True]
    assert {k: (out / "folds" / str(k) / "fold.json").stat().st_mtime_ns for k in (1, 2, 3)} == done
    np.testing.assert_array_equal(again.proba, first.proba)
    (out / "folds" / "2" / "fold.json").unlink()  # as if killed before fold 2 finished
    third = audit(cfg, out, folds=3, fresh_process=False, progress=False)
    assert [f.reused for f in third.folds] == [True, False, True]
    np.testing.assert_allclose(third.proba, first.proba, atol=1e-5)  # the same seeded recipe


def test_confident_learning_flags_planted_flips_first():
    rng = np.random.default_rng(0)
    truth = np.arange(300) % 3
    proba = np.full((300, 3), 0.05)
    proba[np.arange(300), truth] = 0.9
    proba += rng.uniform(0, 0.02, proba.shape)
    proba /= proba.sum(axis=1, keepdims=True)
    given = truth.copy()
    flips = [7, 50, 123, 201, 299]
    given[flips] = (truth[flips] + 1) % 3
    quality, flagged = label_issues(given, proba)
    assert sorted(flagged.tolist()) == flips
    assert np.all(np.diff(quality[flagged]) >= 0)


def test_duplicates_ignore_case_and_whitespace(tmp_path):
    assert normalize_text("  The\tCat  sat\n") == normalize_text("the cat sat")
    write_jsonl(tmp_path / "d" / "train.jsonl", make_rows(9) + [{"text": "A b", "label": "pos"},
                                                                {"text": "a  B", "label": "pos"}])
    write_jsonl(tmp_path / "d" / "test.jsonl", [{"text": "a b", "label": "neg"}])
    from textlora.config import DataConfig

    groups = duplicates(load_dataset(DataConfig(path=str(tmp_path / "d"))))
    g = [d for d in groups if normalize_text(d.text) == "a b"]
    assert len(g) == 1 and g[0].conflicting and g[0].kind == "across train/test" and len(g[0].rows) == 3


def test_textlora_audit_is_the_function():
    assert textlora.audit is audit and textlora.audit is audit  # a submodule import must not shadow it


def _error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    return err


def test_cli_errors_are_one_line_and_come_before_training(planted, tiny_models, tmp_path, capsys):
    base = ["audit", "--data", str(planted), "--model", str(tiny_models["bert"]), "--max-length", "32"]
    assert "64 positions" in _error(capsys, base[:5] + ["--out", str(tmp_path / "f")])  # 256 by default
    assert "at least 2" in _error(capsys, base + ["--out", str(tmp_path / "a"), "--folds", "1"])
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert "not a textlora audit" in _error(capsys, base + ["--out", str(other)])
    assert (other / "notes.txt").read_text() == "mine" and sorted(os.listdir(other)) == ["notes.txt"]
    assert "apart from its data" in _error(capsys, base + ["--out", str(planted / "a")])
    assert "at least --folds (40)" in _error(capsys, base + ["--out", str(tmp_path / "b"), "--folds", "40"])
    multi = write_jsonl(tmp_path / "m" / "train.jsonl", [{"text": f"t {i}", "label": ["a", "b"][: 1 + i % 2]}
                                                         for i in range(20)])
    assert "single-label" in _error(capsys, ["audit", "--data", str(multi.parent), "--out", str(tmp_path / "c")])
    assert "not found" in _error(capsys, base[:3] + ["--model", str(tmp_path / "no-model"), "--out", str(tmp_path / "e")])
    assert not any((tmp_path / x).exists() for x in "abcef")
    with pytest.raises(SystemExit):
        main(base + ["--out", str(tmp_path / "d"), "--method", "full"])


def test_load_dataset_error_is_a_data_error(tmp_path):
    from textlora.config import RunConfig

    with pytest.raises(DataError, match="not found"):
        audit(RunConfig.from_dict({"data": {"path": str(tmp_path / "none")}}), tmp_path / "out", progress=False)


def test_cli_audit_trains_each_fold_in_its_own_process(planted, tiny_models, tmp_path):
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "textlora.cli", "audit", "--data", str(planted), "--model", str(tiny_models["bert"]),
           "--out", str(out), "--folds", "2", "--epochs", "1", "--max-length", "32", "train.precision=fp32"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "fold 2/2: training" in proc.stdout and "wrote" in proc.stdout
    marker = json.loads((out / "audit.json").read_text())
    assert marker["kind"] == "audit" and marker["config"]["model"]["method"] == "lora"  # the CLI's default folds:
    assert marker["config"]["lora"]["top_layers"] == 1  # LoRA on the top layer, the lower one computed once
    assert all((out / "folds" / k / "run" / "manifest.json").is_file() for k in ("1", "2"))
    assert len((out / "suspects.jsonl").read_text().splitlines()) == json.loads(
        (out / "summary.json").read_text())["suspects"]


def test_cli_fold_recipe_lora_on_the_top_layer_unless_told(tmp_path):
    """`textlora audit` trains LoRA on the top layer by default; --top-layers, the config file and a key=value
    override each win over that default, and --method head leaves lora.top_layers alone."""
    import argparse

    from textlora import cli

    parser = argparse.ArgumentParser()
    cli.add_audit_command(parser.add_subparsers())

    def recipe(*extra):
        cfg = cli.audit_config(parser.parse_args(["audit", "--out", "o", "--data", "d", *extra]))
        return cfg.model.method, cfg.lora.top_layers

    every = tmp_path / "every.yaml"
    every.write_text("lora:\n  top_layers: null\n")
    other = tmp_path / "other.yaml"
    other.write_text("train:\n  epochs: 2\n")
    assert recipe() == ("lora", cli.AUDIT_TOP_LAYERS) == ("lora", 1)
    assert recipe("--method", "head") == ("head", None)
    assert recipe("--top-layers", "all") == ("lora", None)
    assert recipe("--top-layers", "3") == ("lora", 3)
    assert recipe("lora.top_layers=2") == ("lora", 2)
    assert recipe("--config", str(every)) == ("lora", None)
    assert recipe("--config", str(other)) == ("lora", 1)
    with pytest.raises(SystemExit):
        parser.parse_args(["audit", "--out", "o", "--top-layers", "0"])
