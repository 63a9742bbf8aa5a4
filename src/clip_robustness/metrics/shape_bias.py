"""Shape bias on the cue-conflict stimuli (Geirhos et al. ICLR 2019; model-vs-human), from 1000-way logits.

- The decision (model-vs-human's ``ImageNetProbabilitiesTo16ClassesMapping``): softmax over the 1000 ImageNet
  classes, the mean probability over each category's ImageNet indices, the argmax over the categories
  (:func:`category_decisions`). Ties go to the first category in name order.
- Shape bias = shape decisions / (shape + texture decisions), over the images whose shape and texture categories
  differ (:func:`shape_bias`). ``shape_fraction`` / ``texture_fraction``: the shares of those images decided by
  their shape / their texture category (their sum is the share decided by either cue).

Pure functions on arrays; :func:`shape_bias_rows` makes the tidy rows of one model on one cue-conflict dataset.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from clip_robustness.datasets.cue_conflict import CategoryMapping, texture_category
from clip_robustness.metrics.tidy import MetricsInputError, tidy_row
from clip_robustness.names import NUM_CLASSES

#: Metrics of the cue-conflict rows (fractions in [0, 1]; ``n_cue_conflict`` a count of images).
SHAPE_BIAS_METRICS = ("shape_bias", "shape_fraction", "texture_fraction", "n_cue_conflict")


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax (float64, numerically stable)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def category_probabilities(probabilities: np.ndarray, category_indices: Sequence[Sequence[int]]) -> np.ndarray:
    """``(n, k)``: the mean of each row's probabilities over each category's ImageNet indices."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != NUM_CLASSES:
        raise ValueError(f"expected (n, {NUM_CLASSES}) ImageNet probabilities, got shape {p.shape}")
    if np.any(p < 0) or np.any(p > 1):
        raise ValueError("probabilities must lie in [0, 1]")
    return np.stack([p[:, list(idx)].mean(axis=1) for idx in category_indices], axis=1)


def category_decisions(probabilities: np.ndarray, category_indices: Sequence[Sequence[int]]) -> np.ndarray:
    """``(n,)`` int: the position of each row's decided category (argmax of :func:`category_probabilities`)."""
    return np.argmax(category_probabilities(probabilities, category_indices), axis=1)


@dataclass(frozen=True)
class ShapeBias:
    """Counts and shares over the ``n_conflict`` images whose shape and texture categories differ."""

    n_conflict: int
    n_shape: int
    n_texture: int

    @property
    def shape_bias(self) -> float:
        """Shape decisions / (shape + texture decisions); NaN when neither cue decided any image."""
        both = self.n_shape + self.n_texture
        return self.n_shape / both if both else float("nan")

    @property
    def shape_fraction(self) -> float:
        return self.n_shape / self.n_conflict if self.n_conflict else float("nan")

    @property
    def texture_fraction(self) -> float:
        return self.n_texture / self.n_conflict if self.n_conflict else float("nan")


def shape_bias(decisions: np.ndarray, shape: np.ndarray, texture: np.ndarray) -> ShapeBias:
    """Shape bias of category ``decisions`` against each image's ``shape`` and ``texture`` category (same coding);
    images whose shape and texture agree are left out."""
    decisions, shape, texture = (np.asarray(a) for a in (decisions, shape, texture))
    if not decisions.shape == shape.shape == texture.shape or decisions.ndim != 1:
        raise ValueError(
            f"decisions, shape and texture must be 1-d of one length: {decisions.shape}, {shape.shape}, {texture.shape}"
        )
    conflict = shape != texture
    return ShapeBias(
        int(conflict.sum()),
        int((conflict & (decisions == shape)).sum()),
        int((conflict & (decisions == texture)).sum()),
    )


def cue_conflict_categories(
    paths: Sequence[str], labels: np.ndarray, mapping: CategoryMapping
) -> tuple[np.ndarray, np.ndarray]:
    """(shape, texture) category positions of each manifest row: the shape from its label (a category's ImageNet
    index), the texture from its file name (:func:`~clip_robustness.datasets.cue_conflict.texture_category`)."""
    position_of_index = {i: k for k, idx in enumerate(mapping.indices) for i in idx}
    labels = np.asarray(labels)
    unknown = sorted({int(x) for x in labels if int(x) not in position_of_index})
    if unknown:
        raise MetricsInputError(f"cue-conflict labels {unknown[:5]} are in no category of {mapping.source}")
    shape = np.array([position_of_index[int(x)] for x in labels], dtype=np.int64)
    texture = np.array([mapping.position(texture_category(p)) for p in paths], dtype=np.int64)
    return shape, texture


def shape_bias_rows(
    model: str, dataset: str, logits: np.ndarray, paths: Sequence[str], labels: np.ndarray, mapping: CategoryMapping
) -> list[dict]:
    """Tidy rows :data:`SHAPE_BIAS_METRICS` of one model on one cue-conflict dataset."""
    shape, texture = cue_conflict_categories(paths, labels, mapping)
    result = shape_bias(category_decisions(softmax(logits), mapping.indices), shape, texture)
    return [
        tidy_row(model, dataset, "shape_bias", result.shape_bias),
        tidy_row(model, dataset, "shape_fraction", result.shape_fraction),
        tidy_row(model, dataset, "texture_fraction", result.texture_fraction),
        tidy_row(model, dataset, "n_cue_conflict", result.n_conflict),
    ]
