import dataclasses
import math
import re
import typing

import pytest

from textlora.cli import build_parser, config_from_args
from textlora.config import (
    LIMITS,
    METRIC_DIRECTION,
    DataConfig,
    LoraConfig,
    ModelConfig,
    RunConfig,
    SelectMetric,
    TrainConfig,
    parse_overrides,
)
from textlora.errors import ConfigError

SECTIONS = {"data": DataConfig, "model": ModelConfig, "lora": LoraConfig, "train": TrainConfig}


def _fields(is_kind):
    """(section, field name, hint) of every field whose type, less None, passes `is_kind`."""
    out = []
    for section, cls in SECTIONS.items():
        for name, hint in typing.get_type_hints(cls).items():
            core = [a for a in typing.get_args(hint) if a is not type(None)] if type(None) in typing.get_args(hint) \
                else [hint]
            if is_kind(core[0]):
                out.append((section, name, hint))
    return out


FLOATS = _fields(lambda h: h is float)
INTS = _fields(lambda h: h is int)
LITERALS = _fields(lambda h: typing.get_origin(h) is typing.Literal)


def test_yaml_round_trip(tmp_path):
    cfg = RunConfig.from_dict({"data": {"path": "d", "max_train_samples": 100}, "model": {"method": "full"},
                               "lora": {"r": 8, "target_modules": ["query", "value"]}, "train": {"lr": 2e-4}})
    cfg.to_yaml(tmp_path / "c.yaml")
    assert RunConfig.from_yaml(tmp_path / "c.yaml") == cfg


def test_overrides_are_typed():
    cfg = RunConfig().with_overrides(parse_overrides(["train.lr=1e-3", "lora.r=8", "train.eval_base=false",
                                                      "lora.target_modules=query,value"]))
    assert cfg.train.lr == 1e-3 and isinstance(cfg.train.lr, float)
    assert cfg.lora.r == 8 and cfg.train.eval_base is False
    assert cfg.lora.target_modules == ["query", "value"]


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['lrr'\] in section 'train'; valid keys are"):
        RunConfig.from_dict({"train": {"lrr": 1}})
    with pytest.raises(ConfigError, match="unknown config key 'train.lrr'"):
        RunConfig().with_overrides({"train.lrr": 1})


def test_bad_values_name_the_field():
    with pytest.raises(ConfigError, match=r"lora.r must be an integer in \[1, 4096\], got 0\.$"):
        RunConfig.from_dict({"lora": {"r": 0}})
    with pytest.raises(ConfigError, match=r"model.method must be one of \['lora', 'qlora', 'full', 'head'\], "
                                          r"got 'lorax'"):
        RunConfig.from_dict({"model": {"method": "lorax"}})
    with pytest.raises(ConfigError, match=r"train.epochs must be an integer in \[1, 2147483647\], got 'many'"):
        RunConfig.from_dict({"train": {"epochs": "many"}})
    with pytest.raises(ConfigError, match="not of the form key=value"):
        parse_overrides(["train.lr"])
    with pytest.raises(ConfigError, match=r"train.precision must be one of \['auto', 'fp32', 'bf16', 'fp16'\], got 'fp8'"):
        RunConfig.from_dict({"train": {"precision": "fp8"}})


def test_saved_config_from_newer_version_is_lenient():
    cfg = RunConfig.from_dict({"train": {"future_knob": 1}, "extra": {}}, strict=False)
    assert cfg.train == RunConfig().train


def test_method_default_lr():
    cfg = RunConfig()
    assert cfg.train.resolved_lr("lora") == 1e-3 and cfg.train.resolved_lr("full") == 5e-5


def test_gradient_checkpointing_defaults_on_for_qlora_only():
    train = RunConfig().train
    assert train.resolved_gradient_checkpointing("qlora")
    assert not any(train.resolved_gradient_checkpointing(m) for m in ("lora", "full", "head"))
    forced = RunConfig.from_dict({"train": {"gradient_checkpointing": False}}).train
    assert not forced.resolved_gradient_checkpointing("qlora")


def test_memory_trimming_defaults_to_every_10_steps_for_qlora_only():
    train = RunConfig().train
    assert train.resolved_trim_memory_every("qlora") == 10
    assert all(train.resolved_trim_memory_every(m) == 0 for m in ("lora", "full", "head"))
    assert RunConfig().with_overrides({"train.trim_memory_every": 3}).train.resolved_trim_memory_every("lora") == 3
    with pytest.raises(ConfigError, match=r"train.trim_memory_every must be an integer in \[0, 2147483647\] or "
                                          r"null, got -1"):
        RunConfig.from_dict({"train": {"trim_memory_every": -1}})


# --- issue 19: every field is validated when the config is built ---------------------------------------

@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "nan", "inf", ".inf"])
@pytest.mark.parametrize("section,name,hint", FLOATS, ids=lambda x: x if isinstance(x, str) else "")
def test_non_finite_floats_are_rejected(section, name, hint, value):
    with pytest.raises(ConfigError, match=rf"^{section}\.{name} must be a finite number.*, got "):
        RunConfig.from_dict({section: {name: value}})


def test_lr_inf_from_the_command_line_and_alpha_nan_stop_before_training(tmp_path):
    args = build_parser().parse_args(["train", "--data", str(tmp_path), "--lr", "inf", "lora.alpha=nan"])
    with pytest.raises(ConfigError) as e:
        config_from_args(args)
    assert str(e.value) == ("lora.alpha must be a finite number in (0, 65536], got nan; "
                            "train.lr must be a finite number in (0, 1] or null, got inf.")


@pytest.mark.parametrize("section,name,hint", LITERALS, ids=lambda x: x if isinstance(x, str) else "")
def test_every_literal_field_is_checked(section, name, hint):
    allowed = list(typing.get_args(hint))
    for value in allowed:
        assert getattr(getattr(RunConfig.from_dict({section: {name: value}}), section), name) == value
    for bad in ("bogus", 3, None, ["lora"]):
        with pytest.raises(ConfigError, match=rf"^{section}\.{name} must be one of {re.escape(str(allowed))}, "
                                              rf"got {re.escape(repr(bad))}\.$"):
            RunConfig.from_dict({section: {name: bad}})


def test_select_metric_typo_and_loss():
    with pytest.raises(ConfigError, match=r"train.select_metric must be one of \['accuracy', 'f1_macro', 'loss'\], "
                                          r"got 'acuracy'"):
        RunConfig().with_overrides({"train.select_metric": "acuracy"})
    assert RunConfig().with_overrides({"train.select_metric": "loss"}).train.select_metric == "loss"
    assert set(METRIC_DIRECTION) == set(typing.get_args(SelectMetric))
    assert METRIC_DIRECTION["loss"] == -1 and METRIC_DIRECTION["accuracy"] == METRIC_DIRECTION["f1_macro"] == 1


@pytest.mark.parametrize("key", ["train.seed", "data.split_seed"])
def test_seeds_must_fit_numpy_and_torch(key):
    for ok in (0, 2**32 - 1):
        RunConfig().with_overrides({key: ok})
    for bad in (2**32, 10**19 + 1, -1):
        with pytest.raises(ConfigError, match=rf"{key} must be an integer in \[0, 4294967295\], got {bad}\.$"):
            RunConfig().with_overrides({key: bad})


@pytest.mark.parametrize("bad", [0, -1, 10**6, 2.5, "four"])
def test_num_threads_is_1_or_more(bad):
    with pytest.raises(ConfigError, match=r"train.num_threads must be an integer in \[1, 1024\] or null"):
        RunConfig().with_overrides({"train.num_threads": bad})
    assert RunConfig().with_overrides({"train.num_threads": "4"}).train.num_threads == 4


WRONG = [
    ("lora.target_modules", 5, "lora.target_modules must be a non-empty list of non-empty strings or null, got 5"),
    ("lora.target_modules", [1, 2], "lora.target_modules must be a non-empty list of non-empty strings or null, got [1, 2]"),
    ("lora.target_modules", [], "lora.target_modules must be a non-empty list of non-empty strings or null, got []"),
    ("data.text_column", ["text"], "data.text_column must be a non-empty string, got ['text']"),
    ("data.label_column", {"a": 1}, "data.label_column must be a non-empty string, got {'a': 1}"),
    ("data.label_sep", "", "data.label_sep must be a non-empty string or null, got ''"),
    ("model.name", True, "model.name must be a non-empty string, got True"),
    ("model.max_length", 1, "model.max_length must be an integer in [2, 2147483647], got 1"),
    ("model.max_length", 10**30, "model.max_length must be an integer in [2, 2147483647], got 1000000000000"),
    ("lora.r", 10**6, "lora.r must be an integer in [1, 4096], got 1000000"),
    ("lora.top_layers", 0, "lora.top_layers must be an integer in [1, 2147483647] or null, got 0"),
    ("train.eval_base", 5, "train.eval_base must be true or false, got 5"),
    ("train.epochs", True, "train.epochs must be an integer in [1, 2147483647], got True"),
    ("train.epochs", 1.5, "train.epochs must be an integer in [1, 2147483647], got 1.5"),
    ("train.epochs", "1e400", "train.epochs must be an integer in [1, 2147483647], got '1e400'"),
    ("train.batch_size", [8], "train.batch_size must be an integer in [1, 2147483647], got [8]"),
    ("train.lr", 10**400, "train.lr must be a finite number in (0, 1] or null, got 1000000000"),
    ("train.lr", "5e3", "train.lr must be a finite number in (0, 1] or null, got 5000.0"),
    ("train.weight_decay", 1e300, "train.weight_decay must be a finite number in [0, 1], got 1e+300"),
    ("lora.alpha", 1e300, "lora.alpha must be a finite number in (0, 65536], got 1e+300"),
    ("train.warmup_ratio", 1, "train.warmup_ratio must be a finite number in [0, 1), got 1"),
    ("train.keep_checkpoints", 0, "train.keep_checkpoints must be an integer in [1, 2147483647], got 0"),
    ("out", "runs/a\0b", "out must be a non-empty string without NUL characters, got 'runs/a\\x00b'"),
    ("data.text_column", "te\0xt", "data.text_column must be a non-empty string without NUL characters"),
    ("data.path", "data/" + "z" * 201, "data.path must be a path whose every part is at most 200 bytes, got 'data/zz"),
    ("model.name", "x" * 300, "model.name must be a path whose every part is at most 200 bytes, got 'xxx"),
    ("model.attn_implementation", "bogus", "model.attn_implementation must be one of ['sdpa', 'eager', "
                                           "'flash_attention_2'], got 'bogus'"),
]


@pytest.mark.parametrize("key,value,expected", WRONG, ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(WRONG)])
def test_wrong_types_and_ranges_are_one_line_errors(key, value, expected):
    with pytest.raises(ConfigError) as e:
        RunConfig().with_overrides({key: value})
    assert str(e.value).startswith(expected) and "\n" not in str(e.value)


def test_out_must_be_a_non_empty_path():
    assert RunConfig.from_dict({"out": 2024}).out == "2024"  # YAML reads `out: 2024` as an int
    with pytest.raises(ConfigError, match=r"^out must be a non-empty string, got ''\.$"):
        RunConfig.from_dict({"out": ""})
    with pytest.raises(ConfigError, match=r"^out must be a non-empty string, got \['runs'\]\.$"):
        RunConfig.from_dict({"out": ["runs"]})


def test_the_problems_of_every_section_come_in_one_line():
    with pytest.raises(ConfigError) as e:
        RunConfig.from_dict({"data": {"split_seed": -1}, "lora": {"r": 0, "alpha": "x"},
                             "train": {"lr": "inf", "select_metric": "f1"}})
    assert str(e.value) == (
        "data.split_seed must be an integer in [0, 4294967295], got -1; "
        "lora.r must be an integer in [1, 4096], got 0; lora.alpha must be a finite number in (0, 65536], got 'x'; "
        "train.lr must be a finite number in (0, 1] or null, got inf; "
        "train.select_metric must be one of ['accuracy', 'f1_macro', 'loss'], got 'f1'.")


def test_direct_construction_is_validated_too():
    with pytest.raises(ConfigError, match=r"train.lr must be a finite number in \(0, 1\] or null, got inf"):
        TrainConfig(lr=math.inf)
    with pytest.raises(ConfigError, match=r"train.select_metric must be one of"):
        TrainConfig(select_metric="loss_")


@pytest.mark.parametrize("section,name,hint", INTS + FLOATS, ids=lambda x: x if isinstance(x, str) else "")
def test_every_numeric_field_has_a_range(section, name, hint):
    """A new numeric field needs a range in LIMITS: this is the reminder to review it."""
    assert f"{section}.{name}" in LIMITS


def test_defaults_and_every_reference_value_still_pass():
    default = RunConfig()
    assert RunConfig.from_dict(default.to_dict()) == default
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            value = getattr(getattr(default, section), f.name)
            limit = LIMITS.get(f"{section}.{f.name}")
            assert value is None or limit is None or value in limit, f"{section}.{f.name}={value!r} outside {limit}"


def test_resolved_fills_in_the_method_defaults():
    cfg = RunConfig.from_dict({"model": {"method": "qlora"}})
    assert (cfg.train.lr, cfg.train.gradient_checkpointing, cfg.train.trim_memory_every) == (None, None, None)
    r = cfg.resolved()
    assert (r.train.lr, r.train.gradient_checkpointing, r.train.trim_memory_every) == (1e-3, True, 10)
    assert r.resolved() == r
    full = RunConfig.from_dict({"model": {"method": "full"}, "train": {"lr": 2e-5}}).resolved()
    assert (full.train.lr, full.train.gradient_checkpointing) == (2e-5, False)
