"""End to end on tiny models: train -> run folder -> load (same and new process) -> predict."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import FILLER, make_rows, tiny_config, write_jsonl

from textlora.data.labels import LabelMap
from textlora.errors import DataError, RunExistsError
from textlora.predict import Predictor
from textlora.train import train

TEXTS = ["good great day", "the bad awful chair", "a table and a door", "i love it", "not a fan , don't recommend ."]
RUN_FILES = {"config.yaml", "labels.json", "tokenizer", "metrics.json", "loss_log.jsonl", "manifest.json",
             "README.md"}
METHOD_FILES = {"lora": "adapter", "full": "model", "head": "head.safetensors"}


@pytest.mark.parametrize("kind", ["bert", "distilbert", "gpt2"])
@pytest.mark.parametrize("method", ["lora", "full", "head"])
def test_train_writes_a_complete_run(tiny_models, tiny_data, tmp_path, kind, method):
    out = tmp_path / "run"
    cfg = tiny_config(tiny_data, tiny_models[kind], out, method, epochs=2,
                      lr={"lora": 1e-2, "full": 1e-3, "head": 5e-2}[method])
    result = train(cfg, progress=False)
    assert {p.name for p in out.iterdir()} >= RUN_FILES | {METHOD_FILES[method]}
    m = json.loads((out / "metrics.json").read_text())
    for split in ("validation", "test"):
        for key in ("accuracy", "precision_macro", "recall_macro", "f1_macro", "precision_weighted",
                    "recall_weighted", "f1_weighted", "per_class", "confusion_matrix"):
            assert key in m[split] and key in m["base"][split]
    assert np.array(m["test"]["confusion_matrix"]).sum() == 30
    assert len(m["history"]) == 2 and 1 <= result.best_epoch <= 2
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["method"] == method and len(manifest["base_model"]["weights_sha256"]) == 64
    assert set(manifest["data"]["files_sha256"]) == {str(tiny_data / f"{s}.jsonl")
                                                     for s in ("train", "validation", "test")}
    assert (out / "loss_log.jsonl").read_text().count("\n") == 2 * 12  # 90 rows / batch 8 = 12 steps an epoch
    clf = Predictor.load(out)
    assert clf.labels_ == ["neg", "neu", "pos"]
    assert clf.predict_proba(TEXTS).shape == (5, 3)
    assert isinstance(clf.predict("good"), str)


def test_training_lowers_the_loss(tiny_models, tiny_data, tmp_path):
    result = train(tiny_config(tiny_data, tiny_models["bert"], tmp_path / "r", epochs=4), progress=False)
    losses = [h["train_loss"] for h in result.metrics["history"]]
    assert losses[-1] < losses[0]


def test_freed_memory_goes_back_every_n_steps(tiny_models, tiny_data, tmp_path, monkeypatch):
    import textlora.loop as loop_module

    calls = []
    monkeypatch.setattr(loop_module, "release_free_memory", lambda collect=True: calls.append(collect) or True)
    train(tiny_config(tiny_data, tiny_models["bert"], tmp_path / "r", epochs=2, trim_memory_every=5), progress=False)
    assert calls == [False] * (2 * 12 // 5)  # 12 steps an epoch; no gc.collect inside the loop
    calls.clear()
    train(tiny_config(tiny_data, tiny_models["bert"], tmp_path / "r0", epochs=1), progress=False)
    assert calls == []  # lora's default: never


def test_bf16_steps_run_under_autocast_while_evaluation_stays_fp32(tiny_models, tmp_path, monkeypatch):
    import textlora.train as train_module

    precisions = []
    real = train_module.autocast
    monkeypatch.setattr(train_module, "autocast", lambda model, p: precisions.append(p) or real(model, p))
    data = tmp_path / "data"  # texts of 5 to 10 words, so batches hold padding
    for split, n, seed in (("train", 90, 1), ("validation", 30, 2), ("test", 30, 3)):
        rows = make_rows(n, seed=seed)
        write_jsonl(data / f"{split}.jsonl", [{**r, "text": " ".join([r["text"], *FILLER[:i % 6]])}
                                              for i, r in enumerate(rows)])
    result = train(tiny_config(data, tiny_models["bert"], tmp_path / "r", epochs=2, precision="bf16"),
                   progress=False)
    run, m = result.out, result.metrics
    assert precisions == ["bf16"] * (2 * 12)  # every training step; no evaluation pass
    # the per-epoch validation (inside the fp32-attention switch) scores what the final one does: padding masked
    assert m["history"][m["best_epoch"] - 1]["val_loss"] == pytest.approx(m["validation"]["loss"], rel=1e-6)
    clf = Predictor.load(run)  # fp32, as the run's own evaluation was
    with np.load(run / "predictions.npz") as z:
        saved = z["test_logits"]
    texts = [json.loads(line)["text"] for line in (data / "test.jsonl").read_text().splitlines()]
    np.testing.assert_allclose(clf.logits(texts), saved, atol=1e-5)
    assert all(p.dtype == torch.float32 for p in clf.model.parameters())


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's malloc_trim")
def test_release_free_memory_returns_freed_heap_to_the_os():
    from textlora.memory import release_free_memory, rss_mb

    blocks = [bytearray(64 * 1024) for _ in range(2000)]  # ~128 MB of heap blocks below the mmap threshold
    del blocks[::2]  # leave holes that plain free() cannot give back
    before = rss_mb()
    assert release_free_memory()
    assert rss_mb() < before - 30
    del blocks


@pytest.fixture(scope="module")
def lora_run(tiny_models, tmp_path_factory):
    from conftest import write_splits

    root = tmp_path_factory.mktemp("lora_run")
    write_splits(root / "data")
    train(tiny_config(root / "data", tiny_models["bert"], root / "run", epochs=3), progress=False)
    return root / "run"


def test_new_process_gets_identical_logits(lora_run, tmp_path):
    here = Predictor.load(lora_run).logits(TEXTS)
    code = ("import json, sys; from textlora.predict import Predictor; "
            f"print(json.dumps(Predictor.load(sys.argv[1]).logits({TEXTS!r}).tolist()))")
    out = subprocess.run([sys.executable, "-c", code, str(lora_run)], capture_output=True, text=True, check=True)
    there = np.array(json.loads(out.stdout.strip().splitlines()[-1]), dtype=np.float32)
    np.testing.assert_array_equal(here, there)


def test_plain_peft_loads_the_adapter(lora_run, tiny_models):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    labels = LabelMap.load(lora_run / "labels.json")
    base = AutoModelForSequenceClassification.from_pretrained(str(tiny_models["bert"]), num_labels=3)
    model = PeftModel.from_pretrained(base, str(lora_run / "adapter")).eval()
    tok = AutoTokenizer.from_pretrained(str(lora_run / "tokenizer"))
    with torch.no_grad():
        logits = torch.cat([model(**tok([t], return_tensors="pt")).logits for t in TEXTS])
    ours = Predictor.load(lora_run)
    assert [labels.labels[i] for i in logits.argmax(-1)] == ours.predict(TEXTS)
    np.testing.assert_allclose(logits.numpy(), ours.logits(TEXTS), atol=1e-4)


def test_failed_run_leaves_nothing(tiny_models, tmp_path):
    from conftest import make_rows, write_jsonl

    rows = make_rows(30)
    rows[5]["text"] = ""
    write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DataError):
        train(tiny_config(tmp_path / "bad.jsonl", tiny_models["bert"], tmp_path / "out"), progress=False)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if "staging" in p.name]


def test_existing_run_is_not_overwritten_by_accident(lora_run, tiny_models, tiny_data):
    cfg = tiny_config(tiny_data, tiny_models["bert"], lora_run)
    with pytest.raises(RunExistsError, match="already holds a finished run; pass --overwrite"):
        train(cfg, progress=False)


def test_crash_while_saving_keeps_the_old_run(lora_run, tiny_models, tiny_data, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(lora_run, out)
    before = (out / "manifest.json").read_text()

    def boom(folder, metrics):
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        train(tiny_config(tiny_data, tiny_models["bert"], out, epochs=1), overwrite=True, progress=False,
              before_commit=boom)
    assert (out / "manifest.json").read_text() == before
    assert Predictor.load(out).predict_proba(TEXTS).shape == (5, 3)
