"""textlora: fine-tune small transformers for text classification with LoRA, QLoRA or full fine-tuning.

>>> import textlora
>>> clf = textlora.load("runs/emotion-lora")  # doctest: +SKIP
>>> clf.predict(["i feel wonderful today"])  # doctest: +SKIP
['joy']

Heavy modules (torch, transformers) are imported on first use, so `import textlora` stays light.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["AuditResult", "Predictor", "RunConfig", "TrainResult", "audit", "fit", "load", "train"]

_LAZY = {
    "Predictor": "textlora.predict",
    "fit": "textlora.fitting",
    "load": "textlora.predict",
    "train": "textlora.train",
    "TrainResult": "textlora.train",
    "RunConfig": "textlora.config",
    "audit": "textlora.auditing",
    "AuditResult": "textlora.auditing",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        # importing textlora.train sets the package's attribute `train` to that module: put the function back
        globals()[name] = value
        return value
    raise AttributeError(f"module 'textlora' has no attribute {name!r}")
