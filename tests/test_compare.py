"""`compare` with the baseline ladder on a tiny model, reuse of finished rungs, and `runs`."""

import pytest
from conftest import tiny_config

from textlora.cli import main
from textlora.compare import compare, list_runs, run_row
from textlora.errors import ConfigError, ModelError
from textlora.train import train


@pytest.fixture(scope="module")
def two_runs(tiny_models, tmp_path_factory):
    from conftest import make_rows, write_jsonl

    root = tmp_path_factory.mktemp("compare")
    for split, (n, seed) in {"train": (90, 1), "validation": (30, 2), "test": (30, 3)}.items():
        write_jsonl(root / "data" / f"{split}.jsonl", make_rows(n, seed))
    for method in ("lora", "head"):
        train(tiny_config(root / "data", tiny_models["bert"], root / "runs" / method, method, epochs=1),
              progress=False)
    return root


def test_run_row_reads_size_params_time_and_memory(two_runs):
    row = run_row(two_runs / "runs" / "lora")
    assert row.method == "lora" and 0 <= row.test_accuracy <= 1 and row.trainable > 0
    adapter = sum(f.stat().st_size for f in (two_runs / "runs" / "lora" / "adapter").rglob("*") if f.is_file())
    assert row.size_bytes == adapter and row.train_seconds > 0 and row.peak_rss_mb > 50


def test_compare_with_the_ladder(two_runs, capsys):
    out = two_runs / "cmp"
    code = main(["compare", str(two_runs / "runs" / "lora"), str(two_runs / "runs" / "head"), "--baselines",
                 "--out", str(out), "--epochs", "1", "--quiet"])
    assert code == 0
    table = capsys.readouterr().out
    names = [line.split()[0] for line in table.splitlines()[2:] if line.strip() and not line.startswith("wrote")]
    assert names == ["majority", "tfidf_logreg", "zero-shot", "embed", "setfit", "head", "lora", "full", "lora", "head"]
    assert {"compare.html", "compare.md", "accuracy_vs_time.png", "ladder"} <= {p.name for p in out.iterdir()}
    assert (out / "ladder" / "full" / "report.html").is_file()
    page = (out / "compare.html").read_text()
    assert 'id="compare"' in page and "data:image/png;base64," in page
    for row in list_runs(out / "ladder"):
        assert row.peak_rss_mb is not None and row.peak_rss_mb > 50

    # a second compare reuses every finished rung: nothing is retrained
    stamps = {r: (out / "ladder" / r / f).stat().st_mtime_ns for r, f in
              (("full", "manifest.json"), ("tfidf_logreg", "result.json"))}
    assert main(["compare", str(two_runs / "runs" / "lora"), "--baselines", "--out", str(out), "--epochs", "1",
                 "--quiet"]) == 0
    assert stamps == {r: (out / "ladder" / r / f).stat().st_mtime_ns for r, f in
                      (("full", "manifest.json"), ("tfidf_logreg", "result.json"))}


def test_compare_errors(two_runs, tmp_path):
    with pytest.raises(ModelError, match="not found"):
        compare([tmp_path / "nope"], tmp_path / "o")
    with pytest.raises(ConfigError, match="unknown baseline rung"):
        compare([], tmp_path / "o", ladder_config=object(), rungs=("svm",))


def test_runs_lists_finished_runs(two_runs, capsys, tmp_path):
    assert main(["runs", str(two_runs / "runs")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["run", "method"] and sorted(x.split()[0] for x in lines[2:]) == ["head", "lora"]
    assert main(["runs", str(tmp_path / "none")]) == 2


def test_runs_skips_a_run_folder_copied_in_part(tmp_path):
    import json

    for name in ("whole", "partial"):
        run = tmp_path / name
        run.mkdir()
        (run / "manifest.json").write_text(json.dumps({"textlora_version": "0.1", "method": "lora", "created": "1"}))
        (run / "metrics.json").write_text(json.dumps({"test": {"accuracy": 0.5}}))
        (run / "config.yaml").write_text("model:\n  method: lora\n")
        (run / "labels.json").write_text(json.dumps({"labels": ["a", "b"]}))
        (run / "adapter").mkdir()
    (tmp_path / "partial" / "labels.json").unlink()
    assert [r.name for r in list_runs(tmp_path)] == ["whole"]
