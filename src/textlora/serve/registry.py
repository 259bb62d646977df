"""The runs a server holds, loaded once at start-up: runs that share a base model share it in memory.

LoRA and head-only runs are grouped by base identity (the base folder and the weight sha256 in
each manifest); each group loads its base once into a `SharedBase` and swaps adapters and heads per
batch. Full fine-tuned runs own every weight, so each loads its own model.

>>> reg = Registry.load([RunSpec.parse("emotion=runs/emotion-lora")])  # doctest: +SKIP
>>> reg.scores("emotion", ["i feel wonderful today"]).shape  # doctest: +SKIP
(1, 6)
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from textlora.errors import ConfigError

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
"""What a served run name may look like: it appears in URLs, JSON and metric labels."""


@dataclass(frozen=True)
class RunSpec:
    """One `RUN` argument of `textlora serve`: a run folder and the name clients use for it."""

    name: str
    path: Path

    @classmethod
    def parse(cls, text: str) -> RunSpec:
        """`NAME=PATH`, or `PATH` (named after its folder).

        Raises:
            ConfigError: the name has characters other than letters, digits, `.`, `_`, `-`.
        """
        name, sep, path = text.partition("=")
        if not sep or Path(text).exists():
            name, path = Path(text).resolve().name, text
        if not NAME_PATTERN.match(name):
            raise ConfigError(f"run name {name!r} (from {text!r}) must be 1-64 letters, digits, '.', '_' or '-', "
                              "starting with a letter or digit. Name it explicitly: NAME=PATH.")
        return cls(name, Path(path))


@dataclass
class ServedRun:
    """A run ready to classify: its tokenizer, label map and the model (or shared base) that computes it."""

    name: str
    run_dir: Path
    method: str
    labels: list[str]
    multi_label: bool
    max_length: int
    tokenizer: Any
    manifest: dict[str, Any]
    metrics: dict[str, Any]
    model: Any
    """A `SharedBase` (lora and head runs) or a plain model (full runs)."""
    shared: bool = False
    thresholds: list[float] | None = None
    """Multi-label runs: the per-label decision thresholds of `thresholds.json`; None for single-label."""
    truncation: str = "head"
    """Which tokens of a longer text the run was trained on (model.truncation)."""

    def info(self) -> dict[str, Any]:
        """What `GET /v1/models` says about the run."""
        base = self.manifest.get("base_model", {})
        return {
            "name": self.name,
            "method": self.method,
            "base": {"name": base.get("name"), "model_type": base.get("model_type"),
                     "weights_sha256": base.get("weights_sha256"), "shared": self.shared},
            "labels": self.labels,
            "multi_label": self.multi_label,
            "metrics": self.metrics,
            "thresholds": dict(zip(self.labels, self.thresholds)) if self.thresholds is not None else None,
        }

    def activate(self) -> contextlib.AbstractContextManager:
        """Context in which `model` computes this run (adapter and head swapped in on a shared base)."""
        from textlora.model.multi import SharedBase

        if isinstance(self.model, SharedBase):
            return self.model.activate(self.name)
        return contextlib.nullcontext(self.model)


@dataclass
class Registry:
    """The served runs by name. Not thread-safe: call `scores` from one thread at a time."""

    runs: dict[str, ServedRun] = field(default_factory=dict)
    batch_size: int = 128
    precision: str = "fp32"
    """'fp32', or 'bf16' / 'fp16': forward passes under autocast (`textlora.model.precision`)."""
    device: Any = None
    """The torch.device every served model computes on."""

    @classmethod
    def load(cls, specs: Sequence[RunSpec], check_base: bool = True, precision: str = "fp32",
             device: str = "auto") -> Registry:
        """Load every run onto `device`; runs on the same base share one copy of it.

        Raises:
            ConfigError: two runs have the same name, no run was given, or the device or precision is not available.
            ModelError: a run folder is incomplete, or its base is missing or different.
        """
        from textlora import device as devices
        from textlora.model.precision import resolve_precision

        if not specs:
            raise ConfigError("serve needs at least one run folder: textlora serve RUN [RUN ...].")
        names = [s.name for s in specs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"run names {duplicates} are given more than once; name each run: NAME=PATH.")
        where = devices.prepare(devices.resolve(device))
        reg = cls(precision=resolve_precision(precision, where), device=where,
                  batch_size=devices.EVAL_BATCH["cuda"] if where.type == "cuda" else cls.batch_size)
        shared: dict[tuple[str, str | None, bool], Any] = {}
        for spec in specs:
            reg.runs[spec.name] = _load_run(spec, shared, check_base, where)
        from textlora.model.precision import warn_if_emulated

        warn_if_emulated(reg.precision, where.type)
        for base in shared.values():
            for name in base.runs:
                reg.runs[name].shared = len(base.runs) > 1
        return reg

    @property
    def names(self) -> list[str]:
        return sorted(self.runs)

    def scores(self, name: str, texts: list[str]) -> np.ndarray:
        """Per-label scores (n, num_labels): softmax, or per-label sigmoid for multi-label runs."""
        from textlora.data.batching import encode
        from textlora.metrics import softmax

        run = self.runs[name]
        pad_id = run.tokenizer.pad_token_id
        enc = encode(run.tokenizer, texts, run.max_length, run.truncation)
        enc.input_ids = [ids or [pad_id] for ids in enc.input_ids]  # a tokenizer without [CLS] may give none
        with run.activate() as model:
            logits = _forward(model, enc, pad_id, self.batch_size, self.precision)
        return 1.0 / (1.0 + np.exp(-logits)) if run.multi_label else softmax(logits)


def tight_batches(lengths: Sequence[int], max_rows: int, max_padding: float = 0.25) -> list[list[int]]:
    """Indices of forward passes: longest first; a pass closes before padding would exceed
    `max_padding` of its tokens. Requests batched together have unrelated lengths: padding 32 emotion
    texts to the longest one computes about 2.3x the real tokens."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    cur: list[int] = []
    real = 0
    for i in order:
        if cur and (len(cur) >= max_rows or real + lengths[i] < (1 - max_padding) * lengths[cur[0]] * (len(cur) + 1)):
            batches.append(cur)
            cur, real = [], 0
        cur.append(i)
        real += lengths[i]
    return batches + [cur] if cur else batches


def _forward(model: Any, enc: Any, pad_id: int, max_rows: int, precision: str = "fp32") -> np.ndarray:
    """Logits (n, num_labels) in input order, computed in `tight_batches` at `precision`."""
    import torch

    from textlora import device as devices
    from textlora.data.batching import iterate
    from textlora.model.cls_only import cls_only_last_layer
    from textlora.model.precision import autocast

    out = None
    device = devices.of(model)
    with torch.inference_mode(), cls_only_last_layer(model), autocast(model, precision):
        for idx, inputs in iterate(enc, tight_batches(enc.lengths, max_rows), pad_id, device):
            logits = model(**inputs).logits.float().cpu().numpy()  # (B, num_labels)
            out = np.zeros((len(enc), logits.shape[1]), dtype=np.float32) if out is None else out
            out[idx] = logits
    return out


def _load_run(spec: RunSpec, shared: dict[tuple[str, str | None, bool], Any], check_base: bool,
              device: Any = None) -> ServedRun:
    """Load one run onto `device`, onto the shared base of its group when it is a lora or head run."""
    from textlora.config import RunConfig
    from textlora.data.labels import LabelMap
    from textlora.model.load import load_tokenizer
    from textlora.model.multi import SharedBase
    from textlora.model.quantization import quantization_config
    from textlora.model.saving import load_model
    from textlora.predict import (  # the same base lookup and check as Predictor.load
        check_base_identity,
        find_base,
        load_thresholds,
    )
    from textlora.run_folder import read_json, require_run

    run = require_run(spec.path)
    manifest = read_json(run / "manifest.json")
    cfg = RunConfig.from_yaml(run / "config.yaml", strict=False)
    label_map = LabelMap.load(run / "labels.json")
    method = manifest["method"]
    if method == "full":
        model, tokenizer = load_model(run, method, "", label_map, cfg.model.attn_implementation)
        model.to(device or "cpu")
    else:
        base_path = find_base(manifest, cfg)
        if check_base:
            check_base_identity(base_path, manifest, run)
        # a qlora adapter was trained on the NF4 base: its runs share a dequantized copy of that
        key = (base_path, manifest["base_model"].get("weights_sha256"), method == "qlora")
        if key not in shared:
            shared[key] = SharedBase.load(base_path, label_map, cfg.model.attn_implementation,
                                          quantization_config(method), device)
        model = shared[key]
        if method in ("lora", "qlora"):
            model.add_lora(spec.name, run)
        else:
            model.add_head(spec.name, run)
        tokenizer = load_tokenizer(str(run / "tokenizer" if (run / "tokenizer").is_dir() else base_path))
    from textlora.model.load import fit_max_length

    hf_config = (model.model if isinstance(model, SharedBase) else model).config
    max_length = fit_max_length(hf_config, cfg.model.max_length, run)  # runs from before the positions check
    return ServedRun(spec.name, run, method, label_map.labels, label_map.multi_label, max_length,
                     tokenizer, manifest, _summary(run), model,
                     thresholds=load_thresholds(run, label_map).tolist() if label_map.multi_label else None,
                     truncation=cfg.model.truncation)


def _summary(run: Path) -> dict[str, Any]:
    """The scalar validation and test metrics of `metrics.json` (per-class tables left out)."""
    from textlora.run_folder import read_json

    path = run / "metrics.json"
    if not path.is_file():
        return {}
    m = read_json(path)
    out: dict[str, Any] = {split: {k: v for k, v in m.get(split, {}).items() if isinstance(v, (int, float))}
                           for split in ("validation", "test") if split in m}
    if "best_epoch" in m:
        out["best_epoch"] = m["best_epoch"]
    return out
