"""model.long_text=windows: overlapping windows, every window trained with its text's label, logits pooled per text."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import FILLER, WORDS, _bert_tokenizer, _gpt2_tokenizer, tiny_config, write_jsonl

from textlora.config import ModelConfig, RunConfig
from textlora.data.batching import Encoded, encode, encode_for, encode_windows
from textlora.errors import ConfigError
from textlora.predict import Predictor
from textlora.run_folder import Run
from textlora.train import train


@pytest.fixture(scope="module")
def bert_tok(tmp_path_factory):
    return _bert_tokenizer(tmp_path_factory.mktemp("tok"))


def _words(n: int) -> str:
    return " ".join(FILLER[i % len(FILLER)] for i in range(n))


def test_windows_cover_the_text_with_the_stride_as_overlap(bert_tok):
    text = " ".join(f"{w}" for w in (FILLER * 5)[:37])  # 37 tokens, each word one token
    body = bert_tok(text, add_special_tokens=False)["input_ids"]
    enc = encode_windows(bert_tok, [text], max_length=12, stride=3)
    cls, sep = bert_tok.cls_token_id, bert_tok.sep_token_id
    assert enc.doc == [0] * len(enc) and len(enc) > 1
    bodies = []
    for ids in enc.input_ids:
        assert len(ids) <= 12 and ids[0] == cls and ids[-1] == sep
        bodies.append(ids[1:-1])
    for a, b in zip(bodies, bodies[1:]):
        assert a[-3:] == b[:3]  # consecutive windows share `stride` tokens
    covered = bodies[0] + [t for b in bodies[1:] for t in b[3:]]
    assert covered == body  # every token, in order, once the overlaps are removed
    assert len(body) == 37 and len(enc) == 5  # bodies of 10 tokens moving by 7: 0-10, 7-17, 14-24, 21-31, 28-37


def test_a_short_text_is_one_row_as_with_truncation(bert_tok):
    texts = ["good table", _words(5)]
    win = encode_windows(bert_tok, texts, max_length=16, stride=4)
    assert win.input_ids == encode(bert_tok, texts, 16).input_ids and win.doc == [0, 1]


def test_max_windows_bounds_a_huge_text(bert_tok):
    enc = encode_windows(bert_tok, [_words(100_000), "good"], max_length=10, stride=2, max_windows=3)
    assert enc.doc == [0, 0, 0, 1]


def test_gpt2_windows_have_no_special_tokens(tmp_path):
    tok = _gpt2_tokenizer(tmp_path)
    text = " ".join(["good"] * 25)
    enc = encode_windows(tok, [text], max_length=10, stride=2)
    assert all(len(ids) <= 10 for ids in enc.input_ids) and sum(len(i) for i in enc.input_ids) >= 25


def test_per_text_pools_mean_or_max_and_expand_repeats_labels():
    rows = np.array([[1.0, 0.0], [3.0, -2.0], [5.0, 5.0]], dtype=np.float32)
    mean = Encoded([[1], [2], [3]], doc=[0, 0, 1], pool="mean")
    assert np.allclose(mean.per_text(rows), [[2.0, -1.0], [5.0, 5.0]])
    assert np.allclose(Encoded([[1], [2], [3]], doc=[0, 0, 1], pool="max").per_text(rows), [[3.0, 0.0], [5.0, 5.0]])
    assert mean.expand(["a", "b"]) == ["a", "a", "b"] and mean.texts == 2
    assert Encoded([[1], [2]]).per_text(rows[:2]) is not None and Encoded([[1], [2]]).texts == 2


def test_stride_must_be_under_half_the_window():
    with pytest.raises(ConfigError, match="model.stride must be under half"):
        ModelConfig(max_length=32, stride=16)
    with pytest.raises(ConfigError, match="long_text"):
        ModelConfig(long_text="chunks")


def test_encode_for_reads_the_model_config(bert_tok):
    text = _words(60)
    assert len(encode_for(bert_tok, [text], ModelConfig(max_length=16))) == 1
    windows = encode_for(bert_tok, [text], ModelConfig(max_length=16, long_text="windows"))
    assert len(windows) > 1 and windows.texts == 1


def _long_rows(n: int, seed: int) -> list[dict]:
    """Texts whose label word sits only near their end, past a first window of 16 tokens."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = ("pos", "neg")[i % 2]
        words = [FILLER[j] for j in rng.integers(0, len(FILLER), 30)] + list(rng.choice(WORDS[label], 2))
        rows.append({"text": " ".join(words), "label": label})
    return rows


def test_windows_train_evaluate_and_predict_per_text(tmp_path, tiny_models):
    data = tmp_path / "data"
    for split, (n, seed) in {"train": (40, 1), "validation": (12, 2), "test": (12, 3)}.items():
        write_jsonl(data / f"{split}.jsonl", _long_rows(n, seed))
    cfg = tiny_config(data, tiny_models["bert"], tmp_path / "run", epochs=1, eval_base=False)
    cfg = cfg.with_overrides({"model.max_length": 16, "model.long_text": "windows"})
    result = train(cfg, progress=False)
    assert result.metrics["test"]["accuracy"] >= 0
    run = Run.open(tmp_path / "run")
    assert run.config.model.stride == 4  # the resolved stride is recorded
    logits, _ = run.predictions()
    assert logits["test"].shape == (12, 2)  # one row per text, not per window

    clf = Predictor.load(tmp_path / "run")
    texts = [r["text"] for r in _long_rows(3, 9)] + ["good"]
    got = clf.logits(texts)
    assert got.shape == (4, 2)
    enc = encode_windows(clf.tokenizer, texts, 16, 4)
    with torch.inference_mode():
        rows = np.concatenate([clf.model(input_ids=torch.tensor([ids])).logits.float().numpy()
                               for ids in enc.input_ids])
    assert np.allclose(got, enc.per_text(rows), atol=1e-5)  # the mean of each text's windows, computed apart


def test_windows_is_part_of_the_config_round_trip(tmp_path):
    cfg = RunConfig.from_dict({"model": {"long_text": "windows", "window_pool": "max", "max_length": 64},
                               "out": str(tmp_path / "x")}).resolved()
    path = tmp_path / "c.yaml"
    cfg.to_yaml(path)
    back = RunConfig.from_yaml(path)
    assert back.model.long_text == "windows" and back.model.window_pool == "max" and back.model.stride == 16
