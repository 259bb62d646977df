"""The one gate for speed-ups that reach into other libraries' internals: each asks `enabled(name)` first.

Why: a new transformers or bitsandbytes may move what a patch relies on; outside the tested range, or with an
internal gone, the speed-up is skipped with one warning and the stock code runs (same results, slower).
"""

from __future__ import annotations

import importlib
import warnings

TESTED = ">=5.1,<6"
"""transformers versions whose internals the patches were read against (5.1: the first with every internal of
`NEEDS`, `get_interface` being the last to come); the tests ran on 5.24."""

NEEDS = {
    "cls_only": ("transformers.modeling_utils:ALL_ATTENTION_FUNCTIONS.get_interface",
                 "transformers.models.bert.modeling_bert:eager_attention_forward"),
    "fp32_attention": ("transformers:AttentionInterface.register",
                       "transformers.masking_utils:AttentionMaskInterface.register",
                       "transformers.masking_utils:sdpa_mask",
                       "transformers.integrations.sdpa_attention:sdpa_attention_forward"),
    "layer_cache": ("transformers.models.bert.modeling_bert:BertModel.forward",
                    "transformers.models.distilbert.modeling_distilbert:DistilBertModel.forward"),
    "bnb_cpu_layout": ("bitsandbytes.functional:has_avx512bf16",),
}
"""Speed-up -> the internals it uses, as 'module:attribute.path'."""

_decided: dict[str, bool] = {}
_MISSING = object()


def enabled(name: str) -> bool:
    """Whether speed-up `name` may patch: transformers in `TESTED` and every internal of `NEEDS[name]` present.

    Why: one place decides, and warns once per process, instead of each patch failing in its own way."""
    if name not in _decided:
        reason = why_disabled(name)
        if reason:
            warnings.warn(f"textlora: speed-up {name!r} is off: {reason}; the stock code runs instead "
                          "(same results, slower).", stacklevel=2)
        _decided[name] = reason is None
    return _decided[name]


def why_disabled(name: str, version: str | None = None) -> str | None:
    """Why speed-up `name` cannot patch (None when it can); `version` defaults to the installed transformers.

    Why: the reason is the warning's text and what the tests check."""
    from packaging.specifiers import SpecifierSet

    version = version or _installed_version()
    patches_transformers = any(need.startswith("transformers") for need in NEEDS[name])
    if patches_transformers and not SpecifierSet(TESTED).contains(version, prereleases=True):
        return f"transformers {version} is outside the tested range {TESTED} (install transformers{TESTED})"
    missing = [need for need in NEEDS[name] if not _present(need)]
    return f"missing {', '.join(missing)}" if missing else None


def _installed_version() -> str:
    from importlib.metadata import version

    return version("transformers")


def _present(need: str) -> bool:
    module_name, _, path = need.partition(":")
    try:
        obj: object = importlib.import_module(module_name)
    except ImportError:
        return False
    for attr in path.split("."):
        obj = getattr(obj, attr, _MISSING)
        if obj is _MISSING:
            return False
    return True
