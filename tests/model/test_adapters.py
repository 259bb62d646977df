"""Methods on tiny BERT, DistilBERT and GPT-2: what trains, what stays frozen, what is new."""

import pytest
import torch

from textlora.config import LoraConfig
from textlora.data.labels import LabelMap
from textlora.model.adapters import build_model, count_params, head_modules, lora_targets
from textlora.model.load import load_base

LABELS = LabelMap(["neg", "neu", "pos"])
EXPECTED_NEW = {"bert": ["classifier"], "distilbert": ["classifier", "pre_classifier"], "gpt2": ["score"]}


def _step(model, tokenizer):
    batch = tokenizer(["good day", "the bad chair was here"], padding=True, return_tensors="pt")
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    loss = torch.nn.functional.cross_entropy(model(**batch).logits, torch.tensor([2, 0]))
    loss.backward()
    opt.step()


@pytest.mark.parametrize("kind", ["bert", "distilbert", "gpt2"])
def test_new_modules_are_found(tiny_models, kind):
    base = load_base(str(tiny_models[kind]), LABELS)
    assert base.new_modules == EXPECTED_NEW[kind]
    assert base.model.config.pad_token_id == base.tokenizer.pad_token_id is not None


@pytest.mark.parametrize("kind", ["bert", "distilbert", "gpt2"])
def test_lora_step_keeps_base_weights_and_trains_head(tiny_models, kind):
    base = load_base(str(tiny_models[kind]), LABELS)
    model = build_model(base.model, "lora", LoraConfig(r=4, alpha=8), base.new_modules)
    before = {k: v.clone() for k, v in model.named_parameters()}
    frozen = [k for k, p in model.named_parameters() if not p.requires_grad]
    _step(model, base.tokenizer)
    after = dict(model.named_parameters())
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    changed = {k for k in after if not torch.equal(before[k], after[k])}
    assert any("lora_B" in k for k in changed)
    for new in EXPECTED_NEW[kind]:
        assert any(f"{new}.modules_to_save" in k for k in changed), f"{new} did not train"
    assert all("lora_" in k or "modules_to_save" in k for k in changed)


@pytest.mark.parametrize("kind", ["bert", "distilbert", "gpt2"])
def test_lora_is_a_no_op_at_init(tiny_models, kind):
    base = load_base(str(tiny_models[kind]), LABELS)
    batch = base.tokenizer(["good day", "bad"], padding=True, return_tensors="pt")
    base.model.eval()
    ref = base.model(**batch).logits.detach().clone()
    model = build_model(base.model, "lora", LoraConfig(r=4), base.new_modules).eval()
    torch.testing.assert_close(model(**batch).logits, ref)


@pytest.mark.parametrize("kind", ["bert", "distilbert", "gpt2"])
def test_head_method_freezes_body(tiny_models, kind):
    base = load_base(str(tiny_models[kind]), LABELS)
    model = build_model(base.model, "head", LoraConfig(), base.new_modules)
    trainable = {k for k, p in model.named_parameters() if p.requires_grad}
    heads = head_modules(model, base.new_modules)
    assert trainable and all(any(k.startswith(h + ".") for h in heads) for k in trainable)
    before = {k: v.clone() for k, v in model.named_parameters()}
    _step(model, base.tokenizer)
    for k, p in model.named_parameters():
        assert torch.equal(before[k], p) == (k not in trainable)


@pytest.mark.parametrize("kind", ["bert", "distilbert", "gpt2"])
def test_full_trains_everything(tiny_models, kind):
    base = load_base(str(tiny_models[kind]), LABELS)
    model = build_model(base.model, "full", LoraConfig(), base.new_modules)
    n = count_params(model)
    assert n.trainable == n.total


def test_default_lora_targets_per_architecture(tiny_models):
    for kind, expected in {"bert": {"query", "key", "value", "dense"},
                           "distilbert": {"q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"},
                           "gpt2": {"c_attn", "c_proj", "c_fc"}}.items():
        base = load_base(str(tiny_models[kind]), LABELS)
        heads = head_modules(base.model, base.new_modules)
        targets = lora_targets(base.model, None, heads)
        assert {t.rsplit(".", 1)[-1] for t in targets} == expected
        assert not any(t.startswith(tuple(heads)) for t in targets)


def test_unknown_target_modules_say_what_exists(tiny_models):
    from textlora.errors import ConfigError

    base = load_base(str(tiny_models["bert"]), LABELS)
    with pytest.raises(ConfigError, match=r"no linear layer of this bert matches lora.target_modules=\['q_proj'\]"):
        build_model(base.model, "lora", LoraConfig(target_modules=["q_proj"]), base.new_modules)


def test_gpt2_pools_last_real_token_with_right_padding(tiny_models):
    base = load_base(str(tiny_models["gpt2"]), LABELS)
    model = base.model.eval()
    alone = base.tokenizer(["good day"], return_tensors="pt")
    padded = base.tokenizer(["good day", "the bad chair was very sad"], padding=True, return_tensors="pt")
    torch.testing.assert_close(model(**padded).logits[0], model(**alone).logits[0], atol=1e-5, rtol=1e-5)


def test_qlora_without_bitsandbytes_names_the_extra(monkeypatch, tiny_models, tiny_data, tmp_path):
    import sys

    from conftest import tiny_config

    from textlora.train import train

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import bitsandbytes now raises ImportError
    with pytest.raises(ImportError, match=r'pip install "textlora\[qlora\]"'):
        train(tiny_config(tiny_data, tiny_models["bert"], tmp_path / "run", "qlora"), progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("kind,expected", [("bert", "classifier"), ("distilbert", "classifier"), ("gpt2", None)])
def test_output_bias_starts_at_the_label_rates(tiny_models, kind, expected):
    import numpy as np

    from textlora.model.adapters import init_output_bias

    base = load_base(str(tiny_models[kind]), LABELS)
    rates = np.array([0.5, 0.1, 0.02])
    assert init_output_bias(base.model, base.new_modules, rates) == expected
    if expected:
        bias = base.model.get_submodule(expected).bias
        np.testing.assert_allclose(torch.sigmoid(bias).detach().numpy(), rates, rtol=1e-5)


@pytest.mark.parametrize("kind", ["bert", "distilbert", "gpt2"])
def test_gradient_checkpointing_gives_the_same_gradients(tiny_models, kind):
    """Recomputed activations replay the same dropout masks: the gradients equal those of a plain step,
    with the [CLS]-only last layer on as in training."""
    from textlora.model.adapters import enable_gradient_checkpointing
    from textlora.model.cls_only import cls_only_last_layer

    def grads(checkpointing: bool) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        base = load_base(str(tiny_models[kind]), LABELS, dropout=0.1)
        model = build_model(base.model, "lora", LoraConfig(r=4, dropout=0.1), base.new_modules).train()
        if checkpointing:
            assert enable_gradient_checkpointing(model)
        first_adapter = next(m for n, m in model.named_modules() if n.endswith(".lora_A.default"))
        calls = []
        first_adapter.register_forward_hook(lambda *_: calls.append(1))
        batch = base.tokenizer(["good day", "the bad chair was here"], padding=True, return_tensors="pt")
        torch.manual_seed(1)
        with cls_only_last_layer(model):
            loss = torch.nn.functional.cross_entropy(model(**batch).logits, torch.tensor([2, 0]))
        loss.backward()
        assert len(calls) == (2 if checkpointing else 1)  # the first layer ran again in the backward pass
        return {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}

    plain, recomputed = grads(False), grads(True)
    assert plain.keys() == recomputed.keys()
    for k in plain:
        torch.testing.assert_close(recomputed[k], plain[k], msg=k)
