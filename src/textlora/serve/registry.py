"""The runs a server holds, loaded once at start-up: runs that share a base model share it in memory.

LoRA and head-only runs are grouped by base identity (the base folder and the weight sha256 in
each manifest); each group loads its base once into a `SharedBase` and swaps adapters and heads per
batch. Full fine-tuned runs own every weight, so each loads its own model. Each served run is a
`Predictor` over its model (full) or the shared base (its adapter and head selected per call through
`SharedBase.activate`), batching in `tight_batches`: serving and `textlora predict` share one forward path.

>>> reg = Registry.load([RunSpec.parse("emotion=runs/emotion-lora")])  # doctest: +SKIP
>>> reg.scores("emotion", ["i feel wonderful today"]).shape  # doctest: +SKIP
(1, 6)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from textlora.errors import ConfigError

if TYPE_CHECKING:
    from textlora.heads import LabelKind
    from textlora.predict import Predictor
    from textlora.run_folder import Run

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
    """A run ready to classify: a `Predictor` over its own model (full runs) or over a shared base."""

    name: str
    predictor: Predictor
    """The run's `textlora.predict.Predictor`; on a shared base it activates the run's adapter and head per call."""
    metrics: dict[str, Any]
    """The scalar validation and test metrics of `metrics.json`."""
    shared: bool = False

    @property
    def run_dir(self) -> Path:
        """The run folder."""
        return self.predictor.run.path

    @property
    def method(self) -> str:
        """lora, qlora, full or head."""
        return self.predictor.run.method

    @property
    def manifest(self) -> dict[str, Any]:
        """The run's manifest."""
        return self.predictor.run.manifest

    @property
    def labels(self) -> list[str]:
        """Label names, in the order of the score columns."""
        return self.predictor.labels_

    @property
    def multi_label(self) -> bool:
        """True for a run trained on label lists."""
        return self.predictor.label_map.multi_label

    @property
    def kind(self) -> LabelKind:
        """Single- or multi-label (`textlora.heads`): how the run's scores become chosen labels."""
        return self.predictor.kind

    @property
    def thresholds(self) -> list[float] | None:
        """Multi-label runs: the per-label decision thresholds of `thresholds.json`; None for single-label."""
        t = self.predictor.thresholds_
        return None if t is None else t.tolist()

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
            "temperature": self.predictor.temperature_,
        }


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
             device: str = "auto", calibrate: bool = True, runtime: str = "torch") -> Registry:
        """Load every run onto `device`; runs on the same base share one copy of it. With `calibrate`, each run's
        scores use the temperature its training recorded as lowering validation ECE (`Predictor`). With runtime
        'onnx' each run is its own ONNX model on the CPU (`Predictor.load(runtime='onnx')`).

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
        if runtime == "onnx":
            return cls._load_onnx(specs, check_base, precision, device, calibrate)
        where = devices.prepare(devices.resolve(device))
        reg = cls(precision=resolve_precision(precision, where), device=where,
                  batch_size=devices.EVAL_BATCH["cuda"] if where.type == "cuda" else cls.batch_size)
        shared: dict[tuple[str, str | None, bool], Any] = {}
        for spec in specs:
            reg.runs[spec.name] = _load_run(spec, shared, check_base, where, reg.batch_size, reg.precision,
                                            calibrate)
        from textlora.model.precision import warn_if_emulated

        warn_if_emulated(reg.precision, where.type)
        for base in shared.values():
            for name in base.runs:
                reg.runs[name].shared = len(base.runs) > 1
        return reg

    @classmethod
    def _load_onnx(cls, specs: Sequence[RunSpec], check_base: bool, precision: str, device: str,
                   calibrate: bool = True) -> Registry:
        """Each run as its own ONNX model on the CPU, batching requests as the PyTorch runs do."""
        import torch

        from textlora.predict import Predictor

        reg = cls(precision="fp32", device=torch.device("cpu"))
        for spec in specs:
            predictor = Predictor.load(spec.path, check_base, reg.batch_size, precision=precision, device=device,
                                       runtime="onnx", calibrate=calibrate)
            predictor.batching = tight_batches
            reg.runs[spec.name] = ServedRun(spec.name, predictor, _summary(predictor.run))
        return reg

    @property
    def names(self) -> list[str]:
        return sorted(self.runs)

    def scores(self, name: str, texts: list[str]) -> np.ndarray:
        """Per-label scores (n, num_labels): softmax, or per-label sigmoid for multi-label runs."""
        return self.runs[name].predictor.predict_proba(texts)


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


def _load_run(spec: RunSpec, shared: dict[tuple[str, str | None, bool], Any], check_base: bool,
              device: Any = None, batch_size: int | None = None, precision: str = "fp32",
              calibrate: bool = True) -> ServedRun:
    """A `Predictor` for one run on `device`: over the shared base of its group when it is a lora or head run."""
    from functools import partial

    from textlora.model.load import load_tokenizer
    from textlora.model.multi import SharedBase
    from textlora.model.quantization import quantization_config
    from textlora.model.saving import load_model
    from textlora.predict import Predictor
    from textlora.run_folder import Run

    run = Run.open(spec.path)
    if calibrate:
        run.temperature  # noqa: B018 - a broken calibration.json fails before any model loads
    if run.method == "full":
        model, tokenizer = load_model(run.path, run.method, "", run.labels, run.config.model.attn_implementation)
        model.to(device or "cpu")
        select = None
    else:
        if check_base:
            run.check_base()
        # a qlora adapter was trained on the NF4 base: its runs share a dequantized copy of that
        key = (run.base, run.manifest["base_model"].get("weights_sha256"), run.method == "qlora")
        if key not in shared:
            shared[key] = SharedBase.load(run.base, run.labels, run.config.model.attn_implementation,
                                          quantization_config(run.method), device)
        base = shared[key]
        if run.method in ("lora", "qlora"):
            base.add_lora(spec.name, run.path)
        else:
            base.add_head(spec.name, run.path)
        tokenizer = load_tokenizer(str(run.path_of("tokenizer") if run.path_of("tokenizer").is_dir() else run.base))
        model, select = base.model, partial(base.activate, spec.name)
    predictor = Predictor(run, model, tokenizer, batch_size, precision, batching=tight_batches, select=select,
                          calibrate=calibrate)
    return ServedRun(spec.name, predictor, _summary(run))


def _summary(run: Run) -> dict[str, Any]:
    """The scalar validation and test metrics of `metrics.json` (per-class tables left out)."""
    if not run.has("metrics"):
        return {}
    m = run.metrics
    out: dict[str, Any] = {split: {k: v for k, v in m.get(split, {}).items() if isinstance(v, (int, float))}
                           for split in ("validation", "test") if split in m}
    if "best_epoch" in m:
        out["best_epoch"] = m["best_epoch"]
    return out
