"""Many runs on one base model in memory: LoRA adapters and classification heads swapped per batch.

LoRAX and S-LoRA keep one base and many adapters for decoder LLMs; this is the same idea for
encoder classifiers. The base body is loaded once. Each LoRA run attaches its adapter with PEFT
(unmerged, selected with `set_adapter`); each run's head (classifier, pooler, ...) is kept as its
own small modules and swapped into the shared model before a forward pass. Head-only runs use the
same body with every adapter switched off. Only one run is active at a time, so callers must run
forward passes one after another (the server uses a single inference thread).

>>> shared = SharedBase.load(base_path, label_map)  # doctest: +SKIP
>>> shared.add_lora("emotion", "runs/emotion-lora")  # doctest: +SKIP
>>> with shared.activate("emotion"):  # doctest: +SKIP
...     logits = shared.model(**inputs).logits
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from textlora import device as devices
from textlora.data.labels import LabelMap
from textlora.errors import ModelError
from textlora.model.arch import PEFT_PREFIX
from textlora.model.load import load_base
from textlora.run_folder import path_of


class SharedBase:
    """One base model shared by several runs. Build it with `SharedBase.load`, then `add_lora` / `add_head`."""

    def __init__(self, model: torch.nn.Module, path: str):
        self.model = model
        """The shared model; PEFT injects LoRA layers into it in place."""
        self.path = path
        self._peft: torch.nn.Module | None = None
        self._heads: dict[str, dict[str, torch.nn.Module]] = {}
        self._adapters: set[str] = set()
        self._originals: dict[str, torch.nn.Module] = {}

    @classmethod
    def load(cls, base_path: str, label_map: LabelMap, attn_implementation: str = "sdpa",
             quantization_config: object | None = None, device: object | None = None) -> SharedBase:
        """Load the base body once onto `device` (the CPU by default), in eval mode; its own (random) head is
        never used for a run. With `quantization_config` (qlora runs) the base is loaded in NF4 on the CPU and
        dequantized to fp32: the weights those adapters were trained against."""
        from textlora.model.quantization import dequantize

        base = load_base(base_path, label_map, attn_implementation, quantization_config=quantization_config)
        model = dequantize(base.model).to(device or "cpu").eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return cls(model, base_path)

    @property
    def runs(self) -> list[str]:
        """Names of the runs added so far."""
        return list(self._heads)

    def add_lora(self, name: str, run_dir: Path) -> None:
        """Attach the PEFT adapter of `run_dir` as adapter `name`, and keep its head apart.

        Raises:
            ModelError: the adapter is missing, or its tensors do not fit this base.
        """
        self._check_new(name)
        lora_state, head_state, config = _read_adapter(Path(run_dir))
        self._attach_adapter(name, config, lora_state, Path(run_dir))
        self._heads[name] = self._build_head(head_state, Path(run_dir))
        self._adapters.add(name)

    def add_head(self, name: str, run_dir: Path) -> None:
        """Keep the head of a head-only run (`head.safetensors`); it runs on the plain base body.

        Raises:
            ModelError: the head file is missing or does not fit this base.
        """
        from safetensors.torch import load_file

        self._check_new(name)
        path = path_of(run_dir, "head")
        if not path.is_file():
            raise ModelError(f"{run_dir}: head.safetensors is missing; the run folder is incomplete.")
        self._heads[name] = self._build_head(load_file(str(path)), Path(run_dir))

    @contextlib.contextmanager
    def activate(self, name: str) -> Iterator[torch.nn.Module]:
        """Make run `name` the one `self.model` computes: its adapter (or none) and its head."""
        if name not in self._heads:
            raise KeyError(f"run {name!r} is not on this base; it holds {self.runs}.")
        head = self._heads[name]
        for module_name, original in self._originals.items():  # modules this run has no tensors for
            self.model.set_submodule(module_name, head.get(module_name, original))
        if name in self._adapters:
            self._peft.set_adapter(name)
            yield self.model
        elif self._peft is not None:
            with self._peft.disable_adapter():
                yield self.model
        else:
            yield self.model

    def _check_new(self, name: str) -> None:
        if name in self._heads:
            raise ModelError(f"a run named {name!r} is already on this base; give each run its own name.")

    def _attach_adapter(self, name: str, config: object, state: dict[str, torch.Tensor], run_dir: Path) -> None:
        from peft import PeftModel, set_peft_model_state_dict

        try:
            with warnings.catch_warnings():  # PEFT calls a transformers API deprecated in v5; not ours to fix
                warnings.simplefilter("ignore", FutureWarning)
                if self._peft is None:
                    self._peft = PeftModel(self.model, config, adapter_name=name)
                else:
                    self._peft.add_adapter(name, config)
            result = set_peft_model_state_dict(self._peft, state, adapter_name=name)
        except (RuntimeError, ValueError) as e:
            raise ModelError(f"{run_dir}: the adapter does not fit base {self.path} ({str(e).splitlines()[0]}). "
                             "Serve it on the base it was trained on (see manifest.json).") from None
        missing = [k for k in result.missing_keys if ".lora_" in k and f".{name}." in k]
        if result.unexpected_keys or missing:
            raise ModelError(f"{run_dir}: adapter tensors do not match base {self.path}: "
                             f"unexpected {list(result.unexpected_keys)[:3]}, missing {missing[:3]}.")
        self._peft.eval()

    def _build_head(self, state: dict[str, torch.Tensor], run_dir: Path) -> dict[str, torch.nn.Module]:
        """Copies of the base's head modules holding this run's tensors (shapes may differ: label count)."""
        by_module: dict[str, dict[str, torch.Tensor]] = {}
        for key, tensor in state.items():
            module_name, param = key.rsplit(".", 1)
            by_module.setdefault(module_name, {})[param] = tensor
        head = {}
        for module_name, tensors in by_module.items():
            try:
                module = copy.deepcopy(self.model.get_submodule(module_name))
            except AttributeError:
                raise ModelError(f"{run_dir}: head module {module_name!r} does not exist in base {self.path}; "
                                 "serve the run on the base it was trained on (see manifest.json).") from None
            for param, tensor in tensors.items():
                if not isinstance(getattr(module, param, None), torch.nn.Parameter):
                    raise ModelError(f"{run_dir}: head tensor {module_name}.{param} has no place in base {self.path}.")
                # label count may differ; on the shared model's device
                setattr(module, param, torch.nn.Parameter(tensor.to(devices.of(module)), requires_grad=False))
            head[module_name] = module.eval()
            self._originals.setdefault(module_name, self.model.get_submodule(module_name))
        return head


def _read_adapter(run_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], object]:
    """(LoRA tensors, head tensors by model parameter name, PEFT config without modules_to_save)."""
    from peft import PeftConfig
    from safetensors.torch import load_file

    folder = path_of(run_dir, "adapter")
    weights = folder / "adapter_model.safetensors"
    if not (folder / "adapter_config.json").is_file() or not weights.is_file():
        raise ModelError(f"{run_dir}: adapter/adapter_config.json or adapter_model.safetensors is missing; "
                         "the run folder is incomplete.")
    config = PeftConfig.from_pretrained(str(folder))
    config.modules_to_save = None  # the head is swapped by SharedBase, not by PEFT's per-adapter copies
    config.task_type = None  # a plain PeftModel: SEQ_CLS would add classifier/score to modules_to_save again
    config.inference_mode = True
    state = load_file(str(weights))
    lora = {k: v for k, v in state.items() if ".lora_" in k}
    head = {k.removeprefix(PEFT_PREFIX): v for k, v in state.items() if ".lora_" not in k}
    return lora, head, config
