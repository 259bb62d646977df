"""Calibrated probabilities: training decides the temperature on validation, `predict_proba` (and so `predict`, the
CLI and the server) applies it, `calibrate=False` / `--no-calibrate` opts out, older runs load as before."""

import json
import shutil

import numpy as np
import pytest
from conftest import make_rows, tiny_config, write_jsonl

from textlora.calibration import expected_calibration_error, fit_temperature, temperature_record
from textlora.cli import main
from textlora.errors import ModelError
from textlora.metrics import softmax
from textlora.predict import Predictor, load
from textlora.train import train

TEXTS = ["good happy day", "the awful chair", "window", "i hate this so much .", "love it !"]


@pytest.fixture(scope="module")
def run(tiny_models, tmp_path_factory):
    """One tiny single-label LoRA run (a couple of seconds)."""
    root = tmp_path_factory.mktemp("calib")
    for split, n, seed in (("train", 60, 1), ("validation", 30, 2), ("test", 15, 3)):
        write_jsonl(root / "data" / f"{split}.jsonl", make_rows(n, seed=seed))
    train(tiny_config(root / "data", tiny_models["bert"], root / "run", epochs=2), progress=False)
    return root / "run"


def _with_calibration(run, tmp_path, record):
    """A copy of `run` whose calibration.json is `record` (None: without the file, as runs before it)."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "calibration.json").unlink()
    if record is not None:
        (copy / "calibration.json").write_text(json.dumps(record))
    return copy


def test_training_records_the_decision_on_validation(run):
    record = json.loads((run / "calibration.json").read_text())
    assert set(record) == {"temperature", "ece_before", "ece_after", "applied"}
    assert json.loads((run / "metrics.json").read_text())["calibration"] == record
    with np.load(run / "predictions.npz") as z:  # the final validation logits the decision was made on
        logits, y = z["validation_logits"], z["validation_labels"]
    assert record["temperature"] == pytest.approx(fit_temperature(logits, y))
    assert record["ece_before"] == pytest.approx(expected_calibration_error(softmax(logits), y))
    assert record["ece_after"] == pytest.approx(expected_calibration_error(softmax(logits / record["temperature"]), y))
    assert record["applied"] == (record["ece_after"] < record["ece_before"])


def test_the_record_applies_a_temperature_only_when_it_lowers_ece():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    logits = rng.normal(size=(300, 3))
    logits[np.arange(300), y] += 1.0
    over = temperature_record(logits * 8, y)  # far too confident: a temperature > 1 helps
    assert over["applied"] and over["temperature"] > 1 and over["ece_after"] < over["ece_before"]
    perfect = np.zeros((4, 2))  # nothing to gain: every temperature gives the same scores
    assert not temperature_record(perfect, [0, 1, 0, 1])["applied"]


def test_predict_proba_is_the_softmax_of_logits_over_t_and_labels_do_not_change(run, tmp_path):
    t = 2.5
    copy = _with_calibration(run, tmp_path, {"temperature": t, "ece_before": 0.2, "ece_after": 0.1, "applied": True})
    clf = load(copy)
    logits = clf.logits(TEXTS)
    assert clf.temperature_ == t
    np.testing.assert_allclose(clf.predict_proba(TEXTS), softmax(logits / t), rtol=1e-6)
    raw = load(copy, calibrate=False)
    assert raw.temperature_ == 1.0
    np.testing.assert_allclose(raw.predict_proba(TEXTS), softmax(logits), rtol=1e-6)
    assert not np.allclose(clf.predict_proba(TEXTS), raw.predict_proba(TEXTS))  # the opt-out really differs
    assert clf.predict(TEXTS) == raw.predict(TEXTS)


def test_the_trained_run_applies_its_own_record(run):
    record = json.loads((run / "calibration.json").read_text())
    clf = Predictor.load(run)
    t = record["temperature"] if record["applied"] else 1.0
    np.testing.assert_allclose(clf.predict_proba(TEXTS), softmax(clf.logits(TEXTS) / t), rtol=1e-6)


@pytest.mark.parametrize("record", [None, {"temperature": 3.0, "ece_before": 0.1, "ece_after": 0.2, "applied": False}])
def test_a_run_without_calibration_or_not_applied_gives_the_raw_softmax(run, tmp_path, record):
    clf = Predictor.load(_with_calibration(run, tmp_path, record))
    assert clf.temperature_ == 1.0
    np.testing.assert_allclose(clf.predict_proba(TEXTS), softmax(clf.logits(TEXTS)), rtol=1e-6)


@pytest.mark.parametrize("t", [0, -1.5, "2", None])
def test_a_broken_temperature_is_one_line_before_the_model_loads(run, tmp_path, t):
    copy = _with_calibration(run, tmp_path, {"temperature": t, "applied": True})
    with pytest.raises(ModelError, match=r"calibration.json has temperature .*, expected a finite number > 0; "
                                         r"retrain the run, or load it with calibrate=False"):
        Predictor.load(copy)
    assert Predictor.load(copy, calibrate=False).temperature_ == 1.0


def test_cli_predict_applies_the_temperature_unless_no_calibrate(run, tmp_path, capsys):
    copy = _with_calibration(run, tmp_path, {"temperature": 4.0, "ece_before": 0.2, "ece_after": 0.1, "applied": True})
    logits = Predictor.load(copy).logits(TEXTS[:2])
    got = {}
    for flags in ([], ["--no-calibrate"]):
        assert main(["predict", str(copy), *TEXTS[:2], "--json", *flags]) == 0
        rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
        labels = sorted(rows[0]["scores"])
        got[bool(flags)] = np.array([[r["scores"][n] for n in labels] for r in rows])
    np.testing.assert_allclose(got[False], softmax(logits / 4.0), atol=2e-6)  # the CLI rounds to 6 digits
    np.testing.assert_allclose(got[True], softmax(logits), atol=2e-6)


def test_serve_returns_calibrated_scores_and_can_opt_out(run, tmp_path):
    pytest.importorskip("fastapi")
    from starlette.testclient import TestClient

    from textlora.serve.app import build_app
    from textlora.serve.options import ServeOptions
    from textlora.serve.registry import Registry, RunSpec

    copy = _with_calibration(run, tmp_path, {"temperature": 3.0, "ece_before": 0.2, "ece_after": 0.1, "applied": True})
    logits = Predictor.load(copy).logits(TEXTS)
    for calibrate, t in ((True, 3.0), (False, 1.0)):
        options = ServeOptions(calibrate=calibrate)
        registry = Registry.load([RunSpec.parse(f"emo={copy}")], calibrate=options.calibrate)
        with TestClient(build_app(registry, options)) as client:
            body = client.post("/v1/classify", json={"model": "emo", "texts": TEXTS}).json()
            info = client.get("/v1/models").json()["models"][0]
        labels = sorted(body["predictions"][0]["scores"])
        scores = np.array([[p["scores"][n] for n in labels] for p in body["predictions"]])
        np.testing.assert_allclose(scores, softmax(logits / t), atol=2e-6)
        assert info["temperature"] == t
        assert [p["label"] for p in body["predictions"]] == [labels[i] for i in logits.argmax(axis=1)]


def test_serve_has_a_no_calibrate_flag():
    from textlora.cli import build_parser

    args = build_parser().parse_args(["serve", "runs/x", "--no-calibrate"])
    assert args.calibrate is False
    assert build_parser().parse_args(["serve", "runs/x"]).calibrate is True


def test_multi_label_runs_stay_uncalibrated(tiny_models, tmp_path):
    rows = [{"text": r["text"], "labels": [r["label"]] + (["neu"] if i % 3 == 0 else [])}
            for i, r in enumerate(make_rows(45, seed=1))]
    for split, part in (("train", rows[:30]), ("validation", rows[30:39]), ("test", rows[39:])):
        write_jsonl(tmp_path / "data" / f"{split}.jsonl", part)
    cfg = tiny_config(tmp_path / "data", tiny_models["bert"], tmp_path / "run", epochs=1)
    result = train(cfg.with_overrides({"data.label_column": "labels"}), progress=False)
    assert "calibration" not in result.metrics and not (tmp_path / "run" / "calibration.json").exists()
    clf = Predictor.load(tmp_path / "run")
    assert clf.temperature_ == 1.0
    np.testing.assert_allclose(clf.predict_proba(TEXTS), 1 / (1 + np.exp(-clf.logits(TEXTS))), rtol=1e-5)
