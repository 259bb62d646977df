"""Forward-pass precision: autocast contexts and the bf16 hardware probe."""

import pytest
import torch

from textlora.model.precision import autocast, cpu_fp32_attention, native_bf16


def test_bf16_autocast_multiplies_in_bfloat16_and_fp32_leaves_it_alone():
    layer = torch.nn.Linear(8, 4)
    x = torch.randn(3, 8)
    with autocast(layer, "bf16"):
        assert layer(x).dtype == torch.bfloat16
    with autocast(layer, "fp32"):
        assert layer(x).dtype == torch.float32
    assert layer.weight.dtype == torch.float32  # the weights themselves are never cast


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match=r"one of fp32, bf16, fp16 here, got 'auto'"):
        autocast(torch.nn.Linear(2, 2), "auto")


@pytest.mark.parametrize(("flags", "expected"), [
    ("fpu sse avx2 avx512f amx_bf16 amx_tile", True),
    ("fpu sse avx2 avx512f avx512_bf16", True),
    ("fpu sse avx2 fma", False),
])
def test_native_bf16_reads_the_cpu_flags(tmp_path, flags, expected):
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nmodel name\t: test\nflags\t\t: {flags}\n")
    assert native_bf16("cpu", info) is expected
    assert native_bf16("cpu", tmp_path / "missing") is None


def _attention_output_dtypes(model, x) -> list[torch.dtype]:
    """dtype of each self-attention block's output (before its output projection) in one forward."""
    seen = []
    hooks = [layer.attention.self.register_forward_hook(lambda m, i, o: seen.append(o[0].dtype))
             for layer in model.bert.encoder.layer]
    model(input_ids=x, attention_mask=torch.ones_like(x)).logits.sum().backward()
    for h in hooks:
        h.remove()
    return seen


def test_bf16_steps_keep_cpu_attention_fp32_then_restore_the_model(tiny_models):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_models["bert"], num_labels=3,
                                                               attn_implementation="sdpa")
    x = torch.randint(5, 20, (2, 7))
    with autocast(model, "bf16"):  # plain autocast: SDPA in bf16, whose CPU backward is slow
        assert _attention_output_dtypes(model, x) == [torch.bfloat16] * 2
    with cpu_fp32_attention(model, "bf16"), autocast(model, "bf16"):
        assert _attention_output_dtypes(model, x) == [torch.float32] * 2
        assert model.bert.encoder.layer[0].attention.output.dense(torch.randn(2, 16)).dtype == torch.bfloat16
        assert model.bert.embeddings.word_embeddings.weight.grad is not None  # the backward ran through it
    assert model.config._attn_implementation == "sdpa"  # restored on exit
    mask = torch.ones_like(x)
    mask[0, 4:] = 0  # padding: the switched attention must mask it as sdpa does
    with cpu_fp32_attention(model, "bf16"):  # without autocast the outputs are sdpa's, to float rounding
        switched = model(input_ids=x, attention_mask=mask).logits
    torch.testing.assert_close(switched, model(input_ids=x, attention_mask=mask).logits)
    with cpu_fp32_attention(model, "fp32"):
        assert model.config._attn_implementation == "sdpa"  # fp32 changes nothing


@pytest.mark.parametrize("kind", ["bert", "distilbert", "gpt2"])
def test_switched_attention_masks_padding_like_sdpa(tiny_models, kind):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_models[kind], num_labels=3,
                                                               attn_implementation="sdpa", pad_token_id=1)
    x = torch.randint(5, 20, (2, 9))
    mask = torch.ones_like(x)
    mask[1, 5:] = 0
    x[1, 5:] = 1
    with cpu_fp32_attention(model, "bf16"):
        switched = model(input_ids=x, attention_mask=mask).logits
    torch.testing.assert_close(switched, model(input_ids=x, attention_mask=mask).logits)
