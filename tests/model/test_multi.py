"""`SharedBase`: LoRA runs with different label sets and a head-only run on one tiny BERT in memory."""

import numpy as np
import pytest
from conftest import make_rows, tiny_config, write_jsonl

from textlora.data.batching import encode
from textlora.errors import ModelError
from textlora.model.inference import forward_logits
from textlora.model.multi import SharedBase
from textlora.predict import Predictor
from textlora.train import train

TEXTS = ["good happy day", "the awful chair", "window", "i hate this so much ."]


def test_runs_on_one_base_match_each_run_loaded_alone(tiny_models, tmp_path):
    runs = {}
    for name, method, labels in (("three", "lora", ("pos", "neg", "neu")), ("two", "lora", ("pos", "neg")),
                                 ("head", "head", ("pos", "neg"))):
        data = tmp_path / f"data-{name}"
        for split, n, seed in (("train", 45, 1), ("validation", 12, 2), ("test", 12, 3)):
            write_jsonl(data / f"{split}.jsonl", make_rows(n, seed=seed, labels=labels))
        train(tiny_config(data, tiny_models["bert"], tmp_path / name, method, epochs=1), progress=False)
        runs[name] = Predictor.load(tmp_path / name)

    shared = SharedBase.load(str(tiny_models["bert"]), runs["three"].label_map)
    shared.add_lora("three", tmp_path / "three")
    shared.add_lora("two", tmp_path / "two")
    shared.add_head("head", tmp_path / "head")
    for name in ("three", "two", "head", "three", "head", "two"):  # every switch: adapter on/off, head size
        clf = runs[name]
        with shared.activate(name) as model:
            got = forward_logits(model, encode(clf.tokenizer, TEXTS, 32), clf.tokenizer.pad_token_id)
        np.testing.assert_allclose(got, clf.logits(TEXTS), atol=1e-5)

    with pytest.raises(ModelError, match="already on this base"):
        shared.add_head("head", tmp_path / "head")
    with pytest.raises(ModelError, match="adapter_config.json or adapter_model.safetensors is missing"):
        shared.add_lora("x", tmp_path / "head")
    with pytest.raises(KeyError, match="holds \\['three', 'two', 'head'\\]"):
        with shared.activate("nope"):
            pass
