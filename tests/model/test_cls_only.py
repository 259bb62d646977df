"""The last layer for [CLS] only: same logits and gradients as the stock forward, only where it applies."""

import pytest
import torch

from textlora.config import LoraConfig
from textlora.data.labels import LabelMap
from textlora.model.adapters import build_model
from textlora.model.cls_only import cls_only_last_layer, last_layer
from textlora.model.load import load_base

LABELS = LabelMap(["neg", "neu", "pos"])
TEXTS = ["good day", "the bad chair was here and there", "a", "i love the great table"]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("method", ["lora", "full"])
def test_same_logits_and_gradients(tiny_models, attn, method):
    base = load_base(str(tiny_models["bert"]), LABELS, attn_implementation=attn, dropout=0.0)
    model = build_model(base.model, method, LoraConfig(r=4, alpha=8), base.new_modules).train()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    batch = base.tokenizer(TEXTS, padding=True, return_tensors="pt")  # padded rows
    results = []
    for on in (False, True):
        model.zero_grad()
        with cls_only_last_layer(model, enabled=on) as applied:
            assert applied == on
            logits = model(**batch).logits
        torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 0])).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((logits.detach(), grads))
    torch.testing.assert_close(results[1][0], results[0][0], atol=1e-5, rtol=1e-5)
    assert results[0][1].keys() == results[1][1].keys()
    for name, g in results[0][1].items():
        torch.testing.assert_close(results[1][1][name], g, atol=1e-5, rtol=1e-4)
    assert "forward" not in vars(last_layer(model))  # undone after the block


@pytest.mark.parametrize("kind", ["distilbert", "gpt2"])
def test_other_heads_are_left_alone(tiny_models, kind):
    base = load_base(str(tiny_models[kind]), LABELS)
    assert last_layer(base.model) is None
    with cls_only_last_layer(base.model) as applied:
        assert not applied
