"""QLoRA on tiny BERT and GPT-2: a 4-bit NF4 base, an fp32 trained head, LoRA on top; a run saves,
loads and exports to a plain Hugging Face folder that predicts the same."""

import gc
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config

from textlora.config import LoraConfig
from textlora.data.labels import LabelMap
from textlora.model.adapters import build_model
from textlora.model.load import load_base
from textlora.predict import Predictor, export_merged
from textlora.train import train

bnb = pytest.importorskip("bitsandbytes")
from textlora.model.quantization import is_4bit, nf4_config, release_checkpoint  # noqa: E402

LABELS = LabelMap(["neg", "neu", "pos"])
TEXTS = ["good great day", "the bad awful chair", "a table and a door", "i love it"]


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_qlora_step_trains_adapters_and_fp32_head_on_a_4bit_base(tiny_models, kind):
    base = load_base(str(tiny_models[kind]), LABELS, quantization_config=nf4_config())
    model = build_model(base.model, "qlora", LoraConfig(r=4, alpha=8), base.new_modules)
    assert sum(is_4bit(m) for m in model.modules()) == {"gpt2": 8, "bert": 12}[kind]  # every body projection
    head = "score" if kind == "gpt2" else "classifier"
    trained = {k: p for k, p in model.named_parameters() if p.requires_grad}
    assert any("lora_A" in k for k in trained) and any(head in k for k in trained)
    assert all(p.dtype == torch.float32 for p in trained.values())
    before = {k: p.detach().clone() for k, p in trained.items()}
    quantized = {k: p.detach().clone() for k, p in model.named_parameters() if p.dtype == torch.uint8}
    batch = base.tokenizer(["good day", "the bad chair was here"], padding=True, return_tensors="pt")
    model.train()
    opt = torch.optim.SGD(list(trained.values()), lr=0.5)
    torch.nn.functional.cross_entropy(model(**batch).logits, torch.tensor([2, 0])).backward()
    opt.step()
    changed = {k for k, p in trained.items() if not torch.equal(before[k], p)}
    assert any(head in k for k in changed) and any("lora_B" in k for k in changed)
    assert quantized and all(torch.equal(v, dict(model.named_parameters())[k]) for k, v in quantized.items())


def test_eval_forward_leaves_the_4bit_weights_as_loaded(tiny_models):
    # bitsandbytes repacks NF4 weights on an eval forward on AVX512-BF16 CPUs; textlora turns that off
    base = load_base(str(tiny_models["bert"]), LABELS, quantization_config=nf4_config())
    layers = [m for m in base.model.modules() if is_4bit(m)]
    assert layers and not any(m.support_avx512bf16_for_cpu for m in layers)
    before = [m.weight.detach().clone() for m in layers]
    batch = base.tokenizer(["good day", "the bad chair was here"], padding=True, return_tensors="pt")
    base.model.eval()
    with torch.inference_mode():
        base.model(**batch)
    assert all(torch.equal(b, m.weight) for b, m in zip(before, layers))


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads the memory maps of a Linux process")
def test_a_4bit_load_closes_the_checkpoints_memory_map(tiny_models):
    # the fp32 weights read to quantize them would otherwise stay resident through the map (bench/RESULTS.md)
    checkpoint = str(tiny_models["bert"] / "model.safetensors")
    lora = load_base(str(tiny_models["bert"]), LABELS)  # zero-copy: its weights are views of the file
    assert checkpoint in Path("/proc/self/maps").read_text()
    del lora
    gc.collect()
    assert checkpoint not in Path("/proc/self/maps").read_text()
    base = load_base(str(tiny_models["bert"]), LABELS, quantization_config=nf4_config())
    assert checkpoint not in Path("/proc/self/maps").read_text()
    assert sum(is_4bit(m) for m in base.model.modules()) == 12


def test_release_checkpoint_copies_plain_tensors_keeps_ties_and_4bit_weights():
    shared = torch.nn.Linear(3, 3)
    model = torch.nn.Sequential(shared, torch.nn.BatchNorm1d(3), shared, bnb.nn.Linear4bit(64, 64))
    packed, weight = model[3].weight, shared.weight
    x = torch.randn(4, 3)
    model.eval()
    before = model[:3](x)
    release_checkpoint(model)
    assert model[0].weight is not weight and model[0].weight is model[2].weight  # copied once, still tied
    assert isinstance(model[0].weight, torch.nn.Parameter) and model[0].weight.requires_grad
    assert model[3].weight is packed  # 4-bit weights are left alone
    assert torch.equal(before, model[:3](x))


@pytest.fixture(scope="module", params=["bert", "gpt2"])
def qlora_run(request, tiny_models, tmp_path_factory):
    from conftest import make_rows, write_jsonl

    root = tmp_path_factory.mktemp(f"qlora_{request.param}")
    for split, (n, seed) in {"train": (48, 1), "validation": (24, 2), "test": (24, 3)}.items():
        write_jsonl(root / "data" / f"{split}.jsonl", make_rows(n, seed))
    result = train(tiny_config(root / "data", tiny_models[request.param], root / "run", "qlora", epochs=2),
                   progress=False)
    return root, result


def test_qlora_run_saves_loads_and_predicts_as_in_training(qlora_run):
    root, result = qlora_run
    run = root / "run"
    assert (run / "adapter" / "adapter_config.json").is_file()
    assert json.loads((run / "manifest.json").read_text())["method"] == "qlora"
    clf = Predictor.load(run)
    saved = np.load(run / "predictions.npz")["test_logits"]  # computed by the 4-bit model in training
    from textlora.predict import read_texts

    np.testing.assert_allclose(clf.logits(read_texts(str(root / "data" / "test.jsonl"))), saved, atol=1e-4)


def test_export_round_trip_predicts_the_same(qlora_run, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    run = qlora_run[0] / "run"
    out = export_merged(run, tmp_path / "export")
    model = AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
    tok = AutoTokenizer.from_pretrained(str(out))
    with torch.no_grad():
        logits = torch.cat([model(**tok([t], return_tensors="pt")).logits for t in TEXTS]).numpy()
    np.testing.assert_allclose(logits, Predictor.load(run).logits(TEXTS), atol=1e-4)
    assert model.config.id2label == {0: "neg", 1: "neu", 2: "pos"}
    assert not any(is_4bit(m) for m in model.modules())


def test_serving_a_qlora_run_matches_the_predictor(qlora_run):
    pytest.importorskip("fastapi")
    from textlora.serve.registry import Registry, RunSpec

    run = qlora_run[0] / "run"
    reg = Registry.load([RunSpec("q", run)])
    np.testing.assert_allclose(reg.scores("q", TEXTS), Predictor.load(run).predict_proba(TEXTS), atol=1e-5)


def test_importing_peft_through_textlora_prints_no_bitsandbytes_kernel_notice():
    """On AVX512-BF16 CPUs bitsandbytes logs at import that it cannot fetch a hub kernel that textlora never uses
    (`keep_weights_unpacked`); every `textlora train` printed it, LoRA runs too. A fresh process, so the import
    really happens here; on other CPUs there is no notice either way."""
    import subprocess
    import sys

    code = ("import logging, sys; logging.basicConfig(stream=sys.stderr); "
            "import textlora.model.adapters, peft, bitsandbytes; "
            "logging.getLogger('bitsandbytes.backends.cpu.ops').error('errors still show')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "kernels-community" not in done.stderr and "errors still show" in done.stderr
