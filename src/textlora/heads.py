"""The label kind: single-label (one class per text, a softmax) or multi-label (a set of labels per text, an
independent sigmoid per label), chosen once from the `LabelMap` by `kind_of`.

Each kind answers the same questions, so train, predict, serve, report and the CLI ask it instead of testing
`multi_label` themselves: the training loss and targets, scores from logits, decisions at thresholds, the
metrics of logits, the metric that picks the best epoch and the thresholds tuned after training.

>>> import numpy as np
>>> from textlora.data.labels import LabelMap
>>> kind = kind_of(LabelMap(["neg", "pos"]))
>>> kind.decide(kind.scores(np.array([[0.2, 1.5]])))
['pos']
>>> kind = kind_of(LabelMap(["a", "b"], multi_label=True))
>>> kind.decide(kind.scores(np.array([[2.0, -1.0]])), np.array([0.5, 0.5]))
[['a']]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from textlora.losses import (
    Loss,
    balanced_class_weights,
    balanced_pos_weights,
    resolve_weights,
    sigmoid_focal,
    softmax_focal,
)
from textlora.metrics import (
    binary_cross_entropy,
    classification_metrics,
    cross_entropy,
    multi_hot,
    multilabel_metrics,
    sigmoid,
    softmax,
    tune_thresholds,
)

if TYPE_CHECKING:
    import torch

    from textlora.config import TrainConfig
    from textlora.data.labels import LabelMap


class SingleLabel:
    """One class per text: softmax scores, cross-entropy loss, the top-scoring label, no thresholds."""

    name = "single_label"
    problem_type = "single_label_classification"
    """What Hugging Face's `config.problem_type` calls this kind."""

    def __init__(self, labels: Sequence[str]):
        self.labels = list(labels)

    @staticmethod
    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of class ids (B,) under logits (B, k): a softmax over the labels."""
        import torch.nn.functional as F

        return F.cross_entropy(logits, targets)

    def loss_fn(self, tc: TrainConfig, targets: torch.Tensor) -> Loss:
        """The training loss per `tc.loss`, `tc.focal_gamma` and `tc.class_weights`: cross-entropy or softmax
        focal, with per-class weights ("balanced": n / (k * count) of the training targets (n,))."""
        w = resolve_weights(tc.class_weights, self.labels,
                            lambda: balanced_class_weights(targets.numpy(), len(self.labels)))
        return Loss(softmax_focal, self.labels, tc.loss, tc.focal_gamma if tc.loss == "focal" else 0.0, w)

    def targets(self, ids: Sequence[int]) -> torch.Tensor:
        """Training targets on the host: the class ids (n,) as a long tensor."""
        import torch

        return torch.tensor(list(ids), dtype=torch.long, device="cpu")

    def scores(self, logits: np.ndarray) -> np.ndarray:
        """Softmax probabilities (n, k)."""
        return softmax(logits)

    def chosen(self, scores: np.ndarray, thresholds: np.ndarray | None = None) -> np.ndarray:
        """Which labels each row chooses (n, k) booleans: the top-scoring one; `thresholds` play no part."""
        scores = np.asarray(scores)
        return np.arange(scores.shape[1])[None, :] == scores.argmax(axis=1)[:, None]

    def decide(self, scores: np.ndarray, thresholds: np.ndarray | None = None) -> list[str]:
        """The top-scoring label's name per row."""
        return [self.labels[i] for i in np.asarray(scores).argmax(axis=1)]

    def metrics(self, logits: np.ndarray, ids: Sequence[int], thresholds: np.ndarray | None = None) -> dict[str, Any]:
        """Accuracy, F1, per-class figures and confusion matrix of the argmax, plus the cross-entropy `loss`."""
        m = classification_metrics(ids, np.asarray(logits).argmax(axis=1), self.labels)
        m["loss"] = cross_entropy(logits, ids)
        return m

    def epoch_metrics(self, logits: np.ndarray, ids: Sequence[int]) -> dict[str, Any]:
        """How each epoch's validation is scored: the plain `metrics`."""
        return self.metrics(logits, ids)

    def select(self, configured: str) -> str:
        """The metric that keeps the best epoch: the configured one (`train.select_metric`)."""
        return configured

    def tune(self, logits: np.ndarray, ids: Sequence[int]) -> None:
        """Thresholds tuned after training: none, the argmax needs none."""
        return None

    def calibration(self, logits: np.ndarray, ids: Sequence[int]) -> dict[str, Any]:
        """Temperature scaling decided on validation (`calibration.temperature_record`): predict and serve divide
        the logits by T before the softmax when it lowers validation ECE; the argmax stays the same."""
        from textlora.calibration import temperature_record

        return temperature_record(logits, ids)

    def output_rates(self, targets: torch.Tensor, weights: np.ndarray | None = None) -> None:
        """Rates to start the new head's bias at: none, the softmax head keeps its initialisation."""
        return None


class MultiLabel:
    """A set of labels per text: an independent sigmoid per label, binary cross-entropy, every label at or over
    its threshold (tuned per label on validation after training; 0.5 before)."""

    name = "multi_label"
    problem_type = "multi_label_classification"
    """What Hugging Face's `config.problem_type` calls this kind."""

    def __init__(self, labels: Sequence[str]):
        self.labels = list(labels)

    @staticmethod
    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean per-label binary cross-entropy of a multi-hot (B, k) under logits (B, k)."""
        import torch.nn.functional as F

        return F.binary_cross_entropy_with_logits(logits, targets)

    def loss_fn(self, tc: TrainConfig, targets: torch.Tensor) -> Loss:
        """The training loss per `tc.loss`, `tc.focal_gamma` and `tc.class_weights`: binary cross-entropy or sigmoid
        focal, with a `pos_weight` per label ("balanced": negatives / positives in the training targets (n, k),
        clipped, see `textlora.losses.MAX_POS_WEIGHT`)."""
        w = resolve_weights(tc.class_weights, self.labels, lambda: balanced_pos_weights(targets.numpy()))
        return Loss(sigmoid_focal, self.labels, tc.loss, tc.focal_gamma if tc.loss == "focal" else 0.0, w,
                    "pos_weight")

    def targets(self, ids: Sequence[Sequence[int]]) -> torch.Tensor:
        """Training targets on the host: a float multi-hot matrix (n, k)."""
        import torch

        return torch.from_numpy(multi_hot(ids, len(self.labels)))

    def scores(self, logits: np.ndarray) -> np.ndarray:
        """An independent sigmoid score per label (n, k)."""
        return sigmoid(logits)

    def chosen(self, scores: np.ndarray, thresholds: np.ndarray | None = None) -> np.ndarray:
        """Which labels each row chooses (n, k) booleans: every label at or over its threshold (0.5 without)."""
        t = np.asarray(0.5 if thresholds is None else thresholds, dtype=np.float64)
        return np.asarray(scores) >= np.broadcast_to(t, (len(self.labels),))[None, :]

    def decide(self, scores: np.ndarray, thresholds: np.ndarray | None = None) -> list[list[str]]:
        """The names of the labels at or over their threshold per row (possibly none)."""
        return [[n for n, c in zip(self.labels, row) if c] for row in self.chosen(scores, thresholds)]

    def metrics(self, logits: np.ndarray, ids: Sequence[Sequence[int]],
                thresholds: np.ndarray | None = None) -> dict[str, Any]:
        """Subset accuracy, micro/macro/samples F1 and per-label figures at `thresholds` (0.5 without), plus
        the binary cross-entropy `loss`."""
        y = multi_hot(ids, len(self.labels))
        m = multilabel_metrics(y, sigmoid(logits), self.labels, 0.5 if thresholds is None else thresholds)
        m["loss"] = binary_cross_entropy(logits, y)
        return m

    def epoch_metrics(self, logits: np.ndarray, ids: Sequence[Sequence[int]]) -> dict[str, Any]:
        """How each epoch's validation is scored: at thresholds tuned on these very logits (at 0.5, rare labels
        are never predicted early in training and every epoch scores a macro-F1 of 0)."""
        return self.metrics(logits, ids, self.tune(logits, ids))

    def select(self, configured: str) -> str:
        """The metric that keeps the best epoch: always macro-F1 (at the thresholds tuned each epoch)."""
        return "f1_macro"

    def tune(self, logits: np.ndarray, ids: Sequence[Sequence[int]]) -> np.ndarray:
        """Per-label thresholds maximising each label's F1 on (logits, ids): `metrics.tune_thresholds`."""
        return tune_thresholds(multi_hot(ids, len(self.labels)), sigmoid(logits))

    def calibration(self, logits: np.ndarray, ids: Sequence[Sequence[int]]) -> None:
        """None: multi-label scores stay the raw sigmoids. The per-label thresholds are tuned on those very
        scores, so a temperature would have to move every threshold with it to keep the decisions, and the
        top-label ECE a temperature is fitted for does not measure independent per-label sigmoids."""
        return None

    def output_rates(self, targets: torch.Tensor, weights: np.ndarray | None = None) -> np.ndarray:
        """Each label's rate in the training targets: its sigmoid starts there, not at 0.5
        (see `textlora.model.adapters.init_output_bias`). With a `pos_weight` per label (`weights`) the rate that
        minimises the weighted loss, w p / (w p + 1 - p): 0.5 for balanced weights."""
        p = targets.numpy().mean(axis=0)
        return p if weights is None else weights * p / (weights * p + 1.0 - p)


LabelKind = SingleLabel | MultiLabel

KINDS: dict[bool, type[SingleLabel] | type[MultiLabel]] = {False: SingleLabel, True: MultiLabel}
"""The kind classes by `LabelMap.multi_label`."""


def kind_of(label_map: LabelMap) -> LabelKind:
    """The label kind of `label_map`: `MultiLabel` for a run trained on label lists, else `SingleLabel`.

    The one place that looks at `multi_label`; everything else asks the object it returns.
    """
    return KINDS[label_map.multi_label](label_map.labels)
