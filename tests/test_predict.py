"""Loading a run refuses the wrong base model and an inconsistent label map."""

import json
import shutil

import pytest
import yaml
from conftest import make_tiny_model, tiny_config

from textlora.errors import ModelError
from textlora.predict import Predictor
from textlora.train import train


@pytest.fixture(scope="module")
def run_and_other_base(tiny_models, tmp_path_factory):
    from conftest import write_splits

    root = tmp_path_factory.mktemp("check")
    write_splits(root / "data", 60, 15, 15)
    train(tiny_config(root / "data", tiny_models["bert"], root / "run", epochs=1), progress=False)
    other = make_tiny_model("bert", root / "other-bert", seed=123)  # same architecture and shapes, other weights
    return root / "run", other


def _repoint(run, tmp_path, base):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    cfg = yaml.safe_load((copy / "config.yaml").read_text())
    cfg["model"]["name"] = str(base)
    (copy / "config.yaml").write_text(yaml.safe_dump(cfg))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["base_model"].update(name=str(base), path=str(base))
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def test_adapter_on_a_different_base_fails_with_the_reason(run_and_other_base, tmp_path):
    run, other = run_and_other_base
    moved = _repoint(run, tmp_path, other)
    with pytest.raises(ModelError, match=r"was trained on base .* with weights sha256 [0-9a-f]{12}…, but .* has "
                                         r"[0-9a-f]{12}…\. Load it on the original base, or pass check_base=False"):
        Predictor.load(moved)
    assert Predictor.load(moved, check_base=False).predict_proba(["good"]).shape == (1, 3)  # the expert override


def test_adapter_on_another_architecture_fails(run_and_other_base, tiny_models, tmp_path):
    run, _ = run_and_other_base
    moved = _repoint(run, tmp_path, tiny_models["distilbert"])
    with pytest.raises(ModelError, match="does not fit this base model|weights sha256"):
        Predictor.load(moved)
    with pytest.raises(ModelError, match="does not fit this base model"):
        Predictor.load(moved, check_base=False)


def test_label_map_must_match_the_head(run_and_other_base, tmp_path):
    run, _ = run_and_other_base
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "labels.json").write_text(json.dumps({"labels": ["a", "b", "c", "d"], "multi_label": False}))
    with pytest.raises(ModelError, match="does not fit this base model|outputs but labels.json lists 4"):
        Predictor.load(copy)


def test_unfinished_run_folder_is_refused(tmp_path):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.yaml").write_text("{}")
    with pytest.raises(ModelError, match=r"is not a finished run folder \(no manifest.json\)"):
        Predictor.load(tmp_path / "half")


def test_predict_and_serve_truncate_as_the_run_was_trained(tiny_models, tmp_path):
    from conftest import write_splits

    from textlora.serve.registry import Registry, RunSpec

    cfg = tiny_config(write_splits(tmp_path / "data", 30, 9, 9), tiny_models["bert"], tmp_path / "run", epochs=1)
    cfg.model.max_length, cfg.model.truncation = 7, "tail"
    train(cfg, progress=False)
    end = "i love this wonderful chair"  # 5 words + [CLS] and [SEP]: what "tail" keeps of the long text
    texts = ["the window is so bad and awful . " + end, end]
    clf = Predictor.load(tmp_path / "run")
    assert clf.config.model.truncation == "tail"
    long, short = clf.logits(texts)
    assert long == pytest.approx(short, abs=1e-5)
    served = Registry.load([RunSpec.parse(f"r={tmp_path / 'run'}")]).scores("r", texts)
    assert served[0] == pytest.approx(served[1], abs=1e-5)
    assert served[1] == pytest.approx(clf.predict_proba([end])[0], abs=1e-5)


def test_bf16_predicts_in_bfloat16_close_to_fp32(run_and_other_base, monkeypatch):
    import numpy as np
    import torch

    from textlora.errors import ConfigError

    run, _ = run_and_other_base
    texts = ["good great day", "the bad awful chair", "a table and a door", "i love it"]
    dtypes = set()  # output dtypes of every Linear during the bf16 predictions

    def record(module, args, output):
        if isinstance(module, torch.nn.Linear):
            dtypes.add(output.dtype)

    fp32 = Predictor.load(run).logits(texts)
    monkeypatch.setattr("textlora.model.precision.native_bf16", lambda device: True)  # no hardware warning here
    bf16 = Predictor.load(run, precision="bf16")
    handle = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        logits = bf16.logits(texts)
    finally:
        handle.remove()
    assert dtypes == {torch.bfloat16} and logits.dtype == np.float32
    assert np.allclose(logits, fp32, atol=0.05) and not np.array_equal(logits, fp32)
    monkeypatch.setattr("textlora.model.precision.native_bf16", lambda device: False)
    with pytest.warns(UserWarning, match="AMX or AVX512-BF16"):
        Predictor.load(run, precision="bf16")
    with pytest.raises(ConfigError, match=r"precision must be one of \['auto', 'fp32', 'bf16', 'fp16'\], got 'fp8'"):
        Predictor.load(run, precision="fp8")
    with pytest.raises(ConfigError, match="'fp16' needs a CUDA GPU"):
        Predictor.load(run, precision="fp16", device="cpu")
    with pytest.raises(ConfigError, match="exclude each other"):
        Predictor.load(run, int8=True, precision="bf16")


def test_int8_quantizes_every_linear_layer_quietly_and_stays_close_to_fp32(run_and_other_base):
    import warnings

    import numpy as np
    import torch
    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

    run, _ = run_and_other_base
    texts = ["good great day", "the bad awful chair", "a table and a door", "i love it"]
    fp32 = Predictor.load(run).logits(texts)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        int8 = Predictor.load(run, int8=True)
        logits = int8.logits(texts)
    assert not [w for w in caught if "quantiz" in str(w.message)]  # torch's torchao notices are not the user's
    kinds = {type(m) for m in int8.model.modules() if isinstance(m, (torch.nn.Linear, DynamicInt8Linear))}
    assert kinds == {DynamicInt8Linear}
    assert np.allclose(logits, fp32, atol=0.05) and not np.array_equal(logits, fp32)


class _NoSpecialTokens:
    """A tokenizer that adds no [CLS]/[SEP] (as GPT-2's does not): an empty text has no tokens at all."""

    def __init__(self, tokenizer):
        self._tok = tokenizer

    def __call__(self, texts, **kwargs):
        return self._tok(texts, add_special_tokens=False, **kwargs)

    def __getattr__(self, name):
        return getattr(self._tok, name)


def test_predictor_is_a_run_and_a_model_with_its_batching_and_selection(run_and_other_base):
    import contextlib

    import numpy as np

    from textlora.run_folder import Run

    run, _ = run_and_other_base
    clf = Predictor.load(run)
    calls = []

    def batching(lengths, rows):
        calls.append((list(lengths), rows))
        return [[i] for i in range(len(lengths))]  # one text per pass

    @contextlib.contextmanager
    def select():
        calls.append("select")
        yield clf.model

    texts = ["good happy day", "the awful chair", "window"]
    p = Predictor(Run.open(run), clf.model, clf.tokenizer, batch_size=7, batching=batching, select=select)
    np.testing.assert_allclose(p.predict_proba(texts), clf.predict_proba(texts), atol=1e-5)
    assert calls[0] == "select" and calls[1][1] == 7 and len(calls[1][0]) == 3
    assert p.predict(texts) == clf.predict(texts) and p.labels_ == clf.labels_ and p.run_dir == run
    assert p.logits([]).shape == (0, len(clf.labels_))
    bare = Predictor(Run.open(run), clf.model, _NoSpecialTokens(clf.tokenizer))
    assert bare.predict_proba([""]).shape == (1, len(clf.labels_))  # a text of no tokens is one pad token
