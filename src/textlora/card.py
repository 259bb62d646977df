"""The model card of a run: `README.md` in every run folder, in the Hugging Face model-card format.

YAML metadata (base model, library, pipeline tag, tags, and the validation and test results as a `model-index`)
over Markdown sections: labels, data, training, results, intended use and limitations, how to load it. It is
built with `huggingface_hub.ModelCard` / `ModelCardData` from the run folder alone, offline (no hub call), so
`huggingface-cli upload` or `ModelCard.load` take it as it is. `predict` and `serve` never read it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textlora.run_folder import Run, path_of

CARD_METRICS = ("accuracy", "f1_macro", "f1_weighted", "loss")
"""The metrics of each split in the card's results table (and its model-index, without loss)."""
LIBRARY = {"lora": "peft", "qlora": "peft", "full": "transformers", "head": "textlora"}
"""The library that loads each method's weights, for the card's `library_name`."""


def write_card(run_dir: str | Path) -> Path:
    """Write `README.md`, the run's model card, into `run_dir` (a staging folder with config, labels, metrics and
    manifest is enough) and return its path.

    Why: a run folder pushed to the hub, or handed to a colleague, says what it is, how good, and how to load it.
    """
    card = model_card(Run.open(run_dir, finished=False))
    path = path_of(run_dir, "card")
    card.save(path)
    return path


def model_card(run: Run) -> Any:
    """The `huggingface_hub.ModelCard` of `run`: metadata from its config, manifest and metrics, then the text."""
    from huggingface_hub import ModelCard, ModelCardData

    m, manifest, cfg = run.metrics, run.manifest or {}, run.config
    base = (manifest.get("base_model") or {}).get("name") or cfg.model.name
    name = Path(cfg.out).name  # not run.path's: inside `train` that is the staging folder
    data = _data_name(cfg.data.path)
    local_base = Path(base).exists()  # a folder: no hub id to link to
    card_data = ModelCardData(
        model_name=name,
        base_model=None if local_base else base,
        library_name=LIBRARY.get(run.method, "textlora"),
        pipeline_tag="text-classification",
        tags=["textlora", "text-classification", run.method] + (["lora"] if run.method in ("lora", "qlora") else []),
        metrics=["accuracy", "f1"],
        eval_results=_eval_results(m, data),
    )
    body = "\n".join([
        f"# {name}",
        "",
        f"A text classifier: {_method_words(run.method)} of {_link(base, local_base)}, "
        f"trained with textlora {manifest.get('textlora_version', '')} on `{cfg.data.path}`.",
        "",
        _section("Labels", _labels(run)),
        _section("Data", _data(run, manifest)),
        _section("Training", _training(run, manifest, m)),
        _section("Results", _results(m)),
        _section("Intended use and limitations", _intended_use(run, data)),
        _section("How to load it", _how_to_load(run, base)),
    ])
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n{body}")


def _data_name(path: str) -> str:
    """A data path's name: the folder, or the file without its suffixes (`emotion`, `train`)."""
    p = Path(path)
    return p.name.split(".")[0] if p.suffix else p.name


def _eval_results(m: dict[str, Any], data: str) -> list[Any]:
    from huggingface_hub import EvalResult

    names = {"accuracy": ("accuracy", "Accuracy"), "f1_macro": ("f1", "Macro F1"),
             "f1_weighted": ("f1", "Weighted F1")}
    return [EvalResult(task_type="text-classification", dataset_type=data, dataset_name=data, dataset_split=split,
                       metric_type=names[k][0], metric_name=names[k][1], metric_value=float(m[split][k]),
                       metric_config=k)
            for split in ("validation", "test") if split in m
            for k in names if k in m[split]]


def _section(title: str, text: str) -> str:
    return f"## {title}\n\n{text}\n"


def _method_words(method: str) -> str:
    return {"lora": "a LoRA adapter (with a new classification head)",
            "qlora": "a QLoRA adapter (LoRA on the 4-bit base, with a new classification head)",
            "full": "a full fine-tune", "head": "a new classification head on the frozen body"}.get(method, method)


def _link(base: str, local: bool) -> str:
    return f"`{base}`" if local else f"[{base}](https://huggingface.co/{base})"


def _labels(run: Run) -> str:
    kind = "multi-label: any number of labels per text" if run.labels.multi_label else "one label per text"
    rows = "\n".join(f"| {i} | {label} |" for i, label in enumerate(run.labels.labels))
    return f"{len(run.labels.labels)} labels, {kind}.\n\n| id | label |\n|---|---|\n{rows}"


def _data(run: Run, manifest: dict[str, Any]) -> str:
    d = manifest.get("data", {})
    lines = [f"- data: `{run.config.data.path}` (text column `{run.config.data.text_column}`, label column "
             f"`{run.config.data.label_column}`)"]
    folder = str(run.config.data.path).rstrip("/") + "/"
    for split, info in (d.get("splits") or {}).items():
        info = info if isinstance(info, dict) else {"rows": info}
        source = str(info.get("source") or "").replace(folder, "")  # a file's name, or how the split was carved
        lines.append(f"- {split}: {info.get('rows')} rows" + (f", {source}" if source else ""))
    if any("carved" in str((info or {}).get("source", "")) for info in (d.get("splits") or {}).values()
           if isinstance(info, dict)):
        lines.append(f"- carved splits are seeded stratified samples of train (split seed {d.get('split_seed')})")
    for path, sha in sorted((d.get("files_sha256") or {}).items()):
        lines.append(f"- `{Path(path).name}` sha256 `{sha}`")
    return "\n".join(lines)


def _training(run: Run, manifest: dict[str, Any], m: dict[str, Any]) -> str:
    t, cfg = run.config.train, run.config
    params = manifest.get("params", {})
    lines = [f"- method: {run.method}" + (f" (r={cfg.lora.r}, alpha={cfg.lora.alpha})"
                                         if run.method in ("lora", "qlora") else ""),
             f"- epochs: {t.epochs}, best epoch: {m.get('best_epoch')} (by validation {t.select_metric}), "
             f"batch size {t.batch_size}, learning rate {t.lr}, max length {cfg.model.max_length}, seed {t.seed}"]
    if params:
        lines.append(f"- parameters: {params.get('trainable'):,} trained of {params.get('total'):,}")
    if manifest.get("train_seconds") is not None:
        device = (manifest.get("device") or {}).get("gpu") or (manifest.get("device") or {}).get("type", "")
        lines.append(f"- training time: {manifest['train_seconds']:.0f} s on {device or 'the CPU'}, "
                     f"precision {manifest.get('precision', t.precision)}")
    lines.append("- the full config is `config.yaml`; versions, data hashes and the base's weight hash are in "
                 "`manifest.json`")
    return "\n".join(lines)


def _results(m: dict[str, Any]) -> str:
    rows = [(f"{split}", m[split]) for split in ("validation", "test") if split in m]
    rows += [(f"{split} (untrained base)", m["base"][split]) for split in ("validation", "test")
             if split in m.get("base", {})]
    head = "| split | " + " | ".join(CARD_METRICS) + " |\n|---|" + "---|" * len(CARD_METRICS)
    lines = [f"| {name} | " + " | ".join(f"{r[k]:.4f}" if isinstance(r.get(k), (int, float)) else "-"
                                         for k in CARD_METRICS) + " |" for name, r in rows]
    return head + "\n" + "\n".join(lines) + "\n\nPer-class scores and the confusion matrices are in `metrics.json`."


def _intended_use(run: Run, data: str) -> str:
    return (f"Classifying texts like those of `{data}` into the labels above. The scores were measured on the "
            "held-out validation and test splits described under Data; texts of another domain, language or "
            "length (longer texts are cut to "
            f"{run.config.model.max_length} tokens) can score lower, and the model inherits the biases of its base "
            "and of its training data. Check it on your own data before relying on it.")


def _how_to_load(run: Run, base: str) -> str:
    text = ("With textlora (the base is loaded and checked against the weight hash in `manifest.json`):\n\n"
            "```python\nimport textlora\n\nclf = textlora.load(\"path/to/this/folder\")\n"
            "clf.predict([\"some text\"])        # labels\nclf.predict_proba([\"some text\"])  # (n, labels)\n```\n\n"
            "or `textlora predict path/to/this/folder \"some text\"`, `textlora serve path/to/this/folder`.")
    if run.method in ("lora", "qlora"):
        text += ("\n\nWith PEFT alone (the head is inside the adapter as `modules_to_save`):\n\n"
                 "```python\nfrom peft import PeftModel\nfrom transformers import AutoModelForSequenceClassification"
                 f"\n\nbase = AutoModelForSequenceClassification.from_pretrained(\"{base}\", "
                 f"num_labels={len(run.labels.labels)})\nmodel = PeftModel.from_pretrained(base, "
                 "\"path/to/this/folder/adapter\")\n```")
    if run.method == "full":
        text += ("\n\nWith transformers alone:\n\n```python\nfrom transformers import "
                 "AutoModelForSequenceClassification\n\nmodel = AutoModelForSequenceClassification.from_pretrained("
                 "\"path/to/this/folder/model\")\n```")
    return text + "\n\n`textlora export path/to/this/folder --out merged` writes a plain transformers model folder."
