"""The label kind (`textlora.heads`): each kind's loss, targets, scores, decisions, metrics, selection metric and
tuned thresholds, pinned to the numbers train/predict gave before the kind had one owner."""

import numpy as np
import pytest
import torch

from textlora.data.labels import LabelMap
from textlora.heads import MultiLabel, SingleLabel, kind_of

LOGITS = np.array([[2.0, -1.0, 0.5], [-0.5, 1.5, 1.0], [0.0, -2.0, -1.0], [1.0, 0.2, 1.2]], dtype=np.float32)
SINGLE = [0, 2, 1, 2]
MULTI = [[0], [1, 2], [], [0, 2]]


@pytest.fixture
def single():
    return kind_of(LabelMap(["a", "b", "c"]))


@pytest.fixture
def multi():
    return kind_of(LabelMap(["a", "b", "c"], multi_label=True))


def test_kind_of_chooses_from_the_label_map(single, multi):
    assert isinstance(single, SingleLabel) and single.labels == ["a", "b", "c"]
    assert isinstance(multi, MultiLabel) and multi.labels == ["a", "b", "c"]
    assert (single.problem_type, multi.problem_type) == ("single_label_classification", "multi_label_classification")


def test_single_label_loss_targets_scores_and_decisions(single):
    targets = single.targets(SINGLE)
    assert targets.dtype == torch.long and targets.device.type == "cpu" and targets.tolist() == SINGLE
    assert float(single.loss(torch.from_numpy(LOGITS), targets)) == pytest.approx(1.1215567588806152)
    scores = single.scores(LOGITS)
    np.testing.assert_allclose(scores[0], [0.785597, 0.039113, 0.17529], atol=1e-6)
    assert single.decide(scores) == ["a", "b", "a", "c"]
    assert single.decide(scores, np.array([0.9, 0.9, 0.9])) == ["a", "b", "a", "c"]  # thresholds play no part
    assert single.chosen(scores).tolist() == [[True, False, False], [False, True, False], [True, False, False],
                                              [False, False, True]]


def test_single_label_metrics_select_and_tune(single):
    m = single.metrics(LOGITS, SINGLE)
    assert (m["accuracy"], m["f1_macro"]) == (0.5, pytest.approx(0.4444444444444444))
    assert m["loss"] == pytest.approx(1.1215566608805454) and m["confusion_matrix"][2] == [0, 1, 1]
    assert single.epoch_metrics(LOGITS, SINGLE) == m
    assert single.select("accuracy") == "accuracy" and single.select("loss") == "loss"
    assert single.tune(LOGITS, SINGLE) is None
    assert single.output_rates(single.targets(SINGLE)) is None


def test_multi_label_loss_targets_scores_and_decisions(multi):
    targets = multi.targets(MULTI)
    assert targets.dtype == torch.float32 and targets.device.type == "cpu"
    assert targets.tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 0], [1, 0, 1]]
    assert float(multi.loss(torch.from_numpy(LOGITS), targets)) == pytest.approx(0.40925320982933044)
    scores = multi.scores(LOGITS)
    np.testing.assert_allclose(scores[0], [0.880797, 0.268941, 0.622459], atol=1e-6)
    assert multi.chosen(scores).tolist() == [[True, False, True], [False, True, True], [True, False, False],
                                             [True, True, True]]  # 0.5 without thresholds; a score of 0.5 is in
    assert multi.decide(scores, np.array([0.55, 0.55, 0.65])) == [["a"], ["b", "c"], [], ["a", "c"]]
    np.testing.assert_allclose(multi.output_rates(targets), [0.5, 0.25, 0.5])


def test_multi_label_metrics_select_and_tune(multi):
    m = multi.metrics(LOGITS, MULTI)
    assert (m["accuracy"], m["f1_macro"]) == (0.25, pytest.approx(0.7555555555555555))
    assert m["loss"] == pytest.approx(0.40925321053186714) and m["per_class"]["c"]["threshold"] == 0.5
    assert multi.tune(LOGITS, MULTI).tolist() == [0.55, 0.55, 0.65]
    tuned = multi.epoch_metrics(LOGITS, MULTI)
    assert (tuned["accuracy"], tuned["f1_macro"]) == (1.0, 1.0)
    assert [v["threshold"] for v in tuned["per_class"].values()] == [0.55, 0.55, 0.65]
    assert multi.metrics(LOGITS, MULTI, np.array([0.55, 0.55, 0.65]))["f1_macro"] == 1.0
    assert multi.select("accuracy") == "f1_macro"


def test_multi_label_ties_go_to_the_threshold_nearest_one_half(multi):
    """Any threshold in (0.1, 0.9] separates these: the tuner keeps 0.5 (the lowest would be 0.15); a label
    without a positive example keeps 0.5 too."""
    logits = np.log(np.array([[0.9, 0.3], [0.1, 0.2]]) / (1 - np.array([[0.9, 0.3], [0.1, 0.2]])))
    kind = kind_of(LabelMap(["x", "y"], multi_label=True))
    assert kind.tune(logits, [[0], []]).tolist() == [0.5, 0.5]
