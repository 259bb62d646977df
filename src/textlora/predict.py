"""`Predictor`: load a run folder once, then `predict` / `predict_proba` on new texts.

>>> clf = load("runs/emotion-lora")  # doctest: +SKIP
>>> clf.predict(["i feel wonderful today"])  # doctest: +SKIP
['joy']
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from textlora.config import RunConfig
from textlora.data.batching import encode
from textlora.data.labels import LabelMap
from textlora.errors import ModelError
from textlora.metrics import softmax
from textlora.model.inference import forward_logits, quantize_int8
from textlora.model.load import base_identity, resolve_base
from textlora.model.saving import load_model
from textlora.run_folder import read_json, require_run


class Predictor:
    """A trained run, ready to classify texts. Build it with `Predictor.load(run_dir)`."""

    def __init__(self, model: Any, tokenizer: Any, label_map: LabelMap, config: RunConfig,
                 manifest: dict[str, Any], run_dir: Path, batch_size: int = 128):
        self.model = model
        self.tokenizer = tokenizer
        self.label_map = label_map
        self.config = config
        self.manifest = manifest
        self.run_dir = run_dir
        self.batch_size = batch_size

    @property
    def labels_(self) -> list[str]:
        """Label names in the order of `predict_proba`'s columns."""
        return self.label_map.labels

    @classmethod
    def load(cls, run_dir: str | Path, check_base: bool = True, batch_size: int = 128,
             int8: bool = False) -> Predictor:
        """Load the run at `run_dir` onto its base model (LoRA merged into the weights).

        Args:
            check_base: verify that the base model's weights are the ones the run was trained on.
            int8: dynamically quantize the linear layers to int8 (faster on a CPU, slightly less exact).

        Raises:
            ModelError: not a finished run, or its base is missing or different.
        """
        run = require_run(run_dir)
        manifest = read_json(run / "manifest.json")
        cfg = RunConfig.from_yaml(run / "config.yaml", strict=False)
        label_map = LabelMap.load(run / "labels.json")
        base_path = find_base(manifest, cfg)
        if check_base and manifest["method"] != "full":
            check_base_identity(base_path, manifest, run)
        model, tokenizer = load_model(run, manifest["method"], base_path, label_map, cfg.model.attn_implementation)
        if int8:
            model = quantize_int8(model)
        return cls(model, tokenizer, label_map, cfg, manifest, run, batch_size)

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """Raw logits (n, num_labels)."""
        texts = _as_list(texts)
        enc = encode(self.tokenizer, texts, self.config.model.max_length)
        return forward_logits(self.model, enc, self.tokenizer.pad_token_id, self.batch_size)

    def predict_proba(self, texts: str | Sequence[str]) -> np.ndarray:
        """Class probabilities (n, num_labels), columns in `labels_` order."""
        return softmax(self.logits(_as_list(texts)))

    def predict(self, texts: str | Sequence[str]) -> list[str] | str:
        """Label names; a single string in gives a single label out."""
        ids = self.logits(_as_list(texts)).argmax(axis=1)
        labels = [self.label_map.labels[i] for i in ids]
        return labels[0] if isinstance(texts, str) else labels


def load(run_dir: str | Path, check_base: bool = True) -> Predictor:
    """Shortcut for `Predictor.load`."""
    return Predictor.load(run_dir, check_base=check_base)


def _as_list(texts: str | Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    texts = list(texts)
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise ValueError(f"texts must be strings; item {bad[0]} is {type(texts[bad[0]]).__name__}.")
    return texts


def find_base(manifest: dict[str, Any], cfg: RunConfig) -> str:
    """The base model folder of a run: its recorded name if it resolves here, else its recorded path."""
    recorded = manifest["base_model"]
    for candidate in (resolve_base(recorded.get("name", cfg.model.name)), recorded.get("path")):
        if candidate and Path(candidate).exists():
            return candidate
    return resolve_base(recorded.get("name", cfg.model.name))


def check_base_identity(path: str, manifest: dict[str, Any], run: Path) -> None:
    """Raise ModelError if the base at `path` does not have the weights sha256 the run was trained on."""
    expected = manifest["base_model"].get("weights_sha256")
    if not expected or not Path(path).exists():
        return
    found = base_identity(path)["weights_sha256"]
    if found != expected:
        raise ModelError(f"{run}: was trained on base {manifest['base_model']['name']} with weights sha256 "
                         f"{expected[:12]}…, but {path} has {str(found)[:12]}…. Load it on the original base, or "
                         "pass check_base=False (CLI: --no-check-base) if you know they are compatible.")


def evaluate_split(clf: Predictor, data_path: str, split: str = "test", text_column: str | None = None,
                   label_column: str | None = None) -> dict[str, Any]:
    """Metrics of `clf` on one split of a dataset, carved as at training time when it has no file.

    Raises:
        DataError: a label of the split is not one of the run's labels.
    """
    from textlora.data.splits import load_dataset
    from textlora.metrics import classification_metrics, cross_entropy

    data_cfg = clf.config.data
    overrides = {"path": data_path, "max_train_samples": None, "max_eval_samples": None}
    overrides.update({k: v for k, v in (("text_column", text_column), ("label_column", label_column)) if v})
    cfg = type(data_cfg)(**{**data_cfg.__dict__, **overrides})
    s = load_dataset(cfg).splits()[split]
    y = clf.label_map.encode(s.labels, source=Path(s.source).name, row_names=s.row_names or None)
    logits = clf.logits(s.texts)
    m = classification_metrics(y, logits.argmax(axis=1), clf.labels_)
    m["loss"] = cross_entropy(logits, y)
    return m


def read_texts(path: str, text_column: str = "text") -> list[str]:
    """Texts to classify: one per line of a .txt file, or the text column of a data file."""
    from textlora.data.io import check_text, read_lines, read_records
    from textlora.errors import DataError

    p = Path(path)
    if p.suffix.lower() == ".txt" and p.is_file():
        return read_lines(p)
    records, names, columns = read_records(p)
    if text_column not in columns:
        raise DataError(f"{p.name}: column {text_column!r} not found; columns are {sorted(columns)}. "
                        "Pass --text-column.")
    return [check_text(r.get(text_column), p, n, text_column) for r, n in zip(records, names)]
