"""Tiny random-weight models (BERT, DistilBERT, GPT-2) and tiny datasets, built in-process."""

from __future__ import annotations

import contextlib
import json
import os
import random
from pathlib import Path

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

WORDS = {
    "pos": ["good", "great", "happy", "love", "wonderful", "nice"],
    "neg": ["bad", "awful", "sad", "hate", "terrible", "angry"],
    "neu": ["table", "chair", "window", "paper", "door", "wall"],
}
FILLER = ["the", "a", "is", "was", "it", "this", "very", "so", "and", "i"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + FILLER + [w for ws in WORDS.values() for w in ws] + [
    "fan", "don't", "recommend", "not", ".", ",", "'", "!", "?"]
SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def _fail_skip(report) -> None:
    """With TEXTLORA_FAIL_ON_SKIP=1 (set by .ci/run) a skip is a failure: CI must run the browser, ONNX,
    tracking and PostgreSQL tests, not skip them quietly when a package or program is missing."""
    if report.skipped and os.environ.get("TEXTLORA_FAIL_ON_SKIP") == "1" and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under TEXTLORA_FAIL_ON_SKIP=1 (CI runs every test): {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A skipped test fails in CI (`_fail_skip`)."""
    outcome = yield
    _fail_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """A module skipped at import (`pytest.importorskip`) fails in CI (`_fail_skip`)."""
    outcome = yield
    _fail_skip(outcome.get_result())


@pytest.fixture(autouse=True)
def _seed_and_dtype():
    torch.manual_seed(0)
    random.seed(0)
    dtype = torch.get_default_dtype()
    yield
    torch.set_default_dtype(dtype)


def _bert_tokenizer(folder: Path, cls_name: str = "BertTokenizerFast"):
    import inspect

    import transformers

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    cls = getattr(transformers, cls_name)
    if "vocab" in inspect.signature(cls.__init__).parameters:  # transformers >= 5
        return cls(vocab={w: i for i, w in enumerate(VOCAB)}, do_lower_case=True)
    return cls(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)


def _gpt2_tokenizer(folder: Path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<unk>", "<eos>"] + VOCAB[5:])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>", bos_token="<eos>")


def make_tiny_model(kind: str, folder: Path, seed: int = 0) -> Path:
    """Save a tiny random `kind` ('bert', 'distilbert', 'gpt2') model and its tokenizer to `folder`."""
    import transformers as tf

    torch.manual_seed(seed)
    if kind == "bert":
        tok = _bert_tokenizer(folder)
        cfg = tf.BertConfig(vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=32, max_position_embeddings=64)
        model = tf.BertModel(cfg)
    elif kind == "distilbert":
        tok = _bert_tokenizer(folder, "DistilBertTokenizerFast")
        cfg = tf.DistilBertConfig(vocab_size=len(VOCAB), dim=16, n_layers=2, n_heads=2, hidden_dim=32,
                                  max_position_embeddings=64)
        model = tf.DistilBertModel(cfg)
    elif kind == "gpt2":
        tok = _gpt2_tokenizer(folder)
        cfg = tf.GPT2Config(vocab_size=len(tok), n_embd=16, n_layer=2, n_head=2, n_positions=64,
                            bos_token_id=1, eos_token_id=1)
        model = tf.GPT2Model(cfg)
    else:
        raise ValueError(kind)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {k: make_tiny_model(k, root / k) for k in ("bert", "distilbert", "gpt2")}


def make_rows(n: int, seed: int = 0, labels: tuple[str, ...] = ("pos", "neg", "neu")) -> list[dict]:
    """`n` short texts whose label is given by which word list they draw from."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = labels[i % len(labels)]
        words = rng.sample(FILLER, 3) + rng.sample(WORDS[label], 2)
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_splits(folder: Path, train: int = 90, validation: int = 30, test: int = 30) -> Path:
    """A dataset folder with train/validation/test JSONL files of `make_rows` (seeds 1, 2, 3)."""
    for split, (n, seed) in {"train": (train, 1), "validation": (validation, 2), "test": (test, 3)}.items():
        write_jsonl(folder / f"{split}.jsonl", make_rows(n, seed=seed))
    return folder


@pytest.fixture
def tiny_data(tmp_path) -> Path:
    """A dataset folder with train (90), validation (30) and test (30) JSONL files."""
    return write_splits(tmp_path / "data")


def tiny_config(data: Path, model: Path, out: Path, method: str = "lora", epochs: int = 2, **train):
    """A config for the tiny models; fp32 unless `precision` is given, since 'auto' depends on the CPU's bf16 units
    and the logic tests compare runs to float rounding."""
    from textlora.config import RunConfig

    return RunConfig.from_dict({
        "data": {"path": str(data)},
        "model": {"name": str(model), "method": method, "max_length": 32},
        "lora": {"r": 4, "alpha": 8},
        "train": {"epochs": epochs, "batch_size": 8, "lr": 1e-2, "precision": "fp32", **train},
        "out": str(out),
    })


@contextlib.contextmanager
def serve_process(specs: list[str], *flags: str):
    """`textlora serve SPECS FLAGS` as a real subprocess on a free 127.0.0.1 port, once it answers /healthz;
    yields (base URL, port) and stops it on exit."""
    import socket
    import subprocess
    import sys
    import time

    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "textlora.cli", "serve", *specs, "--host", "127.0.0.1", "--port", str(port), *flags]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}:\n{proc.stdout.read()}")
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            pytest.fail("server did not answer /healthz within 90 s")
        yield url, port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
