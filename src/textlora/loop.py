"""The training loop (`fit`), readable top to bottom, and the state a checkpoint saves to continue it exactly.

Each optimizer step runs its batch as `train.grad_accum` micro-batches, then clips and steps; a validation follows
every `train.eval_every` steps and every epoch end, may keep a new best and counts towards `train.patience`; the
loop stops early on patience or on `train.max_minutes`. `train.setup` (`textlora.train._loop`) builds the `Loop`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from textlora import device as devices
from textlora import distributed, tracking
from textlora.checkpoint import has_checkpoints, save_checkpoint
from textlora.config import METRIC_DIRECTION, TrainConfig
from textlora.data.batching import train_batches
from textlora.errors import TrainingError
from textlora.memory import release_free_memory
from textlora.metrics import headline
from textlora.model.adapters import restore_state, trainable_state


@dataclass
class LoopState:
    """Where the loop is; a checkpoint saves exactly this, plus the tensors."""

    epoch: int = 1
    """Epoch in progress (1-based)."""
    batch: int = 0
    """Next batch of that epoch's data order."""
    step: int = 0
    losses: list = field(default_factory=list)
    """(step, loss, lr) of the steps since the last validation."""
    history: list = field(default_factory=list)
    """One record per validation (see `_validate`)."""
    best_score: float = -math.inf
    """The best validation's selection metric times its METRIC_DIRECTION, so higher is always better."""
    best_epoch: int = 0
    """Epoch (1-based) in progress at the best validation."""
    best_step: int = 0
    best_state: dict | None = None
    since_best: int = 0
    """Validations in a row without a better score (what train.patience counts)."""
    examples: int = 0
    """Training rows stepped over, over all ranks and epochs."""


@dataclass
class Loop:
    """What the loop runs, chosen once in setup (`textlora.train._loop`): the step's forward (through the layer cache
    or the whole model, DDP-wrapped or not, at the run's precision, on its device), the targets, the loss, the
    optimizer and its schedule (restored from a checkpoint when resuming), the validation and the metric that keeps
    the best weights."""

    model: torch.nn.Module
    forward: Callable[[list[int]], torch.Tensor]
    """Rows of the training split -> logits (B, num_labels)."""
    targets: torch.Tensor
    """Class ids, or a multi-hot matrix for multi-label; on the host."""
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    """A mean over the rows of a batch (and, multi-label, over its labels): micro-batches are weighted by their share
    of its `norm` (the rows, or their total class weight), when it has one, else by rows."""
    validate: Callable[[], dict[str, Any]]
    select: str
    lengths: list[int]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    state: LoopState
    dist: distributed.Dist
    lr: float
    trim_every: int
    no_sync: Callable[[], Any]
    """Context for a micro-batch that is not its step's last (DDP: no gradient all-reduce yet)."""


@dataclass
class Fit:
    """What `fit` returns; the model is left holding the best validation's weights."""

    history: list[dict[str, Any]]
    best_epoch: int
    best_step: int
    examples: int
    stopped_early: dict[str, Any] | None = None
    """{'reason': 'patience' or 'max_minutes', 'at_epoch', 'at_step'}; None when every epoch ran."""


def fit(loop: Loop, tc: TrainConfig, progress: bool, on_epoch: Callable[[float, dict], None] | None = None,
        ckpt: Checkpointing | None = None, tracker: tracking.Trackers = tracking.OFF) -> Fit:
    """The training loop: order, micro-batches (forward, loss, backward), clip, step, validate, keep the best,
    checkpoint, stop early. `on_epoch(epoch, validation metrics)` follows each validation (`epoch` is a fraction
    mid-epoch); an exception it raises stops training. `tracker` gets each flushed step and each validation."""
    model, s = loop.model, loop.state
    optimizer, scheduler, scaler = loop.optimizer, loop.scheduler, loop.scaler
    trainable = [p for p in model.parameters() if p.requires_grad]
    log = LossLog(loop.dist, tracker)
    deadline = time.monotonic() + 60 * tc.max_minutes if tc.max_minutes else math.inf
    # a run resumed from a checkpoint written as its patience ran out stops there, as it did before the kill
    reason = "patience" if _patience_spent(s, tc) and s.epoch <= tc.epochs else None
    for epoch in range(s.epoch, tc.epochs + 1):
        if reason:
            break
        model.train()
        batches = train_batches(loop.lengths, tc.batch_size, tc.seed, epoch)  # the same order on every resume
        bar = _progress(len(loop.lengths), f"epoch {epoch}/{tc.epochs}", progress, done=s.batch * tc.batch_size)
        clock = _Clock()
        for b in range(s.batch, len(batches)):
            idx = loop.dist.shard(batches[b])  # this rank's share of the global batch
            loss = _accumulate(loop, idx, tc.grad_accum)
            scaler.unscale_(optimizer)  # clip the true gradients
            torch.nn.utils.clip_grad_norm_(trainable, tc.max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            s.step, s.batch, s.examples = s.step + 1, b + 1, s.examples + len(batches[b])
            clock.seen += len(batches[b])
            log.add(s.step, loss, scheduler.get_last_lr()[0], len(idx))

            end = s.batch == len(batches)
            last = end and epoch == tc.epochs
            validate = end or bool(tc.eval_every and s.step % tc.eval_every == 0)
            due = bool(tc.checkpoint_every and s.step % tc.checkpoint_every == 0) and not end
            # the same answer on every rank; a collective only when there is a budget
            out_of_time = tc.max_minutes is not None and loop.dist.any(time.monotonic() > deadline) and not last
            # the same steps on every rank: the flush is a collective
            if due or validate or out_of_time or s.step % LossLog.EVERY == 0:
                check_finite(log.flush(s.losses), epoch, loop.lr, ckpt)
                if bar is not None:
                    bar.set_postfix(loss=f"{s.losses[-1][1]:.4f}", ex_s=f"{clock.rate():.0f}")
            if bar is not None:
                bar.update(len(idx))
            if loop.trim_every and s.step % loop.trim_every == 0:
                release_free_memory(collect=False)  # else glibc's fragments grow the resident set (memory.py)
            if validate:
                _validate(loop, epoch, len(batches), clock, bar, progress, on_epoch, tracker)
                reason = "patience" if _patience_spent(s, tc) and not last else None
            if end:
                s.epoch, s.batch = epoch + 1, 0
            if ckpt and (due or end or out_of_time):
                ckpt.save(s, model, optimizer, scheduler, scaler)  # before a budget's extra validation: resumable
            if out_of_time and not validate:
                _validate(loop, epoch, len(batches), clock, bar, progress, on_epoch, tracker)  # the run gets its last weights
            reason = reason or ("max_minutes" if out_of_time else None)
            if reason:
                break
        if bar is not None:
            bar.close()
    if s.best_state is not None and s.best_step != s.step:
        restore_state(model, s.best_state)
    model.eval()
    stopped = {"reason": reason, "at_epoch": s.history[-1]["epoch"], "at_step": s.step} if reason else None
    return Fit(s.history, s.best_epoch, s.best_step, s.examples, stopped)


def _accumulate(loop: Loop, idx: list[int], grad_accum: int) -> torch.Tensor:
    """Forward and backward of this rank's rows `idx` as `grad_accum` micro-batches (fewer when there are fewer
    rows); returns the batch's mean loss, detached. Each micro-batch's loss, a mean over its rows, is weighted by its
    share of the rows, so the summed gradient is the whole batch's."""
    size = math.ceil(len(idx) / grad_accum)
    parts = [idx[i:i + size] for i in range(0, len(idx), size)]
    targets = [loop.targets[torch.tensor(part, device=loop.targets.device)] for part in parts]
    norm = getattr(loop.loss, "norm", len)  # class-weighted cross-entropy divides by the rows' total weight
    norms = [norm(t) for t in targets] if len(parts) > 1 else [1.0]
    total = torch.zeros((), device=loop.dist.device)
    for k, (part, target) in enumerate(zip(parts, targets)):
        with loop.no_sync() if k < len(parts) - 1 else contextlib.nullcontext():  # DDP: one all-reduce, after the last
            logits = loop.forward(part)
            loss = loop.loss(logits.float(), target.to(logits.device, non_blocking=True))
            if len(parts) > 1:
                loss = loss * (norms[k] / sum(norms))  # the micro-batch's share of the batch's rows (or weight)
            loop.scaler.scale(loss).backward()
        total = total + loss.detach()
    return total


@dataclass
class _Clock:
    """Training time and rows since the last validation (the validation's own time left out)."""

    start: float = field(default_factory=time.time)
    seen: int = 0

    def seconds(self) -> float:
        return time.time() - self.start

    def rate(self) -> float:
        return self.seen / max(self.seconds(), 1e-9)

    def restart(self) -> None:
        self.start, self.seen = time.time(), 0


def _validate(loop: Loop, epoch: int, batches: int, clock: _Clock, bar: Any, progress: bool,
              on_epoch: Callable[[float, dict], None] | None, tracker: tracking.Trackers = tracking.OFF) -> None:
    """After each validation, the one place: record it in the history, report it, keep the best weights and count
    the validations since the best. The record's `epoch` is the epoch in progress at an epoch end, else a fraction."""
    s = loop.state
    seconds = clock.seconds()
    val = loop.validate()
    at = epoch if s.batch == batches else round(epoch - 1 + s.batch / batches, 4)
    record = {"epoch": at, "step": s.step, "train_loss": float(np.mean([x[1] for x in s.losses])),
              "seconds": seconds, "train_examples_per_s": clock.seen / max(seconds, 1e-9), "steps": s.losses,
              **{f"val_{k}": v for k, v in headline(val).items()}}
    s.history.append(record)
    s.losses = []
    tracker.log_validation(headline(val), s.step)  # val/<metric> (train.report_to)
    if progress:
        line = (f"epoch {at} (step {s.step}): train loss {record['train_loss']:.4f}  validation {fmt(val)}  "
                f"({seconds:.0f}s, {record['train_examples_per_s']:.0f} ex/s)")
        (bar.write if bar is not None else print)(line)
    if on_epoch is not None:
        on_epoch(at, val)
    score = METRIC_DIRECTION[loop.select] * val[loop.select]  # loss: lower is better
    if score > s.best_score:
        s.best_score, s.best_epoch, s.best_step, s.since_best = score, epoch, s.step, 0
        s.best_state = devices.to_cpu(trainable_state(loop.model))  # on the host: no second model on the GPU
    else:
        s.since_best += 1
    clock.restart()


def _patience_spent(s: LoopState, tc: TrainConfig) -> bool:
    return bool(tc.patience) and s.since_best >= tc.patience


class LossLog:
    """Per-step losses kept as device tensors and read back every `EVERY` steps in one transfer (and, under DDP,
    one collective): reading each step's loss would make the host wait for the GPU at every step."""

    EVERY = 50

    def __init__(self, dist: distributed.Dist, tracker: tracking.Trackers = tracking.OFF):
        self.dist, self.pending, self.tracker = dist, [], tracker

    def add(self, step: int, loss: torch.Tensor, lr: float, rows: int) -> None:
        """Keep step `step`'s mean loss over this rank's `rows` rows, still on the device."""
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


def check_finite(entries: list, epoch: int, lr: float, ckpt: Checkpointing | None) -> None:
    """Stop a run whose loss is no longer a finite number: every later step would only train on NaN. `entries` are
    (step, loss, lr) as `LossLog.flush` returns them, checked before any checkpoint of those steps is written.

    Raises:
        TrainingError: naming the first such step; no run folder is written, the checkpoints before it are kept.
    """
    bad = next(((step, loss) for step, loss, _ in entries if not math.isfinite(loss)), None)
    if bad is not None:
        kept = f"; the checkpoints before it stay in {ckpt.folder}" if ckpt and has_checkpoints(ckpt.folder) else ""
        raise TrainingError(f"training diverged: the loss is {bad[1]} at step {bad[0]} (epoch {epoch}), so no run "
                            f"was written{kept}. Lower train.lr (it is {lr:g}) and train again.")


@dataclass
class Checkpointing:
    """Saves `LoopState` + tensors every `checkpoint_every` steps, at each epoch end and when the time budget runs
    out, on the host: a run killed on a GPU resumes on a CPU and the other way round."""

    folder: Path
    fingerprint: str
    keep: int
    base_metrics: dict | None
    resume_from: dict | None = None

    def save(self, s: LoopState, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler) -> None:
        """Write the loop's state, the trainable weights, the optimizer, schedule, scaler and RNG states."""
        state = {f.name: getattr(s, f.name) for f in dataclasses.fields(LoopState)}
        save_checkpoint(self.folder, devices.to_cpu({
            **state, "fingerprint": self.fingerprint, "base_metrics": self.base_metrics,
            "model": trainable_state(model), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": devices.rng_state(),
        }), keep=self.keep)

    def restore(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler) -> LoopState:
        """Put the checkpoint's tensors and RNG state back and return its loop state."""
        c = self.resume_from
        restore_state(model, c["model"])
        optimizer.load_state_dict(c["optimizer"])  # moves the state to each parameter's device
        scheduler.load_state_dict(c["scheduler"])
        if c.get("scaler") and scaler.is_enabled():
            scaler.load_state_dict(c["scaler"])
        devices.set_rng_state(c["rng"])  # dropout masks continue exactly as in an uninterrupted run
        s = LoopState(**{f.name: c[f.name] for f in dataclasses.fields(LoopState)})
        s.losses, s.history = list(s.losses), list(s.history)
        return s


def _progress(total: int, desc: str, enabled: bool, done: int = 0):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=min(done, total), desc=desc, unit="ex", leave=False, dynamic_ncols=True,
                mininterval=1.0, disable=None)  # None: off when stderr is not a terminal (CI logs)


def stopped_line(stopped: dict[str, Any], tc: TrainConfig) -> str:
    """One line saying why and where training stopped early (`Fit.stopped_early`), and how to continue."""
    if stopped["reason"] == "patience":
        why = f"no better validation in {tc.patience} in a row"
    else:
        why = (f"the {tc.max_minutes:g}-minute budget is spent; its checkpoint is kept, so rerunning with --overwrite "
               "continues exactly")
    return f"stopped early at epoch {stopped['at_epoch']} (step {stopped['at_step']}): {why}"


def fmt(m: dict[str, Any]) -> str:
    """Accuracy, macro-F1 and loss of a metrics dict on one line."""
    return f"accuracy {m['accuracy']:.4f}  macro-F1 {m['f1_macro']:.4f}  loss {m.get('loss', float('nan')):.4f}"

