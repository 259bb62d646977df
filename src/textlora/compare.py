"""Line runs up side by side (`textlora compare`), optionally above a baseline ladder trained on the
same splits, and list the runs under a folder (`textlora runs`).

    textlora compare runs/a runs/b --out runs/compare
    textlora compare runs/emotion-lora --baselines --max-train-samples 2000 --epochs 1

The ladder is majority class → TF-IDF + logistic regression → zero-shot (nearest label name) → embed (frozen
embeddings + logistic regression) → SetFit → head only → LoRA → full; the middle three live in `fewshot`.
`--shots N` (data.shots_per_class) trains every rung on N rows per class. Each rung runs in a fresh (spawned)
process, so its peak memory is its own; finished rungs are reused when their config has not changed, so
rerunning `compare` only renders.
"""

from __future__ import annotations

import base64
import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from textlora.render import (
    folder_bytes,
    html_page,
    html_table,
    img,
    markdown_table,
    pyplot,
    text_table,
    write_text,
)

LADDER = ("majority", "tfidf_logreg", "zero-shot", "embed", "setfit", "head", "lora", "full")
BASELINE_RUNGS = ("majority", "tfidf_logreg", "zero-shot", "embed", "setfit")
"""Rungs without a run folder: they save a `result.json` (`run_baseline`)."""
ENCODER_RUNGS = ("zero-shot", "embed", "setfit")
"""Rungs on the base's sentence embeddings (`fewshot`): they also depend on the model, length, device and seed."""
HEADERS = ["run", "method", "val acc", "test acc", "test F1 macro", "trainable params", "size MB", "train s",
           "peak RSS MB"]


@dataclass
class Row:
    """One line of a comparison: a run folder or a baseline."""

    name: str
    method: str
    val_accuracy: float | None
    test_accuracy: float | None
    test_f1_macro: float | None
    trainable: int | None
    size_bytes: int | None
    train_seconds: float | None
    peak_rss_mb: float | None
    path: str
    created: str = ""

    def cells(self) -> list[Any]:
        def num(v: float | None, spec: str) -> str | None:
            return None if v is None else format(v, spec)

        return [self.name, self.method, self.val_accuracy, self.test_accuracy, self.test_f1_macro,
                num(self.trainable, ","), num(None if self.size_bytes is None else self.size_bytes / 2**20, ".2f"),
                num(self.train_seconds, ".1f"), num(self.peak_rss_mb, ".0f")]


def run_row(run_dir: str | Path, name: str | None = None) -> Row:
    """The comparison row of a finished run folder."""
    from textlora.run_folder import WEIGHTS, Run

    run = Run.open(run_dir)
    p, manifest, metrics = run.path, run.manifest, run.metrics
    weights = [run.path_of(w) for w in WEIGHTS if run.has(w)]
    return Row(name or p.name, manifest.get("method", "?"), _get(metrics, "validation", "accuracy"),
               _get(metrics, "test", "accuracy"), _get(metrics, "test", "f1_macro"),
               manifest.get("params", {}).get("trainable"), sum(folder_bytes(w) for w in weights) if weights else None,
               manifest.get("train_seconds"), manifest.get("peak_rss_mb"), str(p), manifest.get("created", ""))


def baseline_row(result: Any, path: str | Path) -> Row:
    """The comparison row of a `BaselineResult`."""
    m = result.metrics
    return Row(result.name, "baseline", m["validation"]["accuracy"], m["test"]["accuracy"], m["test"]["f1_macro"],
               result.params, result.size_bytes, result.train_seconds, result.peak_rss_mb, str(path))


def _get(metrics: dict[str, Any], split: str, key: str) -> float | None:
    return metrics.get(split, {}).get(key)


@dataclass
class Comparison:
    rows: list[Row]
    html: Path
    markdown: Path
    plot: Path

    def table(self) -> str:
        return text_table(HEADERS, [r.cells() for r in self.rows])


def compare(runs: list[str | Path], out: str | Path, ladder_config: Any | None = None,
            rungs: tuple[str, ...] = LADDER, progress: bool = True) -> Comparison:
    """Compare finished `runs`; with `ladder_config` (a RunConfig) first train the baseline ladder `rungs`
    on its data into `out/ladder/`. Writes `compare.html`, `compare.md` and `accuracy_vs_time.png` to `out`.

    Raises:
        ModelError: a run folder is missing or unfinished.
        ConfigError: an unknown rung.
    """
    from textlora.errors import ConfigError

    bad = [r for r in rungs if r not in LADDER]
    if bad:
        raise ConfigError(f"unknown baseline rung(s) {bad}; choose from {list(LADDER)}.")
    rows = [run_row(r) for r in runs]  # check the given runs before spending compute on the ladder
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if ladder_config is not None:
        rows = [train_rung(r, ladder_config, out / "ladder", progress) for r in rungs] + rows
    return _write(rows, out)


def ladder_run_config(rung: str, ref: Any, folder: Path) -> Any:
    """The RunConfig of a transformer rung: the reference config with the method's default lr."""
    return ref.with_overrides({"model.method": rung, "train.lr": None, "out": str(folder / rung)})


def train_rung(rung: str, ref: Any, folder: Path, progress: bool = True) -> Row:
    """Run one rung of the ladder in a fresh process (or reuse its finished folder) and return its row."""
    from textlora.baselines import BaselineResult
    from textlora.run_folder import Run, is_complete

    say = print if progress else (lambda *a, **k: None)
    target = folder / rung
    if rung in BASELINE_RUNGS:
        data_cfg = ref.to_dict()["data"]
        encoder = encoder_options(ref) if rung in ENCODER_RUNGS else None
        saved = target / "result.json"
        if not (saved.is_file() and _same_inputs(json.loads(saved.read_text()), data_cfg, encoder)):
            say(f"ladder: {rung} ...")
            _in_fresh_process(run_baseline, rung, data_cfg, target, encoder)
        d = json.loads(saved.read_text())
        d.pop("data")
        d.pop("encoder", None)
        return baseline_row(BaselineResult.from_dict(d), target)
    cfg = ladder_run_config(rung, ref, folder)
    if not (is_complete(target) and Run.open(target).config == cfg.resolved()):
        say(f"ladder: training {rung} ...")
        _in_fresh_process(_train_quietly, cfg.to_dict())
    return run_row(target, rung)


def encoder_options(ref: Any) -> dict[str, Any]:
    """The `fewshot.EncoderOptions` (as dict) of the embedding rungs under the reference RunConfig `ref`."""
    return {"model": ref.model.name, "max_length": ref.model.max_length, "device": ref.train.device,
            "seed": ref.train.seed}


def _same_inputs(saved: dict[str, Any], data_cfg: dict[str, Any], encoder: dict[str, Any] | None) -> bool:
    return saved.get("data") == data_cfg and saved.get("encoder") == encoder


def run_baseline(name: str, data_cfg: dict[str, Any], out: str | Path,
                 encoder: dict[str, Any] | None = None) -> Any:
    """Load the data of `data_cfg` (a DataConfig as dict), run baseline `name` (`baselines.BASELINES` or
    `fewshot.FEWSHOT`), save `out/result.json` and return its `BaselineResult`; the ladder runs it in a fresh process.

    `encoder` (a `fewshot.EncoderOptions` as dict) sets the base of the embedding rungs (embed, setfit,
    zero-shot); it is saved beside the data config so `compare` reruns a rung when either changes."""
    from textlora.baselines import BASELINES
    from textlora.config import DataConfig
    from textlora.data.splits import load_dataset
    from textlora.fewshot import FEWSHOT, EncoderOptions
    from textlora.memory import peak_rss_mb
    from textlora.run_folder import write_json

    if name not in BASELINES and name not in FEWSHOT:
        raise ValueError(f"unknown baseline {name!r}; choose from {sorted(BASELINES) + sorted(FEWSHOT)}.")
    data = load_dataset(DataConfig(**data_cfg))
    result = FEWSHOT[name](data, EncoderOptions(**(encoder or {}))) if name in FEWSHOT else BASELINES[name](data)
    result.peak_rss_mb = peak_rss_mb()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    saved = {"data": data_cfg, **({"encoder": encoder} if encoder is not None else {}), **result.to_dict()}
    write_json(out / "result.json", saved)
    return result


def _train_quietly(cfg_dict: dict[str, Any]) -> None:
    from textlora.config import RunConfig
    from textlora.report import write_run_artifacts
    from textlora.train import train

    train(RunConfig.from_dict(cfg_dict), overwrite=True, progress=False, before_commit=write_run_artifacts)


def _in_fresh_process(fn: Any, *args: Any) -> Any:
    """Call `fn(*args)` in a new spawned interpreter (its own peak memory); exceptions come back."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def _write(rows: list[Row], out: Path) -> Comparison:
    plot = plot_accuracy_vs_time(rows, out / "accuracy_vs_time.png")
    md = write_text(out / "compare.md", markdown_table(HEADERS, [r.cells() for r in rows]) + "\n")
    uri = "data:image/png;base64," + base64.b64encode(plot.read_bytes()).decode("ascii")
    notes = ("<p>Size: bytes on disk of the trained weights (adapter/, head.safetensors or model/; the pickled "
             "model for baselines). Peak RSS: the training process's peak resident memory. "
             "Baselines are trained on the same splits.</p>")
    page = html_page("textlora compare", [("Runs", html_table(HEADERS, [r.cells() for r in rows],
                                                                 table_id="compare") + notes),
                                          ("Test accuracy vs train time", img(uri, "accuracy vs train time",
                                                                              "accuracy-vs-time"))])
    return Comparison(rows, write_text(out / "compare.html", page), md, plot)


def plot_accuracy_vs_time(rows: list[Row], path: Path) -> Path:
    """Scatter of test accuracy against train time (log scale), one labelled point per row."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, r in enumerate(rows):
        if r.test_accuracy is None or r.train_seconds is None:
            continue
        x = max(r.train_seconds, 1e-3)
        ax.scatter([x], [r.test_accuracy], s=60, color=f"C{i % 10}", marker="s" if r.method == "baseline" else "o")
        ax.annotate(r.name, (x, r.test_accuracy), textcoords="offset points", xytext=(6, 4), fontsize=9)
    ax.set_xscale("log")
    ax.set_xlabel("train time (s, log scale)")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.set_title("what the extra training time buys")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def list_runs(root: str | Path) -> list[Row]:
    """Every finished run folder under `root` (recursively, hidden folders skipped), oldest first."""
    from textlora.errors import TextloraError
    from textlora.run_folder import FILES

    rows = []
    for manifest in sorted(Path(root).rglob(FILES["manifest"])):
        rel = manifest.parent.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue  # staging folders of runs in progress
        try:
            rows.append(run_row(manifest.parent, str(rel) if rel.parts else manifest.parent.name))
        except (TextloraError, ValueError, KeyError):
            continue
    return sorted(rows, key=lambda r: (r.created, r.name))
