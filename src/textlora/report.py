"""Render a run for people: confusion-matrix figures and one self-contained HTML page per run.

    textlora report runs/emotion-lora      # writes runs/emotion-lora/report.html

The page reads only the run folder (`metrics.json`, `predictions.npz`, `loss_log.jsonl`, `config.yaml`,
`manifest.json`; the data files for example texts) and shows: headline metrics against the untrained
base, a per-class table, the confusion matrix (counts and normalized), training curves, the most
confused label pairs with examples, a reliability diagram with ECE and temperature scaling, and the
config and manifest. Multi-label runs show per-label F1 at per-label thresholds instead.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from textlora.render import Raw, figure_data_uri, html_page, html_table, img, pyplot, write_text

if TYPE_CHECKING:
    from textlora.heads import LabelKind

REPORT = "report.html"
HEADLINE_ROWS = ("accuracy", "f1_macro", "f1_weighted", "precision_macro", "recall_macro", "loss")


def plot_confusion(matrix: Sequence[Sequence[int]], labels: Sequence[str], path: str | Path, title: str) -> Path:
    """Save a confusion-matrix heatmap (counts, row-normalized colours) as PNG."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=_confusion_size(labels))
    _draw_confusion(ax, np.asarray(matrix, dtype=float), labels, title, normalized=False)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    os.replace(tmp, path)
    return path


def write_figures(run_dir: str | Path, metrics: dict[str, Any]) -> list[Path]:
    """Write `confusion_<split>.png` for every evaluated split of `metrics` into `run_dir`."""
    out = []
    for split in ("validation", "test"):
        m = metrics.get(split)
        if m and "confusion_matrix" in m:
            out.append(plot_confusion(m["confusion_matrix"], m["labels"], Path(run_dir) / f"confusion_{split}.png",
                                      f"{split}: accuracy {m['accuracy']:.3f}"))
    return out


def write_run_artifacts(run_dir: str | Path, metrics: dict[str, Any]) -> None:
    """`train`'s `before_commit` hook for the CLI: the confusion figures and `report.html`."""
    write_figures(run_dir, metrics)
    write_report(run_dir)


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Render `run_dir` to a self-contained HTML file (default `run_dir/report.html`) and return its path.

    Raises:
        ModelError: `run_dir` is not a run folder (no metrics.json / predictions.npz).
    """
    run = load_run(run_dir)
    return write_text(Path(out) if out else Path(run_dir) / REPORT, render_report(run))


@dataclass
class RunView:
    """What a report needs from a run folder, read once."""

    path: Path
    name: str
    config_text: str
    config: Any
    manifest: dict[str, Any] | None
    metrics: dict[str, Any]
    labels: list[str]
    multi_label: bool
    logits: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    steps: list[dict[str, Any]]

    @property
    def kind(self) -> LabelKind:
        """Single- or multi-label (`textlora.heads`): the scores and the sections the report shows."""
        from textlora.data.labels import LabelMap
        from textlora.heads import kind_of

        return kind_of(LabelMap(self.labels, self.multi_label))


def load_run(run_dir: str | Path) -> RunView:
    """Read the parts of a run folder (finished, or the staging folder inside `train`) a report shows."""
    from textlora.run_folder import Run

    run = Run.open(run_dir, finished=False)
    metrics = run.metrics
    logits, y = run.predictions()
    multi = run.labels.multi_label or any(v.ndim == 2 for v in y.values())
    return RunView(run.path, Path(run.config.out).name or run.path.name,
                   run.path_of("config").read_text(encoding="utf-8"), run.config, run.manifest, metrics,
                   run.labels.labels, multi, logits, y, run.loss_log())


def render_report(run: RunView) -> str:
    """The report page of `run` as an HTML string."""
    before, after = _KIND_SECTIONS[run.kind.name]
    sections = [("Headline metrics", _headline_section(run.metrics)), *((t, f(run)) for t, f in before),
                ("Training curves", _curves_section(run)), *((t, f(run)) for t, f in after),
                ("Config and manifest", _config_section(run))]
    m = run.manifest or {}
    subtitle = (f"method {m.get('method', run.config.model.method)} · base {run.config.model.name} · "
                f"labels {len(run.labels)} · created {m.get('created', '?')}")
    return html_page(f"textlora run: {run.name}", sections, subtitle)


def _headline_section(metrics: dict[str, Any]) -> str:
    base = metrics.get("base", {})
    cols = [("base", "validation"), ("trained", "validation"), ("base", "test"), ("trained", "test")]
    rows = []
    for key in HEADLINE_ROWS:
        vals = [(base.get(s) if who == "base" else metrics.get(s)) or {} for who, s in cols]
        vals = [v.get(key) for v in vals]
        if all(v is None for v in vals):
            continue
        delta = None if vals[2] is None or vals[3] is None else vals[3] - vals[2]
        cell = None
        if delta is not None:
            gain = -delta if key == "loss" else delta
            tone = "good" if gain > 5e-5 else "bad" if gain < -5e-5 else "muted"
            cell = Raw(f'<span class="{tone}">{delta:+.4f}</span>')
        rows.append([key, *vals, cell])
    stop = metrics.get("stopped_early")
    stopped = f", stopped early ({stop['reason']}) at epoch {stop['at_epoch']}" if stop else ""
    note = (f"<p>Best epoch {metrics['best_epoch']} of {len(metrics.get('history', []))} validations{stopped}. "
            "“base” is the untrained base model with a fresh head.</p>" if "best_epoch" in metrics else "")
    headers = ["metric", "base · validation", "trained · validation", "base · test", "trained · test", "Δ test"]
    return html_table(headers, rows, table_id="metrics") + note


def _per_class_section(metrics: dict[str, Any]) -> str:
    test, val = metrics.get("test", {}), metrics.get("validation", {})
    base = metrics.get("base", {}).get("test", {}).get("per_class", {})
    rows = []
    for name, r in test.get("per_class", {}).items():
        rows.append([name, r["support"], r["precision"], r["recall"], r["f1"],
                     val.get("per_class", {}).get(name, {}).get("f1"), base.get(name, {}).get("f1")])
    headers = ["label", "support (test)", "precision", "recall", "F1", "F1 validation", "F1 base"]
    return _with_loss_weights(metrics, headers, rows, "per-class")


def _with_loss_weights(metrics: dict[str, Any], headers: list[str], rows: list[list], table_id: str) -> str:
    """The per-label table, with a column of the training loss's weights when the run used any
    (`train.class_weights`, recorded as `loss_fn` in metrics.json)."""
    loss = metrics.get("loss_fn") or {}
    name = "class_weights" if loss.get("class_weights") else "pos_weight" if loss.get("pos_weight") else None
    if name is None:
        return html_table(headers, rows, table_id=table_id)
    rows = [[*r, loss[name].get(r[0])] for r in rows]
    return html_table([*headers, f"loss weight ({name})"], rows, table_id=table_id)


def _confusion_section(metrics: dict[str, Any]) -> str:
    m = metrics.get("test")
    if not m or "confusion_matrix" not in m:
        return "<p class=\"muted\">no test confusion matrix in metrics.json.</p>"
    plt = pyplot()
    w, h = _confusion_size(m["labels"])
    fig, axes = plt.subplots(1, 2, figsize=(2 * w, h))
    matrix = np.asarray(m["confusion_matrix"], dtype=float)
    _draw_confusion(axes[0], matrix, m["labels"], "counts", normalized=False)
    _draw_confusion(axes[1], matrix, m["labels"], "normalized by true class", normalized=True)
    fig.tight_layout()
    return img(figure_data_uri(fig), "confusion matrix: counts and normalized", "confusion-matrix")


def _confusion_size(labels: Sequence[str]) -> tuple[float, float]:
    size = max(4.0, 0.55 * len(labels) + 2)
    return size + 1, size


def _draw_confusion(ax: Any, m: np.ndarray, labels: Sequence[str], title: str, normalized: bool) -> None:
    """One heatmap: colours are the share of the true class; cells show counts or shares."""
    norm = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if len(labels) <= 20:
        for i in range(len(labels)):
            for j in range(len(labels)):
                text = f"{norm[i, j]:.2f}" if normalized else str(int(m[i, j]))
                ax.text(j, i, text, ha="center", va="center", fontsize=8,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.figure.colorbar(im, ax=ax, fraction=0.046, label="share of true class")


def _curves_section(run: RunView) -> str:
    history = run.metrics.get("history", [])
    if not history and not run.steps:
        return "<p class=\"muted\">no training history in this run.</p>"
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4))
    if run.steps:
        a.plot([s["step"] for s in run.steps], [s["loss"] for s in run.steps], lw=0.8, alpha=0.6, label="step loss")
    if history:
        per_epoch = max(1, len(run.steps) // len(history)) if run.steps else 1
        ends = [h.get("step", h["epoch"] * per_epoch) for h in history]  # runs before `step` was recorded
        a.plot(ends, [h["train_loss"] for h in history], "o-", label="epoch mean train loss")
        if "val_loss" in history[0]:
            a.plot(ends, [h["val_loss"] for h in history], "s--", label="validation loss")
        for key in ("val_accuracy", "val_f1_macro"):
            if key in history[0]:
                b.plot([h["epoch"] for h in history], [h[key] for h in history], "o-", label=key)
    a.set_xlabel("step")
    a.set_ylabel("loss")
    a.set_title("training loss")
    a.legend()
    b.set_xlabel("epoch")
    b.xaxis.get_major_locator().set_params(integer=True)
    b.set_title("validation metrics")
    b.set_ylim(0, 1)
    if history:
        b.legend()
    fig.tight_layout()
    return img(figure_data_uri(fig), "training loss and validation metrics", "curves")


def _confused_pairs_section(run: RunView, top: int = 5, examples: int = 3) -> str:
    m = run.metrics.get("test", {})
    if "confusion_matrix" not in m:
        return "<p class=\"muted\">no test confusion matrix.</p>"
    cm = np.asarray(m["confusion_matrix"])
    pairs = confused_pairs(cm, top)
    if not pairs:
        return "<p>No test example is misclassified.</p>"
    texts, why = _split_texts(run, "test")
    rows = []
    for t, p, n in pairs:
        shown = Raw("<br>".join(html.escape(_clip(s)) for s in _examples(run, texts, t, p, examples))
                    or f'<span class="muted">{html.escape(why)}</span>')
        rows.append([run.labels[t], run.labels[p], n, n / max(cm[t].sum(), 1), shown])
    headers = ["true", "predicted as", "count", "share of true", "examples (most confident mistakes first)"]
    return html_table(headers, rows, table_id="confused-pairs", cls="examples")


def confused_pairs(cm: np.ndarray, top: int = 5) -> list[tuple[int, int, int]]:
    """The `top` off-diagonal cells of a confusion matrix as (true, predicted, count), largest first.

    >>> confused_pairs(np.array([[5, 2, 0], [0, 4, 3], [1, 0, 6]]), 2)
    [(1, 2, 3), (0, 1, 2)]
    """
    off = [(int(cm[i, j]), i, j) for i in range(len(cm)) for j in range(len(cm)) if i != j and cm[i, j] > 0]
    return [(i, j, n) for n, i, j in sorted(off, key=lambda x: (-x[0], x[1], x[2]))[:top]]


def _split_texts(run: RunView, split: str) -> tuple[list[str] | None, str]:
    """The texts of `split` in predictions order, or None and the reason they are unavailable."""
    import warnings

    from textlora.data.splits import load_dataset
    from textlora.errors import TextloraError

    try:
        with warnings.catch_warnings():  # training already warned about this data (e.g. texts in two splits)
            warnings.simplefilter("ignore", UserWarning)
            texts = load_dataset(run.config.data).splits()[split].texts
    except (TextloraError, OSError) as e:
        return None, f"texts unavailable: {e}"
    if split not in run.y or len(texts) != len(run.y[split]):
        return None, "texts unavailable: the data files no longer match the run's predictions."
    return texts, ""


def _examples(run: RunView, texts: list[str] | None, t: int, p: int, k: int) -> list[str]:
    if texts is None or "test" not in run.logits:
        return []
    logits, y = run.logits["test"], run.y["test"]
    idx = np.flatnonzero((y == t) & (logits.argmax(axis=1) == p))
    margin = logits[idx, p] - logits[idx, t]
    return [texts[i] for i in idx[np.argsort(-margin)][:k]]


def _clip(text: str, n: int = 220) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _calibration_section(run: RunView) -> str:
    from textlora.calibration import calibrate, reliability_bins
    from textlora.metrics import softmax

    if "validation" not in run.logits or "test" not in run.logits:
        return "<p class=\"muted\">no predictions.npz: calibration needs the saved logits.</p>"
    cal = calibrate(run.logits, run.y)
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    for ax, (title, t) in zip(axes, (("raw", 1.0), (f"temperature {cal.temperature:.2f}", cal.temperature))):
        b = reliability_bins(softmax(run.logits["test"] / t), run.y["test"])
        width = b.edges[1] - b.edges[0]
        ax.bar(b.edges[:-1], np.where(b.count > 0, b.accuracy, 0), width=width, align="edge", edgecolor="k",
               alpha=0.75, label="accuracy")
        ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
        ax.plot(b.confidence[b.count > 0], b.accuracy[b.count > 0], "o", color="C3", ms=4, label="bin mean")
        ece = cal.ece_scaled["test"] if t != 1.0 else cal.ece["test"]
        ax.set_title(f"test, {title}: ECE {ece:.4f}")
        ax.set_xlabel("confidence (top-class probability)")
        ax.set_ylabel("accuracy")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.legend(loc="upper left")
    fig.tight_layout()
    verdict = ("applied: it lowers the validation ECE" if cal.applied else
               "not applied: it does not lower the validation ECE")
    rows = [["raw", cal.ece["validation"], cal.ece["test"]],
            [f"temperature {cal.temperature:.3f}", cal.ece_scaled["validation"], cal.ece_scaled["test"]]]
    table = html_table(["logits", "ECE validation", "ECE test"], rows, table_id="calibration")
    return (img(figure_data_uri(fig), "reliability diagram", "reliability") + table +
            f"<p>Temperature fitted on validation (15 equal-width bins): {verdict}.</p>")


def _multilabel_section(run: RunView) -> str:
    from textlora.calibration import per_label_f1
    from textlora.metrics import tune_thresholds

    if "validation" not in run.logits or "test" not in run.logits:
        return "<p class=\"muted\">no predictions.npz: per-label F1 needs the saved logits.</p>"
    val, test = run.kind.scores(run.logits["validation"]), run.kind.scores(run.logits["test"])
    saved = run.metrics.get("thresholds")  # the run's own, tuned on validation at training time
    thresholds = (np.array([saved[name] for name in run.labels]) if isinstance(saved, dict)
                  else tune_thresholds(run.y["validation"], val))  # the tuner training uses
    f1 = per_label_f1(test, run.y["test"], thresholds)
    f1_half = per_label_f1(test, run.y["test"], np.full(len(run.labels), 0.5))
    support = np.asarray(run.y["test"]).sum(axis=0)
    rows = [[name, int(support[j]), float(thresholds[j]), float(f1[j]), float(f1_half[j])]
            for j, name in enumerate(run.labels)]
    rows.append(["macro", int(support.sum()), None, float(f1.mean()), float(f1_half.mean())])
    headers = ["label", "support (test)", "threshold (fitted on validation)", "F1 test", "F1 test at 0.5"]
    return _with_loss_weights(run.metrics, headers, rows, "per-label")


_KIND_SECTIONS = {  # by label kind: the sections before and after the training curves
    "single_label": ((("Per-class precision, recall and F1", lambda run: _per_class_section(run.metrics)),
                      ("Confusion matrix (test)", lambda run: _confusion_section(run.metrics))),
                     (("Most confused label pairs (test)", _confused_pairs_section),
                      ("Calibration", _calibration_section))),
    "multi_label": ((("Per-label F1 and thresholds", _multilabel_section),), ()),
}


def _config_section(run: RunView) -> str:
    manifest = (json.dumps(run.manifest, indent=2) if run.manifest is not None
                else "manifest.json not written yet")
    return (f"<h3>config.yaml</h3><pre id=\"config\">{html.escape(run.config_text)}</pre>"
            f"<h3>manifest.json</h3><pre id=\"manifest\">{html.escape(manifest)}</pre>")
