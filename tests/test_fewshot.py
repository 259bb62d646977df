"""Few labels: data.shots_per_class sampling, and the zero-shot, embed and setfit rungs on a tiny random BERT."""

import json
from collections import Counter

import numpy as np
import pytest
from conftest import make_rows, write_jsonl

from textlora.config import DataConfig
from textlora.data.splits import load_dataset
from textlora.errors import ConfigError, DataError
from textlora.fewshot import (
    EncoderOptions,
    SetFitOptions,
    embed_logreg,
    label_text,
    load_encoder,
    sample_pairs,
    setfit,
    train_pairs,
    zero_shot,
)


def _uneven(folder, rare: int = 2):
    """90 rows of pos/neg/neu plus only `rare` rows of a fourth class 'odd'."""
    rows = make_rows(90, seed=1) + [{"text": "the door was odd", "label": "odd"}] * rare
    write_jsonl(folder / "train.jsonl", rows)
    write_jsonl(folder / "validation.jsonl", make_rows(30, seed=2) + [{"text": "odd wall", "label": "odd"}])
    write_jsonl(folder / "test.jsonl", make_rows(30, seed=3))
    return folder


def test_shots_keep_n_rows_per_class_or_all_of_a_smaller_class(tmp_path):
    data = load_dataset(DataConfig(path=str(_uneven(tmp_path)), shots_per_class=5))
    assert Counter(data.train.labels) == {"pos": 5, "neg": 5, "neu": 5, "odd": 2}
    assert len(data.validation) == 31 and len(data.test) == 30  # validation and test stay as they are
    assert "5 per class, seed 42" in data.train.source
    assert data.label_map.labels == ["neg", "neu", "odd", "pos"]


def test_shots_are_seeded_by_shots_seed_else_split_seed(tmp_path):
    folder = _uneven(tmp_path)

    def rows(**kw):
        return load_dataset(DataConfig(path=str(folder), shots_per_class=4, **kw)).train.texts

    assert rows(shots_seed=1) == rows(shots_seed=1)
    assert rows(shots_seed=1) != rows(shots_seed=2)
    assert rows() == rows(shots_seed=42) == rows(split_seed=42)
    assert rows(split_seed=7) == rows(shots_seed=7)


def test_shots_on_multi_label_data_give_every_label_at_least_n(tmp_path):
    rng = np.random.default_rng(0)
    labels = ["a", "b", "c"]
    rows = [{"text": f"row {i}", "label": list(rng.choice(labels, size=rng.integers(1, 3), replace=False))}
            for i in range(60)]
    for split in ("train", "validation", "test"):
        write_jsonl(tmp_path / f"{split}.jsonl", rows)
    data = load_dataset(DataConfig(path=str(tmp_path), shots_per_class=3))
    counts = Counter(x for v in data.train.labels for x in v)
    assert all(counts[x] >= 3 for x in labels) and len(data.train) <= 9


def test_shots_must_be_positive():
    with pytest.raises(ConfigError, match="data.shots_per_class"):
        DataConfig(path="x", shots_per_class=0)


@pytest.fixture(scope="module")
def few(tiny_models, tmp_path_factory):
    from conftest import write_splits

    folder = write_splits(tmp_path_factory.mktemp("few") / "data")
    data = load_dataset(DataConfig(path=str(folder), shots_per_class=4))
    return data, EncoderOptions(model=str(tiny_models["bert"]), max_length=32, device="cpu")


def _check_shape(result, k: int = 3):
    for split, n in (("validation", 30), ("test", 30)):
        m = result.metrics[split]
        assert 0 <= m["accuracy"] <= 1 and 0 <= m["f1_macro"] <= 1 and np.isfinite(m["loss"])
        assert np.array(m["confusion_matrix"]).shape == (k, k) and np.array(m["confusion_matrix"]).sum() == n


def test_zero_shot_uses_no_training_rows(few):
    data, options = few
    result = zero_shot(data, options)
    _check_shape(result)
    assert result.name == "zero-shot" and result.params == 0
    assert result.details["training_rows_used"] == 0 and result.details["label_texts"] == ["neg", "neu", "pos"]


def test_embed_fits_a_head_on_the_few_rows(few):
    data, options = few
    result = embed_logreg(data, options)
    _check_shape(result)
    assert result.params == 3 * (16 + 1)  # tiny BERT's 16-wide embeddings, one row per class, plus intercepts
    assert result.details["C"] in result.details["C_grid"] and result.details["train_rows"] == 12


def test_setfit_trains_pairs_then_a_head(few):
    data, options = few
    result = setfit(data, options, SetFitOptions(num_iterations=2, batch_size=8))
    _check_shape(result)
    assert result.details["pairs"] == 2 * 2 * 12 and result.details["num_iterations"] == 2
    assert np.isfinite(result.details["final_loss"])
    capped = setfit(data, options, SetFitOptions(num_iterations=20, max_pairs=50, batch_size=16))
    assert capped.details["num_iterations"] == 2 and capped.details["pairs"] == 48


def test_train_pairs_moves_the_body(few):
    import torch

    data, options = few
    encoder = load_encoder(options)
    before = [p.detach().clone() for p in encoder.parameters()]
    ids = data.label_map.encode(data.train.labels)
    train_pairs(encoder, data.train.texts, sample_pairs(ids, 1, 0), SetFitOptions(batch_size=8, lr=1e-3), 0)
    assert any(not torch.equal(a, b) for a, b in zip(before, encoder.parameters()))


def test_sample_pairs_are_positive_within_a_label_and_negative_across():
    ids = [0, 0, 1, 1, 2]
    pairs = sample_pairs(ids, rounds=3, seed=0)
    assert len(pairs) == 3 * 5 * 2 and pairs == sample_pairs(ids, rounds=3, seed=0)
    assert all((ids[i] == ids[j]) == (t == 1.0) for i, j, t in pairs)
    assert all(i != j for i, j, t in pairs if ids[i] != 2)  # only the class of one row pairs a row with itself
    multi = sample_pairs([[0, 1], [1], [2]], rounds=1, seed=0)
    assert all(t == (1.0 if {i, j} <= {0, 1} or i == j else 0.0) for i, j, t in multi)


def test_label_text():
    assert label_text("MeanOfTransportation") == "mean of transportation"
    assert label_text("sadness") == "sadness" and label_text("not_sure") == "not sure"


def test_multi_label_embed_works_and_zero_shot_refuses(tiny_models, tmp_path):
    rows = [{"text": r["text"], "label": [r["label"]] + (["neu"] if i % 3 == 0 else [])}
            for i, r in enumerate(make_rows(60, seed=1))]
    for split in ("train", "validation", "test"):
        write_jsonl(tmp_path / f"{split}.jsonl", rows[:30] if split != "train" else rows)
    data = load_dataset(DataConfig(path=str(tmp_path), shots_per_class=6))
    options = EncoderOptions(model=str(tiny_models["bert"]), max_length=32, device="cpu")
    result = embed_logreg(data, options)
    assert 0 <= result.metrics["test"]["f1_macro"] <= 1 and result.params == 3 * 17
    with pytest.raises(DataError, match="zero-shot rung takes single-label"):
        zero_shot(data, options)


def test_compare_cli_with_shots_runs_the_embedding_rungs(tiny_models, tiny_data, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "textlora.cli", "compare", "--baselines", "--rungs", "embed,zero-shot", "--shots",
           "4", "--data", str(tiny_data), "--model", str(tiny_models["bert"]), "--max-length", "32", "--device",
           "cpu", "--out", str(tmp_path / "cmp"), "--quiet"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    names = [line.split()[0] for line in done.stdout.splitlines()[2:] if line and not line.startswith("wrote")]
    assert names == ["embed", "zero-shot"]
    saved = json.loads((tmp_path / "cmp" / "ladder" / "embed" / "result.json").read_text())
    assert saved["data"]["shots_per_class"] == 4 and saved["details"]["train_rows"] == 12
    assert saved["encoder"] == {"model": str(tiny_models["bert"]), "max_length": 32, "device": "cpu", "seed": 42}


def test_unknown_rung_lists_the_few_label_rungs(tmp_path):
    from textlora.compare import compare

    with pytest.raises(ConfigError, match="unknown baseline rung") as err:
        compare([], tmp_path / "o", ladder_config=object(), rungs=("svm",))
    assert all(r in str(err.value) for r in ("zero-shot", "embed", "setfit"))
