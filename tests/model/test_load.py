"""Loading a base: what --model and --max-length may be, and the one-line errors when they are wrong."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from textlora.data.labels import LabelMap
from textlora.errors import ConfigError, ModelError
from textlora.model.load import base_identity, check_model, fit_max_length, load_base, max_positions

LABELS = LabelMap(["neg", "neu", "pos"])
SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.mark.parametrize("kind", ["bert", "distilbert", "gpt2"])
def test_max_length_beyond_the_positions_is_refused(tiny_models, kind):
    check_model(str(tiny_models[kind]), 64)  # the tiny models have 64 positions
    with pytest.raises(ConfigError, match=r"max_length \(--max-length\) is 65, .* has 64 positions; pass --max-length 64"):
        check_model(str(tiny_models[kind]), 65)


def test_roberta_positions_exclude_the_padding_offset():
    from transformers import RobertaConfig

    assert max_positions(RobertaConfig(max_position_embeddings=514, pad_token_id=1)) == 512


def test_train_refuses_max_length_before_reading_data(tiny_models, tmp_path):
    from conftest import tiny_config

    from textlora.train import train

    cfg = tiny_config(tmp_path / "no-data-here", tiny_models["bert"], tmp_path / "run")
    cfg.model.max_length = 1000
    with pytest.raises(ConfigError, match="pass --max-length 64 or less"):
        train(cfg, progress=False)


@pytest.fixture(scope="module")
def tiny_run(tiny_models, tmp_path_factory) -> Path:
    from conftest import tiny_config, write_splits

    from textlora.train import train

    root = tmp_path_factory.mktemp("load")
    cfg = tiny_config(write_splits(root / "data"), tiny_models["bert"], root / "run", epochs=1)
    train(cfg, progress=False)
    return root / "run"


def test_predict_clamps_an_old_run_with_too_large_max_length(tiny_run, tmp_path):
    from textlora.predict import Predictor

    run = tmp_path / "old-run"
    shutil.copytree(tiny_run, run)
    cfg_file = run / "config.yaml"
    cfg_file.write_text(cfg_file.read_text().replace("max_length: 32", "max_length: 1000"))  # as an old run could
    with pytest.warns(UserWarning, match="max_length 1000 exceeds the model's 64 positions"):
        clf = Predictor.load(run)
    assert clf.config.model.max_length == 64
    assert len(clf.predict(["good " * 500])) == 1  # before: an index error in the position embeddings


def test_fit_max_length_keeps_what_fits(tiny_models):
    from transformers import AutoConfig

    assert fit_max_length(AutoConfig.from_pretrained(tiny_models["gpt2"]), 32, "run") == 32


@pytest.mark.parametrize("what", ["empty", "data", "file"])
def test_model_that_is_not_a_model_folder(tmp_path, tiny_data, what):
    path = {"empty": tmp_path / "empty", "data": tiny_data, "file": tiny_data / "train.jsonl"}[what]
    if what == "empty":
        path.mkdir()
    with pytest.raises(ModelError, match=r"expected a Hugging Face model folder .* Pass the model's folder"):
        load_base(str(path), LABELS)


def test_pickle_weights_are_not_safe_to_load(tiny_models, tmp_path):
    import torch
    from safetensors.torch import load_file

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_models["bert"], folder)
    state = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    state["extra"] = _Anything()  # a pickle that holds more than tensors
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(ModelError, match="this file is not safe to load") as e:
        load_base(str(folder), LABELS)
    assert "weights_only" not in str(e.value)


class _Anything:
    pass


def test_hub_id_not_cached_fails_at_once_when_offline(monkeypatch):
    """conftest sets HF_HUB_OFFLINE=1. Without it and without network the same call retried for ~48 s."""
    with pytest.raises(ModelError, match="not in the local Hugging Face cache; the hub cannot be reached"):
        load_base("nobody-here/no-such-model", LABELS)


def test_hub_id_fails_at_once_without_network(monkeypatch):
    import socket

    from huggingface_hub import constants

    from textlora.model import load

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(k, raising=False)

    def no_network(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", no_network)
    load._hub_reachable.cache_clear()
    try:
        with pytest.raises(ModelError, match="not in the local Hugging Face cache; the hub cannot be reached"):
            load_base("nobody-here/no-such-model", LABELS)
    finally:
        load._hub_reachable.cache_clear()


def _fake_hub_cache(cache: Path, repo: str, model: Path) -> None:
    """Lay `model`'s files out as the Hugging Face cache holds a downloaded `repo`."""
    commit = "0" * 40
    entry = cache / f"models--{repo.replace('/', '--')}"
    (entry / "refs").mkdir(parents=True)
    (entry / "refs" / "main").write_text(commit)
    shutil.copytree(model, entry / "snapshots" / commit)


def test_hub_id_base_records_its_weights_sha256(tiny_models, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    _fake_hub_cache(tmp_path / "hub", "someone/tiny-bert", tiny_models["bert"])
    local = base_identity(str(tiny_models["bert"]))
    hub = base_identity("someone/tiny-bert")
    assert hub["weights_sha256"] is not None and hub["weights_sha256"] == local["weights_sha256"]
    assert hub["path"] == "someone/tiny-bert" and hub["model_type"] == "bert"


def test_predict_prints_no_future_warning(tiny_run):
    run = tiny_run
    env = {**__import__("os").environ, "PYTHONPATH": str(SRC)}
    out = subprocess.run([sys.executable, "-m", "textlora.cli", "predict", str(run), "good happy"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "FutureWarning" not in out.stderr, out.stderr
    assert out.stdout.strip()




def test_model_folder_without_tokenizer_is_refused(tiny_models, tmp_path):
    """transformers 5 builds an empty tokenizer for such a folder: every word became [UNK], silently."""
    folder = tmp_path / "no-tokenizer"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_models["bert"] / name, folder / name)
    with pytest.raises(ModelError, match="holds no tokenizer .* Save the tokenizer into the model's folder"):
        check_model(str(folder), 32)
