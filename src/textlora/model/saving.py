"""Save the trained part of a model into a run folder, and load it back onto its base.

| method | saved as |
|---|---|
| lora | `adapter/`: PEFT format (`adapter_config.json`, `adapter_model.safetensors`), the head inside it
|        | as `modules_to_save`, so `peft.PeftModel.from_pretrained(base, run/"adapter")` restores it all |
| head | `head.safetensors`: the head modules' tensors, by parameter name |
| full | `model/`: a complete `save_pretrained` folder |

A qlora run saves its adapter like a lora run. To predict, the base is loaded in 4-bit NF4 as in
training, dequantized to fp32 (`quantization.dequantize`: exactly the weights the adapter was trained
against), and the adapter merged in: an fp32 model that computes what the 4-bit one computed, with no
4-bit kernels at inference. Loading it needs bitsandbytes, like training it.
`save_merged` writes any loaded run as a plain Hugging Face folder (`textlora export`).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from textlora.data.labels import LabelMap
from textlora.errors import ModelError
from textlora.model.adapters import head_modules
from textlora.model.load import load_base, load_tokenizer
from textlora.model.quantization import dequantize, quantization_config
from textlora.run_folder import path_of


def save_model(model: torch.nn.Module, method: str, run_dir: Path, new_modules: list[str]) -> None:
    """Write the trained part of `model` for `method` into `run_dir`."""
    if method in ("lora", "qlora"):
        model.save_pretrained(path_of(run_dir, "adapter"))
    elif method == "full":
        model.save_pretrained(path_of(run_dir, "model"), safe_serialization=True)
    else:
        from safetensors.torch import save_file

        heads = head_modules(model, new_modules)
        state = {k: p.detach().contiguous() for k, p in model.named_parameters()
                 if any(k.startswith(h + ".") for h in heads)}
        save_file(state, str(path_of(run_dir, "head")))


def load_model(run_dir: Path, method: str, base_name: str, label_map: LabelMap,
               attn_implementation: str = "sdpa", merge: bool = True) -> tuple[torch.nn.Module, object]:
    """Rebuild a run's model for inference: (model in eval mode, tokenizer).

    Raises:
        ModelError: a file of the run is missing or does not fit the base.
    """
    if method == "full":
        if not (path_of(run_dir, "model") / "config.json").is_file():
            raise ModelError(f"{run_dir}: model/config.json is missing; the run folder is incomplete.")
        base = load_base(str(path_of(run_dir, "model")), label_map, attn_implementation)
        model = base.model
    else:
        base = load_base(base_name, label_map, attn_implementation, quantization_config=quantization_config(method))
        model = _LOADERS[method](dequantize(base.model), run_dir, merge)
    _check_head_size(model, label_map, run_dir)
    tokenizer = load_tokenizer(str(path_of(run_dir, "tokenizer"))) if path_of(run_dir, "tokenizer").is_dir() else base.tokenizer
    return model.eval(), tokenizer


def save_merged(model: torch.nn.Module, base_name: str, label_map: LabelMap, tokenizer: object, out: Path,
                attn_implementation: str = "sdpa") -> None:
    """Write a merged fp32 `model` (as `load_model` returns it) to `out` as a plain Hugging Face folder,
    loadable with `AutoModelForSequenceClassification.from_pretrained(out)`.

    The weights go into a fresh fp32 copy of the base, so the folder has the base's own layer types:
    a dequantized qlora GPT-2 holds `nn.Linear` (out, in) where GPT-2 has `Conv1D` (in, out).
    """
    from transformers.pytorch_utils import Conv1D

    fresh = load_base(base_name, label_map, attn_implementation).model
    conv = {f"{n}.weight" for n, m in fresh.named_modules() if isinstance(m, Conv1D)}
    linear = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    target = fresh.state_dict()
    with torch.no_grad():
        for k, v in model.state_dict().items():
            if k not in target:
                raise ModelError(f"cannot export: tensor {k} has no place in the base {base_name}.")
            target[k].copy_(v.T if k in conv and k in linear else v)
    out.mkdir(parents=True, exist_ok=True)
    fresh.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def _load_lora(model: torch.nn.Module, run_dir: Path, merge: bool) -> torch.nn.Module:
    from peft import PeftModel

    path = path_of(run_dir, "adapter")
    if not (path / "adapter_config.json").is_file():
        raise ModelError(f"{run_dir}: adapter/adapter_config.json is missing; the run folder is incomplete.")
    try:
        with warnings.catch_warnings():  # PEFT reads `is_gradient_checkpointing`, deprecated in transformers 5
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
            peft_model = PeftModel.from_pretrained(model, str(path))
    except (RuntimeError, ValueError) as e:
        raise ModelError(f"{run_dir}: the adapter does not fit this base model ({str(e).splitlines()[0]}). "
                         "Load it on the base it was trained on (see manifest.json).") from None
    return peft_model.merge_and_unload() if merge else peft_model


def _load_head(model: torch.nn.Module, run_dir: Path, merge: bool) -> torch.nn.Module:
    from safetensors.torch import load_file

    path = path_of(run_dir, "head")
    if not path.is_file():
        raise ModelError(f"{run_dir}: head.safetensors is missing; the run folder is incomplete.")
    state = load_file(str(path))
    params = dict(model.named_parameters())
    unknown = sorted(set(state) - set(params))
    if unknown:
        raise ModelError(f"{run_dir}: head tensors {unknown[:3]} do not exist in the base model; "
                         "load the run on the base it was trained on (see manifest.json).")
    with torch.no_grad():
        for k, v in state.items():
            if params[k].shape != v.shape:
                raise ModelError(f"{run_dir}: head tensor {k} has shape {tuple(v.shape)}, the base expects "
                                 f"{tuple(params[k].shape)}; wrong base model or label map.")
            params[k].copy_(v)
    return model


_LOADERS = {"lora": _load_lora, "qlora": _load_lora, "head": _load_head}


def _check_head_size(model: torch.nn.Module, label_map: LabelMap, run_dir: Path) -> None:
    n = getattr(model.config, "num_labels", None)
    if n != label_map.num_labels:
        raise ModelError(f"{run_dir}: the model has {n} outputs but labels.json lists {label_map.num_labels} "
                         "labels; the run folder is inconsistent.")
