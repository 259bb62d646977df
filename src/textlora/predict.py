"""`Predictor`: load a run folder once, then `predict` / `predict_proba` on new texts.

>>> clf = load("runs/emotion-lora")  # doctest: +SKIP
>>> clf.predict(["i feel wonderful today"])  # doctest: +SKIP
['joy']

A multi-label run (trained on label lists) predicts every label whose sigmoid score reaches its
threshold, tuned on validation at training time and saved as `thresholds.json` in the run folder:

>>> load("runs/goemotions-lora").predict(["thanks, that made me laugh"])  # doctest: +SKIP
[['amusement', 'gratitude']]
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from textlora import device as devices
from textlora.config import RunConfig
from textlora.data.batching import encode_for
from textlora.data.labels import LabelMap
from textlora.errors import ConfigError, ModelError
from textlora.heads import LabelKind, kind_of
from textlora.model.arch import unwrap
from textlora.model.inference import forward_logits, quantize_int8
from textlora.model.load import fit_max_length
from textlora.model.precision import resolve_precision, warn_if_emulated
from textlora.model.saving import load_model
from textlora.run_folder import (  # noqa: F401 - the base checks, importable from here as before
    Run,
    check_base_identity,
    find_base,
    load_thresholds,
)


class Predictor:
    """A trained run, ready to classify texts. Build it with `Predictor.load(run_dir)`.

    Args:
        run: the opened run folder (`Run.open`).
        model: the model that computes it (for a served run on a shared base: the shared model).
        tokenizer: the run's tokenizer.
        batch_size: texts per forward pass; None: the device's default (`textlora.device.EVAL_BATCH`).
        precision: 'fp32', or 'bf16' / 'fp16': the forward pass under autocast.
        batching: (token lengths, batch_size) -> row indices of each forward pass; None: `eval_batches` at the
            device's token budget. The server passes `serve.registry.tight_batches`.
        select: a context that puts this run's weights in `model` and yields the model to call (a shared base's
            `activate`); None: `model` as it is.
        calibrate: divide the logits by the run's temperature before the softmax when training found that it
            lowers validation ECE (`calibration.json`); False: the raw softmax. Labels are the same either way.
    """

    def __init__(self, run: Run, model: Any, tokenizer: Any, batch_size: int | None = None, precision: str = "fp32",
                 batching: Callable[[Sequence[int], int], list[list[int]]] | None = None,
                 select: Callable[[], contextlib.AbstractContextManager] | None = None, calibrate: bool = True):
        self.run = run
        self.model = model
        self.precision = precision
        """'fp32', or 'bf16' / 'fp16': the forward pass under autocast."""
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        """Texts per forward pass; None: the device's default (`textlora.device.EVAL_BATCH`)."""
        self.batching = batching
        self.select = select or (lambda: contextlib.nullcontext(model))
        # runs from before the positions check may record a max_length their model cannot take
        run.config.model.max_length = fit_max_length(unwrap(model).config, run.config.model.max_length, run.path)
        self.thresholds_ = run.thresholds
        """Multi-label runs: per-label decision thresholds in `labels_` order; None for single-label."""
        self.kind: LabelKind = kind_of(run.labels)
        """Single- or multi-label (`textlora.heads`): scores, decisions and metrics."""
        self.temperature_ = run.temperature if calibrate else 1.0
        """What `predict_proba` divides the logits by: the run's fitted temperature when applied, else 1.0."""

    @property
    def labels_(self) -> list[str]:
        """Label names in the order of `predict_proba`'s columns."""
        return self.run.labels.labels

    @property
    def label_map(self) -> LabelMap:
        """The run's `LabelMap`."""
        return self.run.labels

    @property
    def config(self) -> RunConfig:
        """The run's config (`model.max_length` clamped to the model's positions)."""
        return self.run.config

    @property
    def manifest(self) -> dict[str, Any]:
        """The run's manifest."""
        return self.run.manifest

    @property
    def run_dir(self) -> Path:
        """The run folder."""
        return self.run.path

    @classmethod
    def load(cls, run_dir: str | Path, check_base: bool = True, batch_size: int | None = None,
             int8: bool = False, precision: str = "fp32", device: str = "auto", calibrate: bool = True,
             runtime: str = "torch") -> Predictor:
        """Load the run at `run_dir` onto its base model (LoRA merged into the weights) on `device`.

        Args:
            check_base: verify that the base model's weights are the ones the run was trained on.
            int8: dynamically quantize the linear layers to int8 (CPU only; faster, slightly less exact).
            precision: 'fp32' (default: what the run's metrics were computed in), 'bf16' or 'fp16' (GPU only)
                autocast, or 'auto' (the device's fastest: `model.precision.resolve_precision`); 16-bit is faster
                where the hardware has it and slightly less exact (bench/RESULTS.md).
            device: auto (a CUDA GPU when there is one, else the CPU), cpu, cuda or cuda:N.
            calibrate: apply the run's temperature to `predict_proba` when training recorded it as lowering
                validation ECE (`calibration.json`); False: raw softmax scores, as runs without the file give.
            runtime: 'torch', or 'onnx': the run's merged model exported to ONNX once (cached in the run folder)
                and run by ONNX Runtime on the CPU, fp32 or with `int8` weights (`model/onnx_runtime.py`).

        Raises:
            ModelError: not a finished run, or its base is missing or different.
            ConfigError: an unknown precision, device or runtime, a GPU that is not there, int8 with a 16-bit
                precision or on a GPU, or runtime 'onnx' without its extra.
        """
        if runtime != "torch":
            return cls._load_onnx(run_dir, check_base, batch_size, int8, precision, device, runtime, calibrate)
        where = devices.resolve(device)
        precision = resolve_precision(precision, where)
        if precision != "fp32" and int8:
            raise ConfigError(f"int8 and precision={precision!r} exclude each other: int8 quantizes the linear "
                              "layers, 16-bit autocasts them. Pick one.")
        if int8 and where.type != "cpu":
            raise ConfigError("int8 is PyTorch's CPU dynamic quantization; on a GPU use precision='bf16' instead, "
                              "or device='cpu'.")
        run = Run.open(run_dir)
        if calibrate:
            run.temperature  # noqa: B018 - a broken calibration.json fails before the model loads
        if check_base:
            run.check_base()
        model, tokenizer = load_model(run.path, run.method, run.base, run.labels, run.config.model.attn_implementation)
        if int8:
            model = quantize_int8(model)
        model.to(devices.prepare(where))
        warn_if_emulated(precision, where.type)
        return cls(run, model, tokenizer, batch_size, precision, calibrate=calibrate)

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Copy this run's folder to `path` (e.g. a run `textlora.fit` trained in a temporary folder) and return
        `path`; load it later with `textlora.load(path)`.

        Why: a run is a folder; keeping one is copying it whole, written beside `path` and renamed into place.
        `overwrite` replaces only an earlier textlora run or an empty folder, never other files.

        Raises:
            RunExistsError: `path` holds files (without `overwrite`), or files that are not a textlora run.
            ConfigError: `path` is this run's folder, inside it, or holds it.
        """
        from textlora.run_folder import staged_dir

        out, here = Path(path), self.run.path.resolve()
        target = out.resolve()
        if target == here or target.is_relative_to(here) or here.is_relative_to(target):
            how = "is" if target == here else "is inside" if target.is_relative_to(here) else "holds"
            raise ConfigError(f"save: {out} {how} the run folder {self.run.path}; choose a folder apart from it.")
        with staged_dir(out, overwrite) as staging:
            shutil.copytree(self.run.path, staging, dirs_exist_ok=True)
        return out

    @classmethod
    def _load_onnx(cls, run_dir: str | Path, check_base: bool, batch_size: int | None, int8: bool, precision: str,
                   device: str, runtime: str, calibrate: bool = True) -> Predictor:
        """`load` with runtime 'onnx': the checks, then an `OnnxModel` in the model's place."""
        from textlora.model.onnx_runtime import load_onnx, require_onnx

        if runtime != "onnx":
            raise ConfigError(f"runtime must be 'torch' or 'onnx', got {runtime!r}.")
        if devices.check_spec(device) not in ("auto", "cpu"):
            raise ConfigError(f"runtime 'onnx' runs on the CPU (ONNX Runtime's CPU provider), got device={device!r}; "
                              "use device='cpu', or runtime='torch' on a GPU.")
        if precision not in ("fp32", "auto"):
            raise ConfigError(f"runtime 'onnx' computes in fp32, or with int8 weights (int8=True); got "
                              f"precision={precision!r}: use precision='fp32'.")
        require_onnx()
        run = Run.open(run_dir)
        if calibrate:
            run.temperature  # noqa: B018 - a broken calibration.json fails before the export
        model, tokenizer = load_onnx(run, int8, check_base)
        return cls(run, model, tokenizer, batch_size, "fp32", calibrate=calibrate)

    @property
    def device(self) -> Any:
        """The torch.device the model computes on."""
        return devices.of(self.model)

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """Raw logits (n, num_labels)."""
        texts = _as_list(texts)
        if not texts:
            return np.zeros((0, len(self.labels_)), dtype=np.float32)
        cfg = self.config.model
        enc = encode_for(self.tokenizer, texts, cfg)
        pad_id = self.tokenizer.pad_token_id
        enc.input_ids = [ids or [pad_id] for ids in enc.input_ids]  # a tokenizer without [CLS] may give none
        with self.select() as model:
            rows = devices.eval_batch_size(devices.of(model), self.batch_size)
            batches = self.batching(enc.lengths, rows) if self.batching is not None else None
            return forward_logits(model, enc, pad_id, rows, self.precision, batches)

    def predict_proba(self, texts: str | Sequence[str]) -> np.ndarray:
        """Scores (n, num_labels), columns in `labels_` order: softmax probabilities (of the logits divided by
        `temperature_`, the run's calibration), or an independent sigmoid score per label for multi-label runs
        (never calibrated: 1.0)."""
        return self.kind.scores(self.logits(_as_list(texts)) / self.temperature_)

    def predict(self, texts: str | Sequence[str]) -> list[str] | str | list[list[str]]:
        """Label names; a single string in gives a single label out. Multi-label runs give a list of the
        labels whose score reaches their threshold per text (possibly empty)."""
        labels = self.kind.decide(self.predict_proba(texts), self.thresholds_)
        return labels[0] if isinstance(texts, str) else labels


def export_merged(run_dir: str | Path, out: str | Path, check_base: bool = True, device: str = "cpu") -> Path:
    """Write the run at `run_dir` as a merged full-precision Hugging Face model folder at `out`: the base
    in fp32 (dequantized NF4 for qlora runs) with the LoRA update merged in and the trained head.
    Multi-label runs keep `problem_type` but not their thresholds: copy `thresholds.json` if you need them.

    >>> export_merged("runs/emotion-qlora", "exported/emotion")  # doctest: +SKIP
    >>> AutoModelForSequenceClassification.from_pretrained("exported/emotion")  # doctest: +SKIP
    """
    from textlora.model.saving import save_merged

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):  # before the model loads
        raise ModelError(f"--out {out} exists and is not an empty folder; choose a new folder for the export.")
    clf = Predictor.load(run_dir, check_base=check_base, device=device)
    clf.model.to("cpu")  # the merged weights are written from the host, whichever device merged them
    base = clf.run.base if clf.run.method != "full" else str(clf.run.path_of("model"))
    save_merged(clf.model, base, clf.label_map, clf.tokenizer, out, clf.config.model.attn_implementation)
    return out


def load(run_dir: str | Path, check_base: bool = True, **options: Any) -> Predictor:
    """Shortcut for `Predictor.load` (`options`: batch_size, int8, precision, device, calibrate, runtime).

    >>> load("runs/emotion-lora", calibrate=False).predict_proba(["great"])  # doctest: +SKIP
    """
    return Predictor.load(run_dir, check_base=check_base, **options)


def _as_list(texts: str | Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    texts = list(texts)
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise ValueError(f"texts must be strings; item {bad[0]} is {type(texts[bad[0]]).__name__}.")
    return texts


def evaluate_split(clf: Predictor, data_path: str, split: str = "test", text_column: str | None = None,
                   label_column: str | None = None) -> dict[str, Any]:
    """Metrics of `clf` on one split of a dataset, carved as at training time when it has no file.

    Raises:
        DataError: a label of the split is not one of the run's labels.
    """
    from textlora.data.splits import load_dataset

    data_cfg = clf.config.data
    overrides = {"path": data_path, "max_train_samples": None, "max_eval_samples": None, "shots_per_class": None}
    overrides.update({k: v for k, v in (("text_column", text_column), ("label_column", label_column)) if v})
    cfg = type(data_cfg)(**{**data_cfg.__dict__, **overrides})
    s = load_dataset(cfg).splits()[split]
    y = clf.label_map.encode(s.labels, source=Path(s.source).name, row_names=s.row_names or None)
    return clf.kind.metrics(clf.logits(s.texts), y, clf.thresholds_)


def read_texts(path: str, text_column: str = "text") -> list[str]:
    """Texts to classify: one per line of a .txt file, or the text column of a data file."""
    from textlora.data.io import check_text, read_lines, read_records
    from textlora.errors import DataError

    p = Path(path)
    if p.suffix.lower() == ".txt" and p.is_file():
        return read_lines(p)
    records, names, columns = read_records(p)
    if text_column not in columns:
        raise DataError(f"{p.name}: column {text_column!r} not found; columns are {sorted(columns)}. "
                        "Pass --text-column.")
    return [check_text(r.get(text_column), p, n, text_column) for r, n in zip(records, names)]
