import pytest

from textlora.config import RunConfig, parse_overrides
from textlora.errors import ConfigError


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
    with pytest.raises(ConfigError, match="lora.r must be a positive integer, got 0"):
        RunConfig.from_dict({"lora": {"r": 0}})
    with pytest.raises(ConfigError, match="model.method must be one of"):
        RunConfig.from_dict({"model": {"method": "lorax"}})
    with pytest.raises(ConfigError, match="train.epochs expects int, got 'many'"):
        RunConfig.from_dict({"train": {"epochs": "many"}})
    with pytest.raises(ConfigError, match="not of the form key=value"):
        parse_overrides(["train.lr"])
    with pytest.raises(ConfigError, match=r"train.precision='fp8'.*precision one of \['auto', 'fp32', 'bf16', 'fp16'\]"):
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
    with pytest.raises(ConfigError, match=r"train.trim_memory_every=-1.*trim_memory_every 0 or more"):
        RunConfig.from_dict({"train": {"trim_memory_every": -1}})
