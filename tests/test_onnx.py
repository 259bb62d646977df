"""ONNX Runtime: a run exported once to ONNX (fp32, int8), cached in its folder, and run behind the same Predictor.

Tiny runs on BERT (lora), DistilBERT (full), GPT-2 (lora, pads with eos) and a multi-label BERT run.
"""

import json
import shutil

import numpy as np
import pytest
from conftest import make_rows, serve_process, tiny_config, write_jsonl
from test_multilabel import multilabel_rows

from textlora.errors import ConfigError, ModelError
from textlora.predict import Predictor
from textlora.train import train

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

TEXTS = ["good great day", "the bad awful chair", "a table and a door", "i love it", "",
         "so very happy and it was nice and good . i love this wonderful wall", "sad", "window door paper table"]
RUNS = {"bert": ("bert", "lora"), "distilbert": ("distilbert", "full"), "gpt2": ("gpt2", "lora")}


@pytest.fixture(scope="module")
def runs(tiny_models, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("onnx")
    out = {}
    for name, (kind, method) in RUNS.items():
        data = root / f"data-{name}"
        for split, n, seed in (("train", 60, 1), ("validation", 15, 2), ("test", 30, 3)):
            write_jsonl(data / f"{split}.jsonl", make_rows(n, seed=seed))
        train(tiny_config(data, tiny_models[kind], root / name, method, epochs=1), progress=False)
        out[name] = root / name
    for split, (n, seed) in {"train": (100, 1), "validation": (40, 2), "test": (40, 3)}.items():
        write_jsonl(root / "data-multi" / f"{split}.jsonl", multilabel_rows(n, seed))
    cfg = tiny_config(root / "data-multi", tiny_models["bert"], root / "multi", epochs=3)
    train(cfg.with_overrides({"data.label_column": "labels"}), progress=False)
    out["multi"] = root / "multi"
    return out


def _copy(run, tmp_path):
    copy = tmp_path / run.name
    shutil.copytree(run, copy)
    return copy


@pytest.mark.parametrize("name", list(RUNS))
def test_onnx_logits_match_pytorch_with_dynamic_batch_and_length(runs, name):
    from textlora.model.onnx_runtime import OnnxModel

    torch_clf = Predictor.load(runs[name])
    onnx_clf = Predictor.load(runs[name], runtime="onnx", batch_size=3)  # several passes of several lengths, padded
    assert isinstance(onnx_clf.model, OnnxModel)
    assert [i.shape for i in onnx_clf.model.session.get_inputs()] == [["batch", "sequence"]] * 2
    ref, got = torch_clf.logits(TEXTS), onnx_clf.logits(TEXTS)
    assert np.abs(ref - got).max() <= 1e-4
    assert onnx_clf.predict(TEXTS) == torch_clf.predict(TEXTS) and onnx_clf.labels_ == torch_clf.labels_
    single = Predictor.load(runs[name], runtime="onnx", batch_size=1)  # one row, no padding
    assert np.abs(single.logits(TEXTS) - ref).max() <= 1e-4


def test_int8_onnx_is_quantized_and_its_label_agreement_is_measured(runs):
    import onnx

    run = runs["bert"]
    texts = [r["text"] for r in make_rows(30, seed=3)]
    fp32 = Predictor.load(run).predict(texts)
    int8 = Predictor.load(run, runtime="onnx", int8=True)
    ops = {n.op_type for n in onnx.load(str(int8.model.path)).graph.node}
    assert int8.model.path.name == "model.int8.onnx" and {"DynamicQuantizeLinear", "MatMulInteger"} <= ops
    agreement = float(np.mean([a == b for a, b in zip(int8.predict(texts), fp32)]))
    print(f"int8 ONNX label agreement with PyTorch fp32 on the tiny BERT run: {agreement:.3f}")
    assert agreement >= 0.8  # deterministic: the same weights, quantized the same way, on the same texts
    assert (run / "onnx" / "model.onnx").is_file()  # quantized from the cached fp32 export


def test_multilabel_thresholds_are_the_runs(runs, tmp_path):
    run = _copy(runs["multi"], tmp_path)
    torch_clf, onnx_clf = Predictor.load(run), Predictor.load(run, runtime="onnx")
    assert np.abs(torch_clf.predict_proba(TEXTS) - onnx_clf.predict_proba(TEXTS)).max() <= 1e-4
    np.testing.assert_array_equal(onnx_clf.thresholds_, torch_clf.thresholds_)
    assert onnx_clf.predict(TEXTS) == torch_clf.predict(TEXTS)
    (run / "thresholds.json").write_text(json.dumps({"pos": 0.0, "neg": 1.01, "neu": 0.0}))
    low = Predictor.load(run, runtime="onnx")  # thresholds are not in the export: the cache stays valid
    assert low.predict(TEXTS) == [["neu", "pos"]] * len(TEXTS)


def test_the_export_is_cached_and_redone_only_when_the_weights_change(runs, tmp_path, monkeypatch):
    import torch
    from safetensors.torch import load_file, save_file

    from textlora.model import onnx_runtime

    run = _copy(runs["bert"], tmp_path)
    first = Predictor.load(run, runtime="onnx")
    model = run / "onnx" / "model.onnx"
    stamp = model.stat().st_mtime_ns
    exports = []
    real = onnx_runtime.export_fp32
    monkeypatch.setattr(onnx_runtime, "export_fp32", lambda *a: exports.append(1) or real(*a))
    again = Predictor.load(run, runtime="onnx")
    assert exports == [] and model.stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(again.logits(TEXTS), first.logits(TEXTS))
    assert json.loads((run / "onnx" / "source.json").read_text())["files"]["model.onnx"]["weights_sha256"]

    weights = run / "adapter" / "adapter_model.safetensors"  # a changed adapter: exported again
    state = load_file(str(weights))
    key = next(k for k in state if "classifier" in k and k.endswith("bias"))
    state[key] = state[key] + torch.tensor([1.0, -1.0, 0.5])
    save_file(state, str(weights))
    changed = Predictor.load(run, runtime="onnx")
    assert exports == [1] and not [p for p in (run / "onnx").iterdir() if p.name.startswith(".tmp-")]
    assert np.abs(changed.logits(TEXTS) - Predictor.load(run).logits(TEXTS)).max() <= 1e-4
    assert np.abs(changed.logits(TEXTS) - first.logits(TEXTS)).max() > 0.4


def test_a_file_textlora_did_not_write_is_never_replaced(runs, tmp_path):
    run = _copy(runs["bert"], tmp_path)
    Predictor.load(run, runtime="onnx")
    model = run / "onnx" / "model.onnx"
    model.write_bytes(b"someone else's model")
    with pytest.raises(ModelError, match="is not an ONNX export textlora wrote .* move it away"):
        Predictor.load(run, runtime="onnx")
    assert model.read_bytes() == b"someone else's model"
    bare = _copy(runs["gpt2"], tmp_path)
    shutil.rmtree(bare / "onnx", ignore_errors=True)
    (bare / "onnx").mkdir()
    (bare / "onnx" / "model.int8.onnx").write_bytes(b"mine")  # no source.json at all
    with pytest.raises(ModelError, match="model.int8.onnx exists but is not an ONNX export textlora wrote"):
        Predictor.load(bare, runtime="onnx", int8=True)
    assert (bare / "onnx" / "model.int8.onnx").read_bytes() == b"mine"


def test_a_read_only_run_folder_exports_to_a_temporary_folder_with_a_warning(runs, tmp_path, monkeypatch):
    from textlora.model import onnx_runtime

    run = _copy(runs["gpt2"], tmp_path)
    shutil.rmtree(run / "onnx", ignore_errors=True)
    monkeypatch.setattr(onnx_runtime, "_writable", lambda folder: False)  # tests run as root: chmod would not stop us
    with pytest.warns(UserWarning, match=r"is read-only: its ONNX model is exported to .* only \(not cached\)"):
        clf = Predictor.load(run, runtime="onnx")
    assert not (run / "onnx").exists() and clf.model.path.is_file()
    assert np.abs(clf.logits(TEXTS) - Predictor.load(run).logits(TEXTS)).max() <= 1e-4


def test_load_with_runtime_onnx_and_its_one_line_errors(runs, monkeypatch):
    import sys

    import textlora

    clf = textlora.load(runs["bert"], runtime="onnx")
    assert clf.predict("good great day") == Predictor.load(runs["bert"]).predict("good great day")
    cases = [({"device": "cuda"}, "runtime 'onnx' runs on the CPU"),
             ({"precision": "bf16"}, "runtime 'onnx' computes in fp32, or with int8 weights"),
             ({"runtime": "tvm"}, "runtime must be 'torch' or 'onnx', got 'tvm'")]
    for options, message in cases:
        with pytest.raises(ConfigError, match=message):
            textlora.load(runs["bert"], **{"runtime": "onnx", **options})
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # the extra not installed
    with pytest.raises(ConfigError, match=r"needs the package 'onnxruntime'.*pip install \"textlora\[onnx\]\""):
        textlora.load(runs["bert"], runtime="onnx")


def test_cli_export_and_predict_with_runtime_onnx(runs, tmp_path, capsys):
    from textlora.cli import main

    run = _copy(runs["distilbert"], tmp_path)
    shutil.rmtree(run / "onnx", ignore_errors=True)
    assert main(["export", str(run), "--format", "onnx"]) == 0
    assert "wrote" in capsys.readouterr().out and (run / "onnx" / "model.onnx").is_file()
    assert main(["export", str(run), "--format", "onnx", "--int8", "--out", str(tmp_path / "x")]) == 0
    capsys.readouterr()
    assert {p.name for p in (tmp_path / "x").iterdir()} >= {"model.int8.onnx", "labels.json", "tokenizer.json"}
    assert main(["export", str(run), "--int8"]) == 2
    assert "needs --out FOLDER and takes no --int8" in capsys.readouterr().err

    gpt2 = _copy(runs["gpt2"], tmp_path)
    shutil.rmtree(gpt2 / "onnx", ignore_errors=True)  # predict exports on first use; stdout stays JSON lines
    assert main(["predict", str(gpt2), *TEXTS[:4], "--json", "--runtime", "onnx"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["label"] for r in rows] == Predictor.load(gpt2).predict(TEXTS[:4])
    assert main(["predict", str(gpt2), *TEXTS[:4], "--json", "--runtime", "onnx", "--int8"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 4 and (gpt2 / "onnx" / "model.int8.onnx").is_file()


def test_serve_with_runtime_onnx_answers_as_torch(runs):
    import httpx

    pytest.importorskip("fastapi")
    expected = {name: Predictor.load(runs[name]) for name in ("bert", "multi")}
    specs = [f"{name}={runs[name]}" for name in expected]
    with serve_process(specs, "--runtime", "onnx", "--max-wait-ms", "5") as (url, _):
        for name, clf in expected.items():
            r = httpx.post(url + "/v1/classify", json={"model": name, "texts": TEXTS}, timeout=30)
            assert r.status_code == 200, r.text
            got = [p["labels"] for p in r.json()["predictions"]]
            want = clf.predict(TEXTS)
            assert got == [w if isinstance(w, list) else [w] for w in want]
            scores = np.array([[p["scores"][label] for label in clf.labels_] for p in r.json()["predictions"]])
            assert np.abs(scores - clf.predict_proba(TEXTS)).max() <= 1e-4
