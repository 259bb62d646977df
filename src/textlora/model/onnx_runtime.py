"""ONNX Runtime inference: a run's merged model exported once to ONNX, cached in the run folder, run on the CPU.

    >>> clf = textlora.load("runs/emotion-lora", runtime="onnx")             # doctest: +SKIP
    >>> clf = textlora.load("runs/emotion-lora", runtime="onnx", int8=True)  # int8 weights  # doctest: +SKIP

The model is the one `Predictor.load` builds (LoRA merged into the base, qlora dequantized, the trained head),
exported with `torch.onnx.export(dynamo=True)` with dynamic batch and sequence axes. The dynamo exporter, not
the TorchScript one: on MiniLM the TorchScript trace gave logits 0.03 away from PyTorch's, the dynamo export
agrees to float rounding (and exports BERT, DistilBERT and GPT-2 alike). `int8` is
`onnxruntime.quantization.quantize_dynamic` of that fp32 model (int8 weights, activations quantized per batch).

`OnnxModel` takes the collated batch a Hugging Face classifier takes (`input_ids`, `attention_mask`) and answers
`.logits`, so `Predictor` keeps its one path: labels, truncation, length-sorted batches and thresholds are the
run's, whichever runtime computes.

The cache (`onnx/` in the run folder, named in `run_folder.FILES`): each file is written to a temporary name
and renamed into place; `onnx/source.json` records each file's sha256 and the sha256 of the run's weights it was
exported from. A file whose weights changed is exported again; a file textlora did not write (its sha256 is not
the recorded one) is never replaced. A read-only run folder gets its export in a temporary folder, with a warning.
Needs the `onnx` extra: `pip install "textlora[onnx]"`.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from textlora.errors import ConfigError, ModelError
from textlora.run_folder import WEIGHTS, Run, path_of

OPSET = 18
"""The ONNX opset of the export (the dynamo exporter's own)."""
EXPORT_VERSION = 1
"""Bumped when the export itself changes: a cache written by another version is exported again."""
PARTS = {False: "onnx", True: "onnx_int8"}
"""int8 -> the `run_folder.FILES` key of the cached model."""


def require_onnx() -> Any:
    """`onnxruntime`, or a one-line ConfigError naming the extra to install.

    Why: ONNX support is an optional extra; a missing package is a setting the user can fix."""
    try:
        import onnx  # noqa: F401
        import onnxruntime
    except ImportError as e:
        raise ConfigError(f"runtime 'onnx' needs the package {e.name!r}, which is not installed: "
                          'pip install "textlora[onnx]" (onnx, onnxruntime, onnxscript), or use runtime \'torch\'.') from None
    return onnxruntime


class OnnxModel(torch.nn.Module):
    """An ONNX Runtime session called like a Hugging Face classifier: `model(input_ids=, attention_mask=).logits`.

    A parameterless module on the CPU, so `forward_logits` batches it as it batches a PyTorch model.

    Args:
        path: the .onnx file.
        config: the Hugging Face config of the exported model (its positions bound `max_length`).
        threads: intra-op threads; None follows `torch.get_num_threads()`.
    """

    def __init__(self, path: str | Path, config: Any, threads: int | None = None):
        super().__init__()
        ort = require_onnx()
        self.path = Path(path)
        self.config = config
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_: Any) -> SimpleNamespace:
        """Logits (B, num_labels) as a CPU tensor, in `.logits` as a Hugging Face output has them."""
        feed = {"input_ids": input_ids.cpu().numpy(), "attention_mask": attention_mask.cpu().numpy()}
        return SimpleNamespace(logits=torch.from_numpy(self.session.run(["logits"], feed)[0]))


def load_onnx(run: Run, int8: bool = False, check_base: bool = True) -> tuple[OnnxModel, Any]:
    """(OnnxModel, tokenizer) for `run`: its cached ONNX model (exported on first use), and its tokenizer.

    Raises:
        ConfigError: the onnx extra is not installed.
        ModelError: the base is missing or different (when exporting), or the cache holds a file textlora did
            not write.
    """
    from transformers import AutoConfig

    from textlora.model.load import load_tokenizer

    path = onnx_path(run, int8, check_base)
    source = run.path_of("model") if run.method == "full" else run.base
    tokenizer = load_tokenizer(str(run.path_of("tokenizer") if run.has("tokenizer") else run.base))
    return OnnxModel(path, AutoConfig.from_pretrained(str(source))), tokenizer


def onnx_path(run: Run, int8: bool = False, check_base: bool = True) -> Path:
    """The run's ONNX model (fp32, or int8 weights): from the cache when it was exported from the run's current
    weights, else exported now (and cached when the run folder is writable).

    Why: exporting takes seconds to a minute; a run's weights never change after training, so once is enough."""
    require_onnx()
    key = weights_sha256(run)
    target = run.path_of(PARTS[int8])
    if _is_current(target, key):
        return target
    if not _writable(target.parent):
        folder = Path(tempfile.mkdtemp(prefix="textlora-onnx-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        warnings.warn(f"{run.path} is read-only: its ONNX model is exported to {folder} for this process only (not "
                      "cached). Make the run folder writable to cache the export there.", UserWarning, stacklevel=2)
        return _export_into(run, folder, int8, check_base, key)
    with _lock(target.parent):  # two processes loading one run export it once, and never lose a record
        for part in (False, True) if int8 else (False,):  # int8 is quantized from the fp32 export
            _cache(run, part, key, check_base)
    return target


def _cache(run: Run, int8: bool, key: str, check_base: bool) -> None:
    """Export one file of the cache unless it is current (under the cache's lock)."""
    target = run.path_of(PARTS[int8])
    if _is_current(target, key):
        return
    _check_ours(target)
    with _staged(target) as tmp:
        if int8:
            quantize_int8(run.path_of(PARTS[False]), tmp)
        else:
            export_fp32(_merged_model(run, check_base), tmp)
    _record(target, key)


def weights_sha256(run: Run) -> str:
    """A sha256 over what an export is made of: the run's trained weights (adapter, head or full model), its base's
    weights sha256 and the export version. Why: a changed adapter must not be served from a stale export."""
    h = hashlib.sha256(f"textlora-onnx {EXPORT_VERSION} {OPSET}\n".encode())
    h.update(str((run.manifest or {}).get("base_model", {}).get("weights_sha256")).encode())
    for part in WEIGHTS:
        root = run.path_of(part)
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root] if root.is_file() else []
        for f in files:
            h.update(f"\n{f.relative_to(run.path)}\n".encode())
            h.update(_file_sha256(f).encode())
    return h.hexdigest()


def export_fp32(model: torch.nn.Module, out: Path) -> None:
    """Write `model` (a Hugging Face sequence classifier, on the CPU) to `out` as one ONNX file with inputs
    `input_ids`, `attention_mask` (int64, dynamic batch and sequence axes) and output `logits`.

    A BERT-style last layer is exported for [CLS] only (`model/cls_only.py`), as PyTorch computes it."""
    from textlora.model.cls_only import cls_only_last_layer

    require_onnx()
    wrapper = _Logits(model).eval()
    ids = torch.tensor([[2, 5, 6, 7, 3], [2, 5, 3, 0, 0]], dtype=torch.long) % model.config.vocab_size
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.long)
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}}
    # the exporter prints its progress to stdout, which is `textlora predict --json`'s output
    with (contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings(), _quiet_logs("torch.onnx"),
          cls_only_last_layer(model)):
        warnings.simplefilter("ignore")  # exporter notices (torchvision absent, deprecations): nothing to act on
        torch.onnx.export(wrapper, (ids, mask), str(out), input_names=["input_ids", "attention_mask"],
                          output_names=["logits"], dynamic_shapes=axes, dynamo=True, opset_version=OPSET,
                          external_data=False, verbose=False)


def quantize_int8(fp32: Path, out: Path) -> None:
    """Write the int8 version of the ONNX model `fp32` to `out`: dynamic quantization of the matrix products'
    weights (per channel), activations quantized per batch at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet_logs(""):  # the root logger's advice to pre-process (symbolic shape inference): not needed here
        quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8, per_channel=True)


def export_folder(run: Run, out: Path, int8: bool = False, check_base: bool = True) -> Path:
    """Copy the run's (cached) ONNX model to the new folder `out` with its tokenizer, labels.json and, for a
    multi-label run, thresholds.json: what an ONNX Runtime user needs beside the model."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):  # before the export
        raise ModelError(f"--out {out} exists and is not an empty folder; choose a new folder for the export.")
    model, tokenizer = load_onnx(run, int8, check_base)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy2(model.path, out / model.path.name)
    tokenizer.save_pretrained(out)
    for part in ("labels", "thresholds"):
        if run.has(part):
            shutil.copy2(run.path_of(part), out / run.path_of(part).name)
    return out / model.path.name


class _Logits(torch.nn.Module):
    """The classifier as (input_ids, attention_mask) -> logits, the signature exported: keyword arguments (GPT-2's
    second positional one is its cache), no cache."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        extra = {"use_cache": False} if getattr(self.model.config, "use_cache", None) is not None else {}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits


def _merged_model(run: Run, check_base: bool) -> torch.nn.Module:
    """The run's model as `Predictor.load` builds it on the CPU: LoRA merged, qlora dequantized."""
    from textlora.model.saving import load_model

    if check_base:
        run.check_base()
    model, _ = load_model(run.path, run.method, run.base, run.labels, run.config.model.attn_implementation)
    return model.float().eval()


def _export_into(run: Run, folder: Path, int8: bool, check_base: bool, key: str) -> Path:
    """Export to `folder` without a cache (a read-only run folder); an int8 model from the cached fp32 one if any."""
    fp32 = run.path_of(PARTS[False])
    if not _is_current(fp32, key):
        fp32 = folder / fp32.name
        export_fp32(_merged_model(run, check_base), fp32)
    if not int8:
        return fp32
    out = folder / run.path_of(PARTS[True]).name
    quantize_int8(fp32, out)
    return out


@contextlib.contextmanager
def _lock(folder: Path):
    """Hold an exclusive flock on `folder/.lock` for the block."""
    import fcntl  # POSIX only, as the run lock

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def _quiet_logs(name: str):
    """Only errors from the logger `name` ('' the root) for the block: the exporter's 'torchvision is not installed'
    lines, the quantizer's advice."""
    import logging

    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _source_path(target: Path) -> Path:
    return target.parent / Path(path_of("", "onnx_source")).name


def _read_source(target: Path) -> dict[str, Any]:
    """`onnx/source.json`: file name -> {sha256, weights_sha256}; empty when absent or unreadable."""
    try:
        record = json.loads(_source_path(target).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    files = record.get("files") if isinstance(record, dict) else None
    return files if isinstance(files, dict) else {}


def _is_current(target: Path, key: str) -> bool:
    """True when `target` is textlora's export of the weights `key`."""
    entry = _read_source(target).get(target.name)
    return (target.is_file() and isinstance(entry, dict) and entry.get("weights_sha256") == key
            and entry.get("sha256") == _file_sha256(target))


def _check_ours(target: Path) -> None:
    """Refuse to replace a file at `target` that textlora did not write (or that was changed since)."""
    if not target.exists():
        return
    entry = _read_source(target).get(target.name)
    if not (target.is_file() and isinstance(entry, dict) and entry.get("sha256") == _file_sha256(target)):
        raise ModelError(f"{target} exists but is not an ONNX export textlora wrote (or it was changed since); "
                         "textlora does not replace it: move it away and load again to export the run there.")


def _record(target: Path, key: str) -> None:
    """Note `target`'s sha256 and the weights it came from in `onnx/source.json` (written atomically)."""
    files = _read_source(target)
    files[target.name] = {"sha256": _file_sha256(target), "weights_sha256": key}
    source = _source_path(target)
    with _staged(source) as tmp:
        tmp.write_text(json.dumps({"format": "textlora-onnx-cache", "version": EXPORT_VERSION, "files": files},
                                  indent=2), encoding="utf-8")


@contextlib.contextmanager
def _staged(target: Path):
    """Yield a temporary path beside `target`; renamed onto `target` when the block succeeds, removed otherwise."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".tmp-{os.getpid()}-{target.name}"  # keeps the suffix: .onnx
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _writable(folder: Path) -> bool:
    """True when the cache folder can be created and written (its nearest existing parent is writable)."""
    p = folder
    while not p.exists():
        p = p.parent
    return os.access(p, os.W_OK | os.X_OK)


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()
