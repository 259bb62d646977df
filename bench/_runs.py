"""Bench helper: quick real MiniLM runs for the serve benchmarks, trained once and reused."""

from __future__ import annotations

from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
"""The datasets beside the repository (../shared/datasets)."""


def ensure_run(out: Path, dataset: str, max_train_samples: int = 500, **overrides) -> Path:
    """A LoRA run on the embedded MiniLM at `out`: reused when finished, else trained quickly
    (`max_train_samples` rows, 1 epoch, 200 eval rows, texts cut to 64 tokens, no base evaluation)."""
    from textlora.config import RunConfig
    from textlora.run_folder import is_complete
    from textlora.train import train

    if is_complete(out):
        return out
    cfg = RunConfig().with_overrides({
        "data.path": str(SHARED / dataset), "data.max_train_samples": max_train_samples,
        "data.max_eval_samples": 200, "model.max_length": 64, "train.epochs": 1, "train.eval_base": False,
        "out": str(out), **overrides,
    })
    train(cfg, overwrite=True, progress=False)
    return out
