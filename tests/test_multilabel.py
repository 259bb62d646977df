"""Multi-label runs (GoEmotions style) on a tiny model: BCE training, thresholds tuned on validation
and saved with the run, sigmoid scores and label lists at prediction, and the metrics functions."""

import json
import random
import subprocess
import sys

import numpy as np
import pytest
from conftest import FILLER, WORDS, tiny_config, write_jsonl

from textlora.metrics import multi_hot, multilabel_metrics, tune_thresholds
from textlora.predict import Predictor, evaluate_split
from textlora.train import train

TEXTS = ["good great day", "the bad awful chair", "a table and a door", "good table", "sad wall awful"]


def multilabel_rows(n: int, seed: int) -> list[dict]:
    """Each text draws words from one or two of the lists; its labels are the lists it drew from."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        names = [["pos"], ["neg"], ["neu"], ["pos", "neu"], ["neg", "neu"]][i % 5]
        words = rng.sample(FILLER, 2) + [w for name in names for w in rng.sample(WORDS[name], 2)]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "labels": names})
    return rows


@pytest.fixture(scope="module")
def multilabel_run(tiny_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("ml")
    for split, (n, seed) in {"train": (100, 1), "validation": (40, 2), "test": (40, 3)}.items():
        write_jsonl(root / "data" / f"{split}.jsonl", multilabel_rows(n, seed))
    cfg = tiny_config(root / "data", tiny_models["bert"], root / "run", epochs=3)
    cfg = cfg.with_overrides({"data.label_column": "labels"})
    result = train(cfg, progress=False)
    return root, result


def test_multilabel_run_trains_and_reports(multilabel_run):
    root, result = multilabel_run
    run = root / "run"
    m = json.loads((run / "metrics.json").read_text())
    for split in ("validation", "test"):
        for key in ("f1_micro", "f1_macro", "f1_weighted", "f1_samples", "subset_accuracy",
                    "single_label_accuracy", "per_class", "loss"):
            assert key in m[split] and key in m["base"][split]
    assert m["test"]["n_single_label"] == 24  # 3 of every 5 rows carry one label
    assert m["history"][-1]["train_loss"] < m["history"][0]["train_loss"]
    thresholds = json.loads((run / "thresholds.json").read_text())
    assert sorted(thresholds) == ["neg", "neu", "pos"] and all(0.05 <= t <= 0.95 for t in thresholds.values())
    assert json.loads((run / "labels.json").read_text())["multi_label"] is True
    assert np.load(run / "predictions.npz")["test_labels"].shape == (40, 3)


def test_predictor_gives_sigmoid_scores_and_label_lists(multilabel_run):
    clf = Predictor.load(multilabel_run[0] / "run")
    proba = clf.predict_proba(TEXTS)
    assert proba.shape == (5, 3) and not np.allclose(proba.sum(axis=1), 1.0)
    labels = clf.predict(TEXTS)
    assert all(isinstance(x, list) for x in labels)
    assert labels == [[n for n, p, t in zip(clf.labels_, row, clf.thresholds_) if p >= t] for row in proba]
    assert isinstance(clf.predict("good"), list)
    m = evaluate_split(clf, str(multilabel_run[0] / "data"), "test")
    assert m["f1_macro"] == pytest.approx(multilabel_run[1].metrics["test"]["f1_macro"])


def test_thresholds_survive_a_new_process(multilabel_run):
    run = multilabel_run[0] / "run"
    here = Predictor.load(run).predict(TEXTS)
    code = ("import json, sys; from textlora.predict import Predictor; "
            f"print(json.dumps(Predictor.load(sys.argv[1]).predict({TEXTS!r})))")
    out = subprocess.run([sys.executable, "-c", code, str(run)], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == here


def test_label_sep_strings_are_multilabel(tiny_models, tmp_path):
    rows = [{"text": r["text"], "label": ",".join(r["labels"])} for r in multilabel_rows(60, 4)]
    write_jsonl(tmp_path / "data.jsonl", rows)
    cfg = tiny_config(tmp_path / "data.jsonl", tiny_models["gpt2"], tmp_path / "run", epochs=1,
                      eval_base=False).with_overrides({"data.label_sep": ","})
    result = train(cfg, progress=False)
    assert "f1_samples" in result.metrics["test"]
    assert (tmp_path / "run" / "thresholds.json").is_file()


def test_tune_thresholds_maximizes_per_label_f1():
    y = np.array([[1, 0], [1, 0], [0, 1], [0, 0]])
    scores = np.array([[0.30, 0.9], [0.35, 0.1], [0.1, 0.8], [0.2, 0.7]])
    t = tune_thresholds(y, scores)
    assert t[0] == pytest.approx(0.3)  # 0.25 and 0.3 both give F1 = 1; the one closer to 0.5 wins
    assert t[1] == pytest.approx(0.8) or t[1] == pytest.approx(0.75)
    m = multilabel_metrics(y, scores, ["a", "b"], t)
    assert m["per_class"]["a"]["f1"] == 1.0
    assert tune_thresholds(np.zeros((3, 1)), np.ones((3, 1)) * 0.9).tolist() == [0.5]  # no positives: keep 0.5


def test_multilabel_metrics_known_values():
    y = multi_hot([[0], [0, 1], [1], []], 2)
    scores = np.array([[0.9, 0.1], [0.8, 0.3], [0.2, 0.7], [0.1, 0.2]])
    m = multilabel_metrics(y, scores, ["a", "b"])
    assert m["accuracy"] == 0.75  # row 2 misses b
    assert m["f1_micro"] == pytest.approx(2 * 3 / (2 * 3 + 1))
    assert m["n_single_label"] == 2 and m["single_label_accuracy"] == 1.0
    assert m["per_class"]["b"]["recall"] == 0.5


def test_serving_uses_the_saved_thresholds(multilabel_run):
    pytest.importorskip("fastapi")
    from textlora.serve.app import _prediction
    from textlora.serve.registry import Registry, RunSpec

    run = multilabel_run[0] / "run"
    reg = Registry.load([RunSpec("ml", run)])
    scores = reg.scores("ml", TEXTS)
    clf = Predictor.load(run)
    np.testing.assert_allclose(scores, clf.predict_proba(TEXTS), atol=1e-5)
    served = [_prediction(reg.runs["ml"].labels, row, reg.runs["ml"].thresholds)["labels"] for row in scores]
    assert served == clf.predict(TEXTS)


def test_cli_predict_prints_label_lists_and_export_writes_a_folder(multilabel_run, tmp_path, capsys):
    from textlora.cli import main

    run = multilabel_run[0] / "run"
    assert main(["predict", str(run), *TEXTS[:2], "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["label"] for r in rows] == Predictor.load(run).predict(TEXTS[:2])
    assert main(["export", str(run), "--out", str(tmp_path / "x")]) == 0
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "x"))
    assert model.config.problem_type == "multi_label_classification"


def test_epochs_are_compared_at_tuned_thresholds():
    """Early in training every score sits below 0.5: at 0.5 each epoch scores macro-F1 0 and the first one
    would be kept; each epoch's validation uses thresholds tuned on its own scores instead."""
    from types import SimpleNamespace

    from textlora.data.labels import LabelMap
    from textlora.train import _metrics

    y = [[0], [1], [0, 1], [1]]
    prep = SimpleNamespace(multi=True, thresholds=None, y={"validation": y},
                           data=SimpleNamespace(label_map=LabelMap(["a", "b"], multi_label=True)))
    p = np.array([[0.22, 0.04], [0.01, 0.32], [0.22, 0.32], [0.01, 0.32]])  # all below 0.5
    logits = np.log(p / (1 - p))
    assert _metrics(logits, prep, "validation")["f1_macro"] == 0.0
    assert _metrics(logits, prep, "validation", tune=True)["f1_macro"] == 1.0
