"""Baselines on the tiny word-list data: majority predicts the commonest class, TF-IDF + LR learns the words."""

import json

import numpy as np
from conftest import make_rows, write_jsonl

from textlora.baselines import majority, tfidf_logreg
from textlora.compare import run_baseline
from textlora.config import DataConfig
from textlora.data.splits import load_dataset


def test_majority_predicts_the_most_frequent_training_label(tmp_path):
    rows = make_rows(60, seed=1) + [{"text": "good day", "label": "pos"}] * 10
    write_jsonl(tmp_path / "train.jsonl", rows)
    write_jsonl(tmp_path / "test.jsonl", make_rows(30, seed=3))
    result = majority(load_dataset(DataConfig(path=str(tmp_path))))
    assert result.details["predicts"] == "pos"
    cm = np.array(result.metrics["test"]["confusion_matrix"])
    assert cm[:, 2].sum() == 30 and abs(result.metrics["test"]["accuracy"] - 1 / 3) < 1e-9
    assert result.params == 3 and result.metrics["test"]["loss"] > 0


def test_tfidf_logreg_learns_the_word_lists(tiny_data):
    result = tfidf_logreg(load_dataset(DataConfig(path=str(tiny_data))))
    assert result.metrics["test"]["accuracy"] > 0.9
    assert result.details["C"] in result.details["C_grid"] and result.size_bytes > 1000
    assert result.params == 3 * (result.details["vocabulary"] + 1)


def test_run_baseline_saves_its_result(tiny_data, tmp_path):
    data = DataConfig(path=str(tiny_data), max_train_samples=60).__dict__
    result = run_baseline("majority", data, tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "result.json").read_text())
    assert saved["data"] == data and saved["metrics"] == json.loads(json.dumps(result.metrics))
    assert result.peak_rss_mb > 10
