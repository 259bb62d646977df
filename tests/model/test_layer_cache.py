"""Frozen lower layers computed once: adapters only on the top layers, and a cache that gives the same
logits and gradients as running every layer."""

import numpy as np
import pytest
import torch
from conftest import tiny_config

from textlora.config import LoraConfig
from textlora.data.batching import encode
from textlora.data.labels import LabelMap
from textlora.errors import ConfigError
from textlora.model.adapters import build_model
from textlora.model.layer_cache import LayerCache, cache_blocker, first_trained_layer
from textlora.model.load import load_base
from textlora.train import train

LABELS = LabelMap(["neg", "neu", "pos"])
TEXTS = ["good day", "the bad chair was here", "a", "i love the great table and the door"]


def _model(tiny_models, kind, method="lora", top_layers=1, dropout=0.0):
    base = load_base(str(tiny_models[kind]), LABELS, dropout=dropout)
    model = build_model(base.model, method, LoraConfig(r=4, alpha=8, top_layers=top_layers), base.new_modules)
    with torch.no_grad():  # non-zero adapters, so the upper layers' LoRA path is exercised
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    return model, base.tokenizer


@pytest.mark.parametrize("kind", ["bert", "distilbert", "gpt2"])
def test_top_layers_puts_adapters_on_the_top_layers_only(tiny_models, kind):
    model, _ = _model(tiny_models, kind, top_layers=1)
    lora = [n for n, _ in model.named_parameters() if "lora_A" in n]
    assert lora and all((".1." in n) and (".0." not in n) for n in lora), lora  # tiny models have 2 layers
    assert first_trained_layer(model) == 1


def test_top_layers_beyond_the_model_says_how_many_layers(tiny_models):
    with pytest.raises(ConfigError, match="has 2 layers"):
        _model(tiny_models, "bert", top_layers=3)


def test_split_points_and_blockers(tiny_models):
    full, _ = _model(tiny_models, "bert", method="full")
    head, _ = _model(tiny_models, "bert", method="head")
    assert first_trained_layer(full) == 0 and cache_blocker(full, 0) == "every layer trains"
    assert first_trained_layer(head) == 2 and cache_blocker(head, 2) is None
    gpt2, _ = _model(tiny_models, "gpt2")
    assert "not 'gpt2'" in cache_blocker(gpt2, 1)
    noisy, _ = _model(tiny_models, "bert", dropout=0.1)
    assert "dropout" in cache_blocker(noisy, 1)


@pytest.mark.parametrize("kind,method", [("bert", "lora"), ("distilbert", "lora"), ("bert", "head"),
                                         ("distilbert", "head")])
def test_cached_forward_matches_every_layer(tiny_models, kind, method):
    model, tok = _model(tiny_models, kind, method)
    enc = encode(tok, TEXTS, 32)
    split_at = first_trained_layer(model)
    cache = LayerCache.build(model, {"train": enc}, tok.pad_token_id, split_at, batch_size=2)
    assert [h.shape[0] for h in cache.hidden["train"]] == enc.lengths
    model.train()
    idx = [3, 0, 2]  # unsorted lengths: padding inside the batch
    grads = []
    for cached in (False, True):
        model.zero_grad()
        if cached:
            logits = cache.forward(model, cache.inputs("train", enc, idx, tok.pad_token_id)).logits
        else:
            from textlora.data.batching import collate

            logits = model(**collate(enc, idx, tok.pad_token_id)).logits
        torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2])).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
        if not cached:
            ref = logits.detach()
    torch.testing.assert_close(logits.detach(), ref, atol=1e-5, rtol=1e-5)
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-5, rtol=1e-4)
    # the swap is undone: the model has all its layers and its embeddings again
    assert len(list(model.modules())) == len(list(_model(tiny_models, kind, method)[0].modules()))
    np.testing.assert_allclose(cache.logits(model, "train", enc, tok.pad_token_id, batch_size=3),
                               model.eval()(**tok(TEXTS, padding=True, return_tensors="pt")).logits.detach().numpy(),
                               atol=1e-5)


@pytest.mark.parametrize("method", ["lora", "head"])
def test_training_with_the_cache_matches_training_without(tiny_models, tiny_data, tmp_path, method, monkeypatch):
    built = []
    original = LayerCache.build.__func__
    monkeypatch.setattr(LayerCache, "build", classmethod(lambda cls, *a, **k: built.append(a[3]) or original(cls, *a, **k)))
    runs = {}
    for cached in (True, False):
        cfg = tiny_config(tiny_data, tiny_models["bert"], tmp_path / f"run-{cached}", method, epochs=2,
                          cache_frozen=cached, lr=1e-2 if method == "lora" else 5e-2)
        cfg.lora.top_layers = 1
        runs[cached] = np.load(train(cfg, progress=False).out / "predictions.npz")
    assert built == [1 if method == "lora" else 2]  # built once, by the cached run only
    for key in ("validation_logits", "test_logits"):
        np.testing.assert_allclose(runs[True][key], runs[False][key], atol=1e-4)
