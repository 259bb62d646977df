"""Training losses for imbalanced labels: per-class weights, per-label `pos_weight` and focal loss.

The label kind (`textlora.heads`) builds its loss from `train.loss`, `train.focal_gamma` and
`train.class_weights` with these functions; the weights come from the training split only.

- Single-label: cross-entropy, or the softmax focal loss of Lin et al. 2017 ("Focal Loss for Dense Object
  Detection", https://arxiv.org/abs/1708.02002), with optional class weights as its alpha. Weighted losses are
  averaged as `torch.nn.functional.cross_entropy(weight=)` does: divided by the sum of the rows' weights.
- Multi-label: binary cross-entropy with an optional `pos_weight` per label, or the sigmoid focal loss
  (as `torchvision.ops.sigmoid_focal_loss` with alpha off), which takes the same `pos_weight`.

"balanced" follows scikit-learn's `compute_class_weight`: n / (k * count) per class. For multi-label it is the
`pos_weight` that `BCEWithLogitsLoss` documents: negatives / positives per label, clipped to
[1 / MAX_POS_WEIGHT, MAX_POS_WEIGHT].

>>> import numpy as np
>>> balanced_class_weights(np.array([0, 0, 0, 1]), 2).tolist()
[0.6666666666666666, 2.0]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from textlora.errors import ConfigError

if TYPE_CHECKING:
    import torch

MAX_POS_WEIGHT = 100.0
"""The largest balanced `pos_weight` (and 1 / it the smallest). GoEmotions' rarest label, grief, has ~560
negatives per positive: unclipped, one grief row would outweigh a batch of hundreds."""


def balanced_class_weights(ids: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-class weights n / (k * count) of the class ids `ids` (scikit-learn's "balanced"), so that every class
    carries the same total weight and the mean row weight is 1. A class with no row gets weight 0 (it never is a
    target) and k counts only the classes that have rows."""
    counts = np.bincount(np.asarray(ids, dtype=np.int64), minlength=num_classes).astype(np.float64)
    present = max(int((counts > 0).sum()), 1)
    return np.where(counts > 0, counts.sum() / (present * np.maximum(counts, 1.0)), 0.0)


def balanced_pos_weights(multi_hot: np.ndarray) -> np.ndarray:
    """Per-label `pos_weight` of a multi-hot matrix (n, k): negatives / positives, clipped to
    [1 / MAX_POS_WEIGHT, MAX_POS_WEIGHT]; a label with no positive row gets 1 (it has nothing to weigh)."""
    y = np.asarray(multi_hot, dtype=np.float64)
    pos = y.sum(axis=0)
    neg = y.shape[0] - pos
    ratio = np.where(pos > 0, neg / np.maximum(pos, 1.0), 1.0)
    return np.clip(ratio, 1.0 / MAX_POS_WEIGHT, MAX_POS_WEIGHT)


def given_weights(weights: Mapping[str, float], labels: Sequence[str]) -> np.ndarray:
    """The weight of each of `labels` from a {label: weight} mapping; labels it leaves out weigh 1."""
    return np.array([float(weights.get(label, 1.0)) for label in labels], dtype=np.float64)


def resolve_weights(class_weights: str | Mapping[str, float], labels: Sequence[str],
                    balanced: Callable[[], np.ndarray]) -> np.ndarray | None:
    """The weight per label that `train.class_weights` asks for: None for 'none', `balanced()` for 'balanced',
    else the mapping's (`given_weights`)."""
    if class_weights == "none":
        return None
    return balanced() if class_weights == "balanced" else given_weights(class_weights, labels)


def check_class_weights(class_weights: str | Mapping[str, float], labels: Sequence[str]) -> None:
    """Check that a {label: weight} `train.class_weights` names only labels of the data, before the model loads.

    Raises:
        ConfigError: naming the unknown labels and the known ones.
    """
    if not isinstance(class_weights, Mapping):
        return
    unknown = [k for k in class_weights if k not in set(labels)]
    if unknown:
        raise ConfigError(f"train.class_weights names label(s) {unknown} that the data does not have; its labels "
                          f"are {list(labels)}. Use those names as keys.")


def softmax_focal(logits: torch.Tensor, targets: torch.Tensor, gamma: float = 0.0,
                  weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean softmax focal loss of class ids (B,) under logits (B, k): -(1 - p_t)^gamma log p_t per row.

    gamma 0 is cross-entropy; `weight` (k,) weighs each row by its class (alpha) and the mean divides by the
    rows' total weight, as `F.cross_entropy(weight=)` does.
    """
    import torch.nn.functional as F

    if gamma == 0:
        return F.cross_entropy(logits, targets, weight=weight)
    log_pt = F.log_softmax(logits, dim=-1).gather(1, targets[:, None]).squeeze(1)  # (B,)
    loss = -((1.0 - log_pt.exp()) ** gamma) * log_pt
    if weight is None:
        return loss.mean()
    w = weight[targets]
    return (w * loss).sum() / w.sum()


def sigmoid_focal(logits: torch.Tensor, targets: torch.Tensor, gamma: float = 0.0,
                  pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean per-label sigmoid focal loss of a multi-hot (B, k) under logits (B, k): the binary cross-entropy
    (with `pos_weight` (k,) on the positives) times (1 - p_t)^gamma; gamma 0 is the binary cross-entropy."""
    import torch
    import torch.nn.functional as F

    bce = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight,
                                             reduction="mean" if gamma == 0 else "none")
    if gamma == 0:
        return bce
    p = torch.sigmoid(logits)
    p_t = p * targets + (1.0 - p) * (1.0 - targets)
    return (bce * (1.0 - p_t) ** gamma).mean()


@dataclass
class Loss:
    """A training loss chosen once from the config: call it with (logits, targets) for the mean loss.

    `weights` are the resolved per-class weights (single-label) or per-label pos_weight (multi-label), None for
    none; `describe` is what the run records of it."""

    fn: Callable[..., torch.Tensor]
    labels: list[str]
    name: str = "ce"
    gamma: float = 0.0
    weights: np.ndarray | None = None
    weights_name: str = "class_weights"
    """What `weights` are called in the record: class_weights or pos_weight."""
    _tensor: Any = field(default=None, repr=False, compare=False)
    """`weights` as a tensor where the logits are (set by `to`)."""

    def to(self, device: torch.device | str) -> Loss:
        """This loss with its weights as a float tensor on `device` (where the logits are)."""
        import torch

        if self.weights is not None:
            self._tensor = torch.as_tensor(self.weights, dtype=torch.float32, device=device)
        return self

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.weights is not None and (self._tensor is None or self._tensor.device != logits.device):
            self.to(logits.device)
        return self.fn(logits, targets, self.gamma, self._tensor)

    def norm(self, targets: torch.Tensor) -> float:
        """What this loss's mean over `targets` divides by: the rows' total class weight (single-label with
        weights, as `F.cross_entropy(weight=)`), else the number of rows. Gradient accumulation weighs each
        micro-batch by its share of the batch's norm, so the summed gradient is the whole batch's."""
        if self.weights is None or self.weights_name != "class_weights":
            return float(len(targets))
        return float(self.weights[targets.cpu().numpy()].sum())

    def describe(self) -> dict[str, Any]:
        """The loss as the run records it: its name, gamma (focal only) and the resolved weights by label."""
        d: dict[str, Any] = {"loss": self.name}
        if self.name == "focal":
            d["focal_gamma"] = self.gamma
        d[self.weights_name] = None if self.weights is None else dict(zip(self.labels, self.weights.tolist()))
        return d
