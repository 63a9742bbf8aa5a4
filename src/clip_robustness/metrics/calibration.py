"""Calibration: ECE and NLL before and after temperature scaling (docs/methods.md, "Metric definitions").

Conventions (pinned, recorded in ``settings.json`` by the aggregate rule):

- Probabilities are the softmax of ``logits / T`` over the dataset's label space. When several
  ImageNet classes count as one class (ObjectNet), the 1000-way output is pooled onto the groups
  once, and top-1, confidence and NLL all come from the pooled output (config ``metrics.objectnet_pooling``,
  :data:`POOLINGS`): ``max_logit`` (default) scores each group by its largest logit, so the prediction
  is the group of the top-1 class (the reference ObjectNet top-1) and probabilities are the softmax over
  the groups' scores; ``sum_probability`` gives each group the summed probability of its classes and
  predicts the most probable group (that prediction can change with the temperature).
- Confidence = the probability of the predicted outcome, so "correct" and "confidence" describe the
  same event. For plain label spaces this is the usual top-label confidence (maximum probability).
- ECE: ``n_bins`` equal-width bins over confidence, bins ``(lo, hi]``, weighted mean of
  ``|accuracy - mean confidence|`` per bin, in **percent** (0..100).
- NLL: mean of ``-log p(true outcome)``, natural log (nats per image), computed in float64.
- The temperature ``T`` (> 0, logits are divided by it) minimises the NLL over the 1000 ImageNet
  classes on the calibration half of ImageNet val; :func:`calibration_split` pins that split.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar

from clip_robustness.datasets.label_spaces import LabelSpace
from clip_robustness.metrics.accuracy import check_logits_and_labels, predicted_groups, restrict_logits, true_groups

#: Poolings of a grouped label space (ObjectNet): how the classes of one group become one outcome.
POOLINGS: tuple[str, ...] = ("max_logit", "sum_probability")

#: Rows per float64 block: bounds the temporary memory (block x classes x 8 bytes) of one pass.
_BLOCK_ROWS = 4096


@dataclass(frozen=True)
class Predictions:
    """Per-image outcome of a model on a labelled dataset, at one temperature.

    ``correct``: bool [n], the top-1 prediction's group equals the true label's group.
    ``confidence``: float64 [n] in (0, 1], probability the model gives its predicted outcome.
    ``nll``: float64 [n] >= 0, ``-log p(true outcome)`` in nats.
    """

    correct: np.ndarray
    confidence: np.ndarray
    nll: np.ndarray

    @property
    def accuracy(self) -> float:
        """Top-1 accuracy, fraction in [0, 1]."""
        return float(self.correct.mean())

    @property
    def mean_nll(self) -> float:
        """Mean negative log-likelihood in nats per image."""
        return float(self.nll.mean())


def _check_temperature(temperature: float) -> None:
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")


def predict(
    logits: np.ndarray,
    labels: np.ndarray,
    label_space: LabelSpace | None = None,
    temperature: float = 1.0,
    pooling: str = POOLINGS[0],
) -> Predictions:
    """Correctness, confidence and NLL of each image (see :class:`Predictions`).

    ``logits``: [n, 1000] (any float dtype; computed in float64 blocks). ``labels``: ImageNet-1k
    indices [n], all inside ``label_space`` (default: the full 1000 classes). ``temperature``: the
    logits are divided by it before the softmax; it does not change the prediction (except with
    ``sum_probability`` pooling). ``pooling``: how a grouped label space (ObjectNet) pools its classes
    (:data:`POOLINGS`, module docstring); ignored for plain label spaces.
    """
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    check_logits_and_labels(logits, labels)
    _check_temperature(temperature)
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {list(POOLINGS)}, got {pooling!r}")
    label_space = label_space or LabelSpace.imagenet_1k()
    truth = true_groups(labels, label_space)
    restricted = restrict_logits(logits, label_space)
    if label_space.class_groups is not None:
        return _grouped_predictions(restricted, truth, label_space, temperature, pooling)
    predicted = predicted_groups(logits, label_space)
    n = len(labels)

    # column of the true class inside the restricted logits
    column_of = np.full(int(label_space.class_indices.max()) + 1, -1, dtype=np.int64)
    column_of[label_space.class_indices] = np.arange(len(label_space.class_indices))
    true_column = column_of[truth]

    confidence = np.empty(n, dtype=np.float64)
    nll = np.empty(n, dtype=np.float64)
    for start in range(0, n, _BLOCK_ROWS):
        rows = slice(start, min(start + _BLOCK_ROWS, n))
        z = restricted[rows].astype(np.float64) / temperature
        z_max = z.max(axis=1, keepdims=True)
        z -= z_max
        np.exp(z, out=z)
        total = z.sum(axis=1)
        block = np.arange(rows.stop - rows.start)
        # predicted class has the maximum logit: its unnormalised probability is exp(0) = 1
        confidence[rows] = 1.0 / total
        true_mass = z[block, true_column[rows]]
        with np.errstate(divide="ignore"):
            nll[rows] = np.log(total) - np.log(true_mass)
    # exp underflow (a true class more than ~745 nats below the max) gives inf; recompute exactly.
    overflow = ~np.isfinite(nll)
    if overflow.any():
        nll[overflow] = _exact_nll(restricted[overflow], labels[overflow], label_space, temperature)
    return Predictions(correct=predicted == truth, confidence=confidence, nll=nll)


def pool_groups(restricted: np.ndarray, label_space: LabelSpace, pooling: str) -> tuple[np.ndarray, np.ndarray]:
    """One score per group of a grouped label space: ``(group_ids [G], group_logits float64 [n, G])``.

    ``restricted``: logits [n, k] over ``label_space.class_indices`` (already divided by the temperature).
    ``max_logit``: a group's largest logit; ``sum_probability``: the log-sum-exp of its logits, so that the
    softmax over groups is the summed probability of each group's classes.
    """
    from scipy.special import logsumexp

    group_ids, group_column = np.unique(label_space.class_groups, return_inverse=True)
    order = np.argsort(group_column, kind="stable")
    starts = np.searchsorted(group_column[order], np.arange(len(group_ids)))
    z = np.asarray(restricted, dtype=np.float64)[:, order]
    if pooling == "max_logit":
        return group_ids, np.maximum.reduceat(z, starts, axis=1)
    bounds = [*starts, z.shape[1]]
    return group_ids, np.stack(
        [logsumexp(z[:, bounds[g] : bounds[g + 1]], axis=1) for g in range(len(group_ids))], axis=1
    )


def _grouped_predictions(
    restricted: np.ndarray, truth: np.ndarray, label_space: LabelSpace, temperature: float, pooling: str
) -> Predictions:
    """:func:`predict` for a grouped label space: the classes pooled onto groups, then a plain softmax over groups."""
    from scipy.special import logsumexp

    group_ids, scores = pool_groups(np.asarray(restricted, dtype=np.float64) / temperature, label_space, pooling)
    predicted = group_ids[np.argmax(scores, axis=1)]
    log_total = logsumexp(scores, axis=1)
    true_score = scores[np.arange(len(truth)), np.searchsorted(group_ids, truth)]
    confidence = np.exp(scores.max(axis=1) - log_total)
    return Predictions(correct=predicted == truth, confidence=confidence, nll=log_total - true_score)


def _exact_nll(restricted: np.ndarray, labels: np.ndarray, label_space: LabelSpace, temperature: float) -> np.ndarray:
    """``-log p(true outcome)`` via log-sum-exp, for rows whose probability underflows float64."""
    from scipy.special import logsumexp

    z = restricted.astype(np.float64) / temperature
    truth = true_groups(labels, label_space)
    groups = label_space.class_indices if label_space.class_groups is None else label_space.class_groups
    in_true = groups[None, :] == truth[:, None]
    log_true = logsumexp(np.where(in_true, z, -np.inf), axis=1)
    return logsumexp(z, axis=1) - log_true


def negative_log_likelihood(
    logits: np.ndarray,
    labels: np.ndarray,
    label_space: LabelSpace | None = None,
    temperature: float = 1.0,
) -> float:
    """Mean ``-log p(true outcome)`` in nats per image, float64, for ``logits / temperature``."""
    return predict(logits, labels, label_space, temperature).mean_nll


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> float:
    """Expected calibration error in percent (0..100).

    ``confidence``: probability of the predicted outcome, [n] in [0, 1]. ``correct``: bool [n].
    Bins are ``n_bins`` equal-width intervals ``(lo, hi]`` over [0, 1] (a confidence of exactly 0
    falls in the first bin); ECE = sum over bins of ``(n_bin / n) * |accuracy_bin - confidence_bin|``.
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    if confidence.ndim != 1 or confidence.shape != correct.shape:
        raise ValueError(
            f"ECE: confidence {list(confidence.shape)} and correct {list(correct.shape)} must be equal 1-d"
        )
    if len(confidence) == 0:
        raise ValueError("ECE: no images")
    if n_bins < 1:
        raise ValueError(f"ECE: n_bins must be >= 1, got {n_bins}")
    if confidence.min() < 0 or confidence.max() > 1:
        raise ValueError("ECE: confidences must lie in [0, 1]")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # searchsorted(side="left") returns i with edges[i-1] < c <= edges[i]: bin i-1 is (lo, hi].
    bin_of = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    gap = np.abs(
        np.bincount(bin_of, weights=correct, minlength=n_bins)
        - np.bincount(bin_of, weights=confidence, minlength=n_bins)
    )
    # sum_b (n_b / n) * |acc_b - conf_b| = sum_b |sum correct_b - sum confidence_b| / n
    return float(100.0 * gap.sum() / len(confidence))


def fit_temperature(
    logits: np.ndarray,
    labels: np.ndarray,
    temperature_range: Sequence[float] = (0.01, 10.0),
    label_space: LabelSpace | None = None,
) -> float:
    """The temperature ``T`` in ``temperature_range`` minimising the NLL of ``logits / T``.

    The NLL is convex in ``1/T``, hence unimodal in ``log T``: a bounded Brent search over
    ``log T`` finds the minimum (relative precision about 1e-5). ``logits`` [n, 1000] of the
    calibration half, ``labels`` ImageNet-1k indices.
    """
    low, high = (float(v) for v in temperature_range)
    if not (0 < low < high and math.isfinite(high)):
        raise ValueError(f"temperature_range must be 0 < low < high, got {list(temperature_range)}")
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    check_logits_and_labels(logits, labels, "fit_temperature")
    if len(labels) == 0:
        raise ValueError("fit_temperature: empty calibration set")

    def objective(log_t: float) -> float:
        return negative_log_likelihood(logits, labels, label_space, math.exp(log_t))

    result = minimize_scalar(
        objective, bounds=(math.log(low), math.log(high)), method="bounded", options={"xatol": 1e-5}
    )
    best = float(math.exp(result.x))
    # Brent never evaluates the bounds themselves: near an edge, compare with it so a minimum there is exact.
    candidates = {best: float(result.fun)}
    for edge in (low, high):
        if abs(math.log(best) - math.log(edge)) < 1e-3:
            candidates[edge] = objective(math.log(edge))
    return min(candidates, key=candidates.__getitem__)


def calibration_split(file_names: Sequence[str], seed: int) -> np.ndarray:
    """Boolean mask [n]: True for the calibration half of ImageNet val, False for the ID test half.

    File names are sorted, then shuffled by ``numpy.random.default_rng(seed).permutation``; the
    first ``n // 2`` of that order form the calibration half (the test half gets the odd image).
    The split depends only on the set of names and the seed, not on the order rows come in.
    """
    names = np.asarray(list(file_names), dtype=str)
    n = len(names)
    if n < 2:
        raise ValueError(f"calibration_split: need at least 2 images, got {n}")
    order = np.argsort(names, kind="stable")
    if np.any(names[order][1:] == names[order][:-1]):
        raise ValueError("calibration_split: file names are not unique")
    shuffled = order[np.random.default_rng(seed).permutation(n)]
    mask = np.zeros(n, dtype=bool)
    mask[shuffled[: n // 2]] = True
    return mask
