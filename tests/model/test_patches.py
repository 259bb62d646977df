"""The gate of the speed-ups that patch transformers internals: off with one warning outside the tested range or
when an internal is gone, and then the stock code gives the same training and predictions."""

import warnings

import numpy as np
import pytest
import torch
from conftest import tiny_config

from textlora.data.labels import LabelMap
from textlora.model import patches
from textlora.model.cls_only import cls_only_last_layer
from textlora.model.layer_cache import cache_blocker
from textlora.model.load import load_base
from textlora.model.precision import cpu_fp32_attention
from textlora.predict import load
from textlora.train import train

LABELS = LabelMap(["neg", "neu", "pos"])
TEXTS = ["good day", "the bad chair was here and there", "a", "i love the great table"]


@pytest.fixture
def gate(monkeypatch):
    """A fresh gate (no decision taken yet in this process), restored after the test."""
    monkeypatch.setattr(patches, "_decided", {})
    return monkeypatch


def _untested_transformers(gate) -> None:
    gate.setattr(patches, "_installed_version", lambda: "6.0.0")
    gate.setattr(patches, "_decided", {})  # decided again, as in a fresh process


def test_the_installed_transformers_is_in_range_and_has_every_internal():
    assert {name: patches.why_disabled(name) for name in patches.NEEDS} == dict.fromkeys(patches.NEEDS)


@pytest.mark.parametrize("version", ["6.0.0", "5.0.0", "4.57.1"])
def test_outside_the_tested_range_every_transformers_patch_is_off(version):
    for name in ("cls_only", "fp32_attention", "layer_cache"):
        assert patches.why_disabled(name, version) == (f"transformers {version} is outside the tested range "
                                                       f"{patches.TESTED} (install transformers{patches.TESTED})")
    assert patches.why_disabled("bnb_cpu_layout", version) is None  # a bitsandbytes flag, not transformers'


def test_off_warns_once_per_process(gate):
    _untested_transformers(gate)
    with pytest.warns(UserWarning, match=r"speed-up 'cls_only' is off: transformers 6\.0\.0 is outside the tested "
                                         r"range .*; the stock code runs instead \(same results, slower\)\.") as seen:
        assert not patches.enabled("cls_only")
        assert not patches.enabled("cls_only")
    assert len([w for w in seen if "cls_only" in str(w.message)]) == 1


def test_a_missing_internal_turns_its_patch_off(gate, tiny_models):
    import transformers.masking_utils
    import transformers.models.bert.modeling_bert as bert

    gate.delattr(bert, "eager_attention_forward")
    gate.delattr(transformers.masking_utils, "sdpa_mask")
    assert patches.why_disabled("cls_only") == ("missing transformers.models.bert.modeling_bert:"
                                                "eager_attention_forward")
    assert patches.why_disabled("fp32_attention") == "missing transformers.masking_utils:sdpa_mask"
    model = load_base(str(tiny_models["bert"]), LABELS, dropout=0.0).model
    with pytest.warns(UserWarning, match="'cls_only' is off: missing"), cls_only_last_layer(model) as applied:
        assert not applied
    with pytest.warns(UserWarning, match="'fp32_attention' is off: missing"), cpu_fp32_attention(model, "bf16"):
        assert model.config._attn_implementation == "sdpa"  # not switched


def test_stock_forward_gives_the_patched_logits(gate, tiny_models):
    base = load_base(str(tiny_models["bert"]), LABELS, dropout=0.0)
    model = base.model.eval()
    batch = base.tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad(), cls_only_last_layer(model) as applied:
        assert applied
        patched = model(**batch).logits
    _untested_transformers(gate)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad(), cls_only_last_layer(model) as applied, cpu_fp32_attention(model, "bf16"):
            assert not applied and model.config._attn_implementation == "sdpa"
            stock = model(**batch).logits
    torch.testing.assert_close(stock, patched, atol=1e-5, rtol=1e-5)
    head = load_base(str(tiny_models["bert"]), LABELS, dropout=0.0).model
    for p in head.bert.parameters():
        p.requires_grad_(False)
    with pytest.warns(UserWarning, match="'layer_cache' is off"):
        assert cache_blocker(head, 2).startswith("transformers 6.0.0 is outside the tested range")


def test_training_and_prediction_without_the_patches_match(gate, tiny_models, tiny_data, tmp_path):
    runs, probs = {}, {}
    for patched in (True, False):
        if not patched:
            _untested_transformers(gate)
        cfg = tiny_config(tiny_data, tiny_models["bert"], tmp_path / f"run-{patched}", "lora", epochs=2,
                          cache_frozen=True)
        cfg.model.dropout = 0.0
        cfg.lora.top_layers = 1  # the layer cache applies when patched
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            result = train(cfg, progress=False)
            probs[patched] = load(result.out).predict_proba(TEXTS)
        out = result.out
        assert ("layer_cache" in result.metrics) == patched
        runs[patched] = np.load(out / "predictions.npz")
        offs = {str(w.message).split("'")[1] for w in seen if "is off:" in str(w.message)}
        assert offs == (set() if patched else {"cls_only", "layer_cache"})
    for key in ("validation_logits", "test_logits"):
        np.testing.assert_allclose(runs[False][key], runs[True][key], atol=1e-4)
    np.testing.assert_allclose(probs[False], probs[True], atol=1e-5)


def test_bitsandbytes_without_its_cpu_layout_flag_is_left_as_it_is(gate, tiny_models):
    bnb = pytest.importorskip("bitsandbytes")
    from textlora.model.quantization import is_4bit, nf4_config

    gate.delattr(bnb.functional, "has_avx512bf16")
    with pytest.warns(UserWarning, match="'bnb_cpu_layout' is off: missing bitsandbytes.functional:has_avx512bf16"):
        model = load_base(str(tiny_models["bert"]), LABELS, quantization_config=nf4_config()).model
    assert all(m.support_avx512bf16_for_cpu == bnb.nn.modules.has_avx512bf16() for m in model.modules() if is_4bit(m))
