"""Every per-architecture fact of `model/`: head names, LoRA targets, layer stacks, dropout attributes.

The ground floor of `model/` (imports torch only): the other modules ask here, so adding an architecture
means editing this one file.
"""

from __future__ import annotations

import torch

HEAD_NAMES = ("pooler", "pre_classifier", "classifier", "score")
"""Modules between the encoder body and the logits: trained fully under every method."""

LORA_TARGETS = {
    "bert": ["query", "key", "value", "dense"],
    "roberta": ["query", "key", "value", "dense"],
    "xlm-roberta": ["query", "key", "value", "dense"],
    "electra": ["query", "key", "value", "dense"],
    "camembert": ["query", "key", "value", "dense"],
    "distilbert": ["q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"],
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "deberta-v2": ["query_proj", "key_proj", "value_proj", "dense"],
    "mpnet": ["q", "k", "v", "o", "intermediate.dense", "output.dense"],
}
"""Default LoRA targets per architecture: every attention and MLP projection (on MiniLM it mattered more than any
other setting: bench/RESULTS.md, reference experiments). Other architectures get all linear layers."""

CACHEABLE = {
    "bert": ("embeddings", "encoder.layer"),
    "roberta": ("embeddings", "encoder.layer"),
    "xlm-roberta": ("embeddings", "encoder.layer"),
    "camembert": ("embeddings", "encoder.layer"),
    "electra": ("embeddings", "encoder.layer"),
    "distilbert": ("embeddings", "transformer.layer"),
}
"""model_type -> (embeddings module, layer list) inside the base model, for architectures whose layer
stack takes the embeddings' output directly and has no norm after its last layer."""

EMBEDDING_NAMES = ("embeddings", "wte", "wpe")
"""Names of embedding modules (BERT family, GPT-2's token and position tables)."""

CLS_POOLED = {"BertForSequenceClassification", "RobertaForSequenceClassification",
              "XLMRobertaForSequenceClassification", "CamembertForSequenceClassification",
              "ElectraForSequenceClassification"}
"""Classifiers whose head reads position 0 of the last layer only."""

DROPOUT_ATTRS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout",
                 "seq_classif_dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop", "summary_first_dropout")
"""Config attributes that hold a dropout probability, across BERT, DistilBERT, RoBERTa and GPT-2."""

POSITION_ATTRS = ("max_position_embeddings", "n_positions")
"""Config attributes that hold the number of position embeddings (BERT family, GPT-2)."""

POSITION_OFFSET_TYPES = {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text", "longformer",
                         "mpnet", "ibert", "roberta-prelayernorm", "luke"}
"""Model types whose position ids start after the padding id (RoBERTa: 514 embeddings, 512 usable tokens)."""

PEFT_PREFIX = "base_model.model."
"""PEFT saves tensors under this prefix; stripped, a key is the model's own parameter name."""


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The Hugging Face model inside a DDP and/or PEFT wrapper (or the model itself)."""
    model = getattr(model, "module", model)  # DistributedDataParallel
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def layer_list(model: torch.nn.Module) -> tuple[str, int] | None:
    """(name, length) of the transformer's layer list in the unwrapped `model`, or None if not found."""
    n = getattr(model.config, "num_hidden_layers", None)
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n and n:
            return name, n
    return None


def layer_of(param_name: str, layers_name: str) -> int | None:
    """The layer index of a parameter or module named `param_name`, or None outside the layer list."""
    head, sep, rest = param_name.partition(layers_name + ".")
    if not sep or (head and not head.endswith(".")):
        return None
    index = rest.split(".", 1)[0]
    return int(index) if index.isdigit() else None
