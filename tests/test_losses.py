"""Imbalanced labels (issue 21): class weights, pos_weight and focal loss, checked against torch's own losses."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import make_rows, tiny_config, write_jsonl
from test_multilabel import multilabel_rows

from textlora import cli
from textlora import train as train_module
from textlora.cli import build_parser, config_from_args
from textlora.config import RunConfig, TrainConfig
from textlora.errors import ConfigError
from textlora.heads import MultiLabel, SingleLabel
from textlora.losses import (
    MAX_POS_WEIGHT,
    balanced_class_weights,
    balanced_pos_weights,
    check_class_weights,
    sigmoid_focal,
    softmax_focal,
)
from textlora.render import _cell
from textlora.report import load_run, render_report
from textlora.train import train

LABELS = ["a", "b", "c"]


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(12, 3, generator=g), torch.tensor([0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 2, 0])


def test_balanced_class_weights_are_n_over_k_times_count():
    ids = np.array([0] * 8 + [1] * 3 + [2])
    assert balanced_class_weights(ids, 3).tolist() == pytest.approx([12 / (3 * 8), 12 / (3 * 3), 12 / 3])
    assert balanced_class_weights(np.array([0, 0, 1]), 3).tolist() == pytest.approx([0.75, 1.5, 0.0])  # no row: 0


def test_weighted_single_label_loss_equals_cross_entropy_with_weight(batch):
    logits, y = batch
    tc = TrainConfig(class_weights="balanced")
    loss = SingleLabel(LABELS).loss_fn(tc, y)
    w = torch.tensor([12 / (3 * 8), 12 / (3 * 3), 12 / 3])
    assert loss.weights.tolist() == pytest.approx(w.tolist())
    assert float(loss(logits, y)) == pytest.approx(float(F.cross_entropy(logits, y, weight=w)), rel=1e-6)
    by_hand = sum(w[t] * -torch.log_softmax(logits[i], 0)[t] for i, t in enumerate(y.tolist())) / w[y].sum()
    assert float(loss(logits, y)) == pytest.approx(float(by_hand), rel=1e-5)
    assert float(loss(logits, y)) != pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-3)


def test_a_weights_mapping_gives_its_labels_and_1_to_the_rest(batch):
    logits, y = batch
    loss = SingleLabel(LABELS).loss_fn(TrainConfig(class_weights={"c": 5.0, "a": 0.5}), y)
    assert loss.weights.tolist() == [0.5, 1.0, 5.0]
    w = torch.tensor([0.5, 1.0, 5.0])
    assert float(loss(logits, y)) == pytest.approx(float(F.cross_entropy(logits, y, weight=w)), rel=1e-6)
    assert loss.describe() == {"loss": "ce", "class_weights": {"a": 0.5, "b": 1.0, "c": 5.0}}


def test_focal_with_gamma_0_is_cross_entropy_and_gamma_down_weights_easy_rows(batch):
    logits, y = batch
    w = torch.tensor([0.2, 1.0, 3.0])
    ce = F.cross_entropy(logits, y, weight=w)
    # the focal formula itself at gamma 0 (not its shortcut to F.cross_entropy)
    log_pt = torch.log_softmax(logits, 1).gather(1, y[:, None]).squeeze(1)
    assert float(softmax_focal(logits, y, 1e-12, w)) == pytest.approx(float(ce), rel=1e-5)
    assert float(softmax_focal(logits, y, 0.0, w)) == pytest.approx(float(ce), rel=1e-6)
    by_hand = (-(1 - log_pt.exp()) ** 2 * log_pt).mean()
    assert float(softmax_focal(logits, y, 2.0)) == pytest.approx(float(by_hand), rel=1e-6)
    assert float(softmax_focal(logits, y, 2.0)) < float(F.cross_entropy(logits, y))
    loss = SingleLabel(LABELS).loss_fn(TrainConfig(loss="focal", focal_gamma=0.0), y)
    assert float(loss(logits, y)) == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-6)


def test_sigmoid_focal_with_gamma_0_is_bce_and_matches_the_formula():
    g = torch.Generator().manual_seed(1)
    logits, y = torch.randn(10, 4, generator=g), (torch.rand(10, 4, generator=g) > 0.7).float()
    pw = torch.tensor([1.0, 2.0, 5.0, 0.5])
    bce = F.binary_cross_entropy_with_logits(logits, y, pos_weight=pw)
    assert float(sigmoid_focal(logits, y, 1e-12, pw)) == pytest.approx(float(bce), rel=1e-5)
    p = torch.sigmoid(logits)
    p_t = p * y + (1 - p) * (1 - y)
    by_hand = (-(1 - p_t) ** 2 * (pw * y * torch.log(p) + (1 - y) * torch.log(1 - p))).mean()
    assert float(sigmoid_focal(logits, y, 2.0, pw)) == pytest.approx(float(by_hand), rel=1e-5)


def test_pos_weight_is_negatives_over_positives_clipped():
    y = np.zeros((1000, 4), dtype=np.float32)
    y[:250, 0] = 1  # 750 / 250 = 3
    y[:2, 1] = 1  # 998 / 2 = 499 -> clipped to 100
    y[:, 2] = 1  # every row: 0 -> clipped up to 0.01; label 3 has no positive: 1
    assert balanced_pos_weights(y).tolist() == pytest.approx([3.0, MAX_POS_WEIGHT, 1 / MAX_POS_WEIGHT, 1.0])
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(1000, 4, generator=g)
    loss = MultiLabel(["w", "x", "y", "z"]).loss_fn(TrainConfig(class_weights="balanced"), torch.from_numpy(y))
    expected = F.binary_cross_entropy_with_logits(logits, torch.from_numpy(y),
                                                  pos_weight=torch.tensor([3.0, 100.0, 0.01, 1.0]))
    assert float(loss(logits, torch.from_numpy(y))) == pytest.approx(float(expected), rel=1e-6)
    assert loss.describe()["pos_weight"] == pytest.approx({"w": 3.0, "x": 100.0, "y": 0.01, "z": 1.0})


def test_under_a_pos_weight_the_head_starts_at_the_rate_the_weighted_loss_favours():
    y = torch.zeros(100, 2)
    y[:10, 0] = 1
    y[:50, 1] = 1
    kind = MultiLabel(["a", "b"])
    assert kind.output_rates(y).tolist() == pytest.approx([0.1, 0.5])
    assert kind.output_rates(y, balanced_pos_weights(y.numpy())).tolist() == pytest.approx([0.5, 0.5])


@pytest.mark.parametrize("value,message", [
    ("balance", "train.class_weights must be none, balanced or a mapping {label: weight}, got 'balance'."),
    ({"a": 0}, "train.class_weights must be a mapping of labels to finite numbers > 0 (not 'a': 0), got {'a': 0}."),
    ({"a": float("nan")}, "train.class_weights must be a mapping of labels to finite numbers > 0 (not 'a': nan)"),
    ({"a": "x"}, "train.class_weights must be a mapping of labels to finite numbers > 0 (not 'a': 'x')"),
    ({}, "train.class_weights must be none, balanced or a non-empty mapping {label: weight}, got {}."),
    (3, "train.class_weights must be none, balanced or a non-empty mapping {label: weight}, got 3."),
])
def test_bad_class_weights_are_one_line_config_errors(value, message):
    with pytest.raises(ConfigError) as e:
        RunConfig.from_dict({"train": {"class_weights": value}})
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_bad_loss_and_gamma_are_config_errors():
    with pytest.raises(ConfigError, match=r"^train.loss must be one of \['ce', 'focal'\], got 'dice'.$"):
        RunConfig.from_dict({"train": {"loss": "dice"}})
    with pytest.raises(ConfigError, match=r"^train.focal_gamma must be a finite number in \[0, 100\], got -1"):
        RunConfig.from_dict({"train": {"focal_gamma": -1}})


def test_yaml_round_trip_and_overrides(tmp_path):
    cfg = RunConfig().with_overrides({"train.class_weights": {"love": 3, 7: 2.5}, "train.loss": "focal",
                                      "train.focal_gamma": 1.5})
    assert cfg.train.class_weights == {"love": 3, "7": 2.5}  # a numeric label from YAML is its name
    cfg.to_yaml(tmp_path / "c.yaml")
    assert RunConfig.from_yaml(tmp_path / "c.yaml") == cfg
    assert RunConfig.from_dict({"train": {"class_weights": None}}).train.class_weights == "none"
    assert TrainConfig().class_weights == "none" and TrainConfig().loss == "ce"


def test_unknown_labels_are_named_before_the_model_loads(tiny_models, tiny_data, tmp_path, monkeypatch):
    with pytest.raises(ConfigError) as e:
        check_class_weights({"pos": 2.0, "happy": 3.0}, ["neg", "neu", "pos"])
    assert str(e.value) == ("train.class_weights names label(s) ['happy'] that the data does not have; its labels "
                            "are ['neg', 'neu', 'pos']. Use those names as keys.")
    def load_base(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(train_module, "load_base", load_base)
    cfg = tiny_config(tiny_data, tiny_models["bert"], tmp_path / "run", class_weights={"happy": 3.0})
    with pytest.raises(ConfigError, match=r"names label\(s\) \['happy'\]"):
        train(cfg, progress=False)
    assert not (tmp_path / "run").exists()


def test_balanced_training_records_its_weights(tiny_models, tmp_path):
    rows = [r for r in make_rows(120, seed=1) if r["label"] != "neu" or len(r["text"]) % 4 == 0]  # few 'neu'
    for split, (data, seed) in {"train": (rows, 1), "validation": (None, 2), "test": (None, 3)}.items():
        write_jsonl(tmp_path / "data" / f"{split}.jsonl", data or make_rows(30, seed=seed))
    cfg = tiny_config(tmp_path / "data", tiny_models["bert"], tmp_path / "run", epochs=1, eval_base=False,
                      class_weights="balanced", loss="focal")
    result = train(cfg, progress=False)
    counts = {k: sum(r["label"] == k for r in rows) for k in ("neg", "neu", "pos")}
    expected = {k: len(rows) / (3 * c) for k, c in counts.items()}
    recorded = json.loads((result.out / "metrics.json").read_text())["loss_fn"]
    assert recorded["loss"] == "focal" and recorded["focal_gamma"] == 2.0
    assert recorded["class_weights"] == pytest.approx(expected)
    assert recorded["class_weights"]["neu"] > 1 > recorded["class_weights"]["pos"]
    page = render_report(load_run(result.out))
    assert "<th>loss weight (class_weights)</th>" in page
    assert f"<td>{_cell(recorded['class_weights']['neu'])}</td></tr>" in page


def test_multi_label_balanced_training_records_pos_weight(tiny_models, tmp_path):
    for split, (n, seed) in {"train": (60, 1), "validation": (20, 2), "test": (20, 3)}.items():
        write_jsonl(tmp_path / "data" / f"{split}.jsonl", multilabel_rows(n, seed))
    cfg = tiny_config(tmp_path / "data", tiny_models["bert"], tmp_path / "run", epochs=1, eval_base=False,
                      class_weights="balanced").with_overrides({"data.label_column": "labels"})
    result = train(cfg, progress=False)
    # of 60 rows, cycling pos, neg, neu, pos+neu, neg+neu: pos 24, neg 24, neu 36 positives
    assert result.metrics["loss_fn"] == {"loss": "ce", "pos_weight": pytest.approx(
        {"neg": 36 / 24, "neu": 24 / 36, "pos": 36 / 24})}
    assert "<th>loss weight (pos_weight)</th>" in render_report(load_run(result.out))


def test_the_cli_flags_set_the_loss_and_name_an_unknown_label(tiny_models, tiny_data, tmp_path, capsys):
    args = build_parser().parse_args(["train", "--data", str(tiny_data), "--loss", "focal",
                                      "--class-weights", "{pos: 2, neu: 0.5}", "train.focal_gamma=1"])
    tc = config_from_args(args).train
    assert (tc.loss, tc.focal_gamma, tc.class_weights) == ("focal", 1.0, {"pos": 2, "neu": 0.5})
    assert config_from_args(build_parser().parse_args(["train", "--class-weights", "balanced"])).train.class_weights \
        == "balanced"
    code = cli.main(["train", "--data", str(tiny_data), "--model", str(tiny_models["bert"]), "--out",
                     str(tmp_path / "run"), "--quiet", "--max-length", "32", "--class-weights", "{happy: 2}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: train.class_weights names label(s) ['happy']")
