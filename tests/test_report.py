"""The run report: sections from a real tiny run, multi-label rendering, the CLI command, and the page
in headless Chromium (screenshot, metrics table, confusion image, no console errors)."""

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from browser import find_chromium, inspect_page

from textlora.cli import main
from textlora.report import confused_pairs, load_run, render_report, write_report


@pytest.fixture(scope="module")
def cli_run(tiny_models, tmp_path_factory):
    """A run trained through `textlora train`, which writes report.html before committing the folder."""
    from conftest import make_rows, write_jsonl

    root = tmp_path_factory.mktemp("report_run")
    for split, (n, seed) in {"train": (90, 1), "validation": (30, 2), "test": (30, 3)}.items():
        write_jsonl(root / "data" / f"{split}.jsonl", make_rows(n, seed))
    assert main(["train", "--data", str(root / "data"), "--model", str(tiny_models["bert"]), "--out",
                 str(root / "run"), "--epochs", "3", "--batch-size", "8", "--lr", "0.02", "--quiet",
                 "model.max_length=32", "lora.r=4"]) == 0
    return root / "run"


def test_train_writes_the_report_with_every_section(cli_run):
    page = (cli_run / "report.html").read_text()
    for needle in ('id="metrics"', 'id="per-class"', 'id="confusion-matrix"', 'id="curves"', 'id="confused-pairs"',
                   'id="reliability"', 'id="calibration"', 'id="config"', 'id="manifest"', "base · test"):
        assert needle in page, needle
    assert "manifest.json not written yet" not in page and "weights_sha256" in page
    assert "src=\"http" not in page and "<script" not in page  # self-contained, no scripts
    assert page.count("data:image/png;base64,") == 3


def test_confused_pairs_show_example_texts(cli_run):
    run = load_run(cli_run)
    cm = np.array(run.metrics["test"]["confusion_matrix"])
    pairs = confused_pairs(cm)
    assert all(cm[t, p] == n for t, p, n in pairs) and [n for *_, n in pairs] == sorted([n for *_, n in pairs])[::-1]
    page = render_report(run)
    if pairs:
        test_texts = [json.loads(x)["text"] for x in (cli_run.parent / "data" / "test.jsonl").read_text().splitlines()]
        section = page.split('id="confused-pairs"')[1].split("</table>")[0]
        assert any(t in section for t in test_texts)


def test_report_survives_moved_data(cli_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(cli_run, run)
    cfg = (run / "config.yaml").read_text().replace(str(cli_run.parent / "data"), str(tmp_path / "gone"))
    (run / "config.yaml").write_text(cfg)
    page = write_report(run).read_text()
    assert "texts unavailable" in page or "No test example is misclassified" in page


def test_report_command(cli_run, tmp_path, capsys):
    out = tmp_path / "r.html"
    assert main(["report", str(cli_run), "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out and 'id="metrics"' in out.read_text()
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "run folder" in capsys.readouterr().err


def test_multilabel_run_shows_per_label_f1_and_thresholds(tmp_path):
    from textlora.config import RunConfig
    from textlora.data.labels import LabelMap

    rng = np.random.default_rng(0)
    y = {s: (rng.random((40, 3)) < 0.4).astype(int) for s in ("validation", "test")}
    logits = {s: (y[s] * 2 - 1) * 2.0 + rng.normal(size=(40, 3)) for s in y}
    RunConfig.from_dict({"out": str(tmp_path)}).to_yaml(tmp_path / "config.yaml")
    LabelMap(["a", "b", "c"], multi_label=True).save(tmp_path / "labels.json")
    (tmp_path / "metrics.json").write_text(json.dumps({"test": {"f1_macro": 0.5}}))
    np.savez(tmp_path / "predictions.npz", **{f"{s}_{k}": v for s in y for k, v in
                                             (("logits", logits[s]), ("labels", y[s]))})
    page = write_report(tmp_path).read_text()
    assert 'id="per-label"' in page and "threshold (fitted on validation)" in page
    assert 'id="confusion-matrix"' not in page and 'id="reliability"' not in page


def test_multilabel_report_without_saved_thresholds_tunes_as_training_does(tmp_path):
    """A run folder without thresholds in metrics.json: the report tunes them with the tuner training uses, so a
    tie keeps 0.5 (the first-best threshold would be 0.15 here) and a label without positives keeps 0.5."""
    from textlora.config import RunConfig
    from textlora.data.labels import LabelMap

    y = {"validation": np.array([[1, 0], [0, 0]]), "test": np.array([[1, 0], [0, 1]])}
    p = np.array([[0.9, 0.3], [0.1, 0.2]])
    logits = {s: np.log(p / (1 - p)) for s in y}
    RunConfig.from_dict({"out": str(tmp_path)}).to_yaml(tmp_path / "config.yaml")
    LabelMap(["a", "b"], multi_label=True).save(tmp_path / "labels.json")
    (tmp_path / "metrics.json").write_text(json.dumps({"test": {"f1_macro": 0.5}}))
    np.savez(tmp_path / "predictions.npz", **{f"{s}_{k}": v for s in y for k, v in
                                             (("logits", logits[s]), ("labels", y[s]))})
    page = render_report(load_run(tmp_path))
    table = page[page.index('id="per-label"'):]
    assert "<tr><td>a</td><td>1</td><td>0.5000</td>" in table and "<tr><td>b</td><td>1</td><td>0.5000</td>" in table


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


CHECKS = """(() => {
  const rows = [...document.querySelectorAll('#metrics tbody tr')].map(r => r.cells[0].textContent);
  const img = document.getElementById('confusion-matrix');
  const images = [...document.images].map(i => [i.id, i.complete, i.naturalWidth]);
  return {rows, confusion: img ? [img.complete, img.naturalWidth, img.naturalHeight] : null, images,
          height: document.body.scrollHeight};
})()"""


@pytest.mark.skipif(find_chromium() is None, reason="chromium is not installed (apt-get install chromium; "
                                                   ".ci/run installs it)")
def test_report_renders_in_headless_chromium(cli_run, tmp_path):
    shot = Path(os.environ.get("TEXTLORA_SCREENSHOT", tmp_path / "report.png"))
    result = inspect_page((cli_run / "report.html").resolve().as_uri(), CHECKS, screenshot=shot)
    assert result.errors == []
    v = result.value
    assert v["rows"][:2] == ["accuracy", "f1_macro"] and "loss" in v["rows"]
    complete, w, h = v["confusion"]
    assert complete and w > 400 and h > 150  # decoded: a broken image has naturalWidth 0
    assert all(ok and width > 0 for _, ok, width in v["images"]) and len(v["images"]) == 3
    assert _png_size(result.screenshot) == (1280, 2000) and len(result.screenshot) > 50_000


@pytest.mark.skipif(find_chromium() is None, reason="chromium is not installed")
def test_the_browser_check_does_see_console_errors(tmp_path):
    """The harness itself: a page with a console.error and an uncaught exception is caught."""
    page = tmp_path / "bad.html"
    page.write_text("<html><body><p>x</p><script>console.error('boom'); undefinedFunction();</script></body></html>")
    result = inspect_page(page.as_uri(), "document.title")
    assert any("boom" in e for e in result.errors) and any("undefinedFunction" in e for e in result.errors)
