"""Forward-pass precision: autocast contexts and the bf16 hardware probe."""

import pytest
import torch

from textlora.model.precision import autocast, native_bf16


def test_bf16_autocast_multiplies_in_bfloat16_and_fp32_leaves_it_alone():
    layer = torch.nn.Linear(8, 4)
    x = torch.randn(3, 8)
    with autocast(layer, "bf16"):
        assert layer(x).dtype == torch.bfloat16
    with autocast(layer, "fp32"):
        assert layer(x).dtype == torch.float32
    assert layer.weight.dtype == torch.float32  # the weights themselves are never cast


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match=r"one of \['fp32', 'bf16'\], got 'fp16'"):
        autocast(torch.nn.Linear(2, 2), "fp16")


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
