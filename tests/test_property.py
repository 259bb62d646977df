"""Property (issue 19): any config values and any small data file give either a one-line TextloraError before
training starts, or a finished run with finite metrics; never another exception, never a deleted user file.

Hypothesis draws configs that are all valid (so that some runs train) or mixed with hostile values (NaN, inf,
negatives, huge ints, wrong types, random strings for Literals), and CSV/JSONL data that may be empty, hold one
class, long texts or bytes that are not UTF-8. Each run is the tiny BERT of conftest for one epoch;
25 examples, derandomized so CI is repeatable.
"""

import csv
import hashlib
import io
import json
import math

import pytest
from conftest import FILLER, WORDS
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from textlora import train as train_module
from textlora.config import RunConfig
from textlora.errors import TextloraError

_FIT = train_module.fit

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])

BAD = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, -1, 0, -0.5, 10**20, -(10**20), 2**32, 2**31, 1e300,
                     "bogus", "", "nan", "1e400", [1], ["query", 3], {"a": 1}, True, None]),
    st.text(max_size=6), st.integers(), st.floats(),
)
"""Values that are wrong for most fields (and right for a few, e.g. 0 for checkpoint_every)."""

VALID = {
    "data.max_train_samples": st.one_of(st.none(), st.integers(1, 30)),
    "data.max_eval_samples": st.one_of(st.none(), st.integers(1, 30)),
    "data.split_seed": st.integers(0, 2**32 - 1),
    "data.label_sep": st.sampled_from([None, ",", "|"]),
    "model.method": st.sampled_from(["lora", "full", "head"]),
    "model.max_length": st.integers(2, 96),  # the tiny BERT embeds 64 positions: over that is a ConfigError
    "model.truncation": st.sampled_from(["head", "tail", "head+tail"]),
    "model.attn_implementation": st.sampled_from(["sdpa", "eager"]),  # flash_attention_2 needs a GPU and flash-attn
    "model.dropout": st.one_of(st.none(), st.floats(0, 0.9)),
    "lora.r": st.integers(1, 8),
    "lora.alpha": st.floats(0.5, 64),
    "lora.dropout": st.floats(0, 0.9),
    "lora.target_modules": st.sampled_from([None, ["query"], "query,value", ["nope"]]),
    "lora.top_layers": st.sampled_from([None, 1, 2, 3]),  # the tiny BERT has 2 layers: 3 is a ConfigError
    "train.batch_size": st.integers(1, 16),
    "train.eval_batch_size": st.integers(1, 64),
    "train.lr": st.one_of(st.none(), st.floats(1e-5, 0.1)),
    "train.weight_decay": st.floats(0, 1),
    "train.warmup_ratio": st.floats(0, 0.99),
    "train.max_grad_norm": st.floats(0.01, 100),
    "train.seed": st.integers(0, 2**32 - 1),
    "train.select_metric": st.sampled_from(["accuracy", "f1_macro", "loss"]),
    "train.eval_base": st.booleans(),
    "train.num_threads": st.sampled_from([None, 1, 2]),
    "train.cache_frozen": st.booleans(),
    "train.gradient_checkpointing": st.sampled_from([None, True, False]),
    "train.trim_memory_every": st.sampled_from([None, 0, 1, 5]),
    "train.precision": st.sampled_from(["fp32", "bf16"]),
    "train.checkpoint_every": st.integers(0, 5),
    "train.keep_checkpoints": st.integers(1, 3),
}
HOSTILE_ONLY = {"train.epochs": BAD, "data.text_column": BAD, "data.label_column": BAD, "model.name": BAD, "out": BAD}
"""Fields kept at the base config's value unless hostile: the data's columns, the tiny model, one epoch."""

overrides = st.one_of(
    st.fixed_dictionaries({}, optional=VALID),
    st.fixed_dictionaries({}, optional=VALID),
    st.fixed_dictionaries({}, optional={**{k: st.one_of(v, BAD) for k, v in VALID.items()}, **HOSTILE_ONLY}),
)

WORD_LIST = FILLER + [w for ws in WORDS.values() for w in ws]
words = st.one_of(
    st.lists(st.sampled_from(WORD_LIST), min_size=1, max_size=8).map(" ".join),
    st.lists(st.sampled_from(WORD_LIST), min_size=60, max_size=150).map(" ".join),  # longer than 64 tokens
)
texts = st.one_of(
    words, words,
    st.text(max_size=20),  # any unicode, empty and blank included
    st.sampled_from(["café ü", "漢字 🙂", "a,b", 'say "hi"', "line1\nline2"]),
)
LABEL_SETS = [("pos", "neg", "neu"), ("pos", "neg"), ("pos",), (0, 1, 2), ("a,b", "c")]
good_data = st.fixed_dictionaries({
    "rows": st.lists(st.tuples(words, st.integers(0, 2)), min_size=16, max_size=24),
    "labels": st.sampled_from(LABEL_SETS[:2] + LABEL_SETS[3:4]),
    "layout": st.sampled_from(["one file", "folder"]),
    "format": st.sampled_from(["csv", "jsonl"]),
    "encoding": st.just("utf-8"),
})
hostile_data = st.fixed_dictionaries({
    "rows": st.lists(st.tuples(texts, st.integers(0, 2)), max_size=24),  # may be empty, blank, one class
    "labels": st.sampled_from(LABEL_SETS),
    "layout": st.sampled_from(["one file", "folder"]),
    "format": st.sampled_from(["csv", "jsonl"]),
    "encoding": st.sampled_from(["utf-8", "latin-1"]),  # latin-1: é is not UTF-8
})
datasets = st.one_of(good_data, good_data, hostile_data)


def _write(path, rows, fmt, encoding):
    if fmt == "jsonl":
        text = "".join(json.dumps({"text": t, "label": y}, ensure_ascii=False) + "\n" for t, y in rows)
    else:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["text", "label"])
        w.writerows(rows)
        text = buf.getvalue()
    path.write_bytes(text.encode(encoding, errors="replace"))


def _write_data(root, d):
    rows = [(t, d["labels"][y % len(d["labels"])]) for t, y in d["rows"]]
    if d["layout"] == "one file":
        path = root / f"all.{d['format']}"
        _write(path, rows, d["format"], d["encoding"])
        return path
    folder = root / "data"
    folder.mkdir()
    k = max(1, len(rows) // 4)
    for split, part in {"train": rows, "validation": rows[:k], "test": rows[-k:]}.items():
        _write(folder / f"{split}.{d['format']}", part, d["format"], d["encoding"])
    return folder


def _snapshot(root):
    return {p.relative_to(root): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


@SETTINGS
@given(over=overrides, data=datasets)
def test_any_config_and_data_give_a_clean_error_or_a_finished_run(tiny_models, tmp_path_factory, monkeypatch,
                                                                    over, data):
    root = tmp_path_factory.mktemp("prop")
    user = root / "user"
    user.mkdir()
    data_path = _write_data(user, data)
    (user / "notes.txt").write_text("mine\n", encoding="utf-8")
    before = _snapshot(user)
    d = {"data": {"path": str(data_path)}, "model": {"name": str(tiny_models["bert"]), "max_length": 32},
         "lora": {"r": 4, "alpha": 8}, "train": {"epochs": 1, "batch_size": 8, "lr": 1e-2},
         "out": str(root / "runs" / "run")}
    for key, value in over.items():
        section, _, name = key.rpartition(".")
        (d[section] if section else d)[name] = value

    fit_started = []
    monkeypatch.setattr(train_module, "fit", lambda *a, **k: fit_started.append(1) or _FIT(*a, **k))
    try:
        cfg = RunConfig.from_dict(d)
        if not str(cfg.out).startswith(str(root / "runs")):
            cfg = RunConfig.from_dict({**cfg.to_dict(), "out": str(root / "runs" / cfg.out.replace("/", "_"))})
        result = train_module.train(cfg, progress=False)
    except TextloraError as e:
        event(f"{type(e).__name__}: {str(e)[:70]}")  # pytest --hypothesis-show-statistics shows the mix of outcomes
        assert str(e) and "\n" not in str(e), f"{type(e).__name__} is not one line: {e!r}"
        assert not fit_started or type(e).__name__ == "TrainingError", f"raised after training started: {e!r}"
    else:
        event("finished run")
        for split in ("validation", "test"):
            m = result.metrics[split]
            assert all(math.isfinite(m[k]) for k in ("accuracy", "f1_macro", "loss")), m
        assert math.isfinite(result.metrics["history"][0]["train_loss"])
        assert (result.out / "manifest.json").is_file()
    assert _snapshot(user) == before  # the user's data and files are untouched


def test_a_hostile_out_never_touches_user_files(tiny_models, tiny_data, tmp_path):
    """A folder of the user's files at `out` is refused, and stays as it was."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.txt").write_text("years of work", encoding="utf-8")
    cfg = RunConfig.from_dict({"data": {"path": str(tiny_data)}, "model": {"name": str(tiny_models["bert"])},
                               "train": {"epochs": 1}, "out": str(out)})
    with pytest.raises(TextloraError, match="already holds files; pass --overwrite"):
        train_module.train(cfg, progress=False)
    assert (out / "thesis.txt").read_text(encoding="utf-8") == "years of work"
