"""ImageNet-X visual factors: factor accuracy, error ratio, effective robustness (docs/methods.md, "Metric definitions").

The annotations are the real ones shipped in the ``imagenet-x`` wheel, loaded by its own
``load_annotations`` with its defaults: ``which_factor="top"`` (each image annotated with its one
most salient factor), ``partition="val"``, prototypical images filtered out (46,110 of the 50,000
ImageNet val images remain). Predictions join the annotations by ImageNet val file name
(``ILSVRC2012_val_00000001.JPEG``), and correctness is judged against the annotations' ``class``
column, exactly as ``imagenet_x.augment_model_predictions`` does.

- factor accuracy: top-1 accuracy (fraction in [0, 1]) on the annotated images whose factor is 1;
  the pseudo-factor ``"all"`` is the accuracy over every annotated image (imagenet-x's "average").
- error ratio: ``(1 - acc_factor) / (1 - acc_all)``; 1 = the factor is as hard as average, > 1 harder.
- effective robustness: ``acc_factor`` minus the accuracy predicted from ``acc_all`` by a straight
  line fitted, in logit space, over reference models (the "standard" ImageNet-1k models).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

#: The 10 factors the study reports (docs/methods.md, "The study"), in its order; all are imagenet-x FACTORS.
IMAGENET_X_FACTORS = (
    "pose",
    "background",
    "pattern",
    "color",
    "smaller",
    "shape",
    "partial_view",
    "subcategory",
    "texture",
    "larger",
)
#: Pseudo-factor naming the accuracy over all annotated images (the x axis of the factor figures).
ALL_ANNOTATED = "all"
#: Accuracies are clipped to [LOGIT_EPS, 1 - LOGIT_EPS] before the logit transform of the fit.
LOGIT_EPS = 1e-4


def load_imagenet_x_annotations(which_factor: str = "top", filter_prototypes: bool = True) -> pd.DataFrame:
    """The ImageNet val annotations of the ``imagenet-x`` wheel: one row per image.

    Columns include ``file_name``, ``class`` (ImageNet-1k index) and one 0/1 column per factor.
    """
    import imagenet_x

    return imagenet_x.load_annotations(which_factor=which_factor, partition="val", filter_prototypes=filter_prototypes)


def _join(file_names: Sequence[str], values: np.ndarray, annotations: pd.DataFrame, column: str) -> pd.DataFrame:
    frame = pd.DataFrame({"file_name": np.asarray(file_names, dtype=object), column: np.asarray(values)})
    if frame["file_name"].duplicated().any():
        raise ValueError("ImageNet-X: duplicate file names among the predictions")
    return annotations.merge(frame, on="file_name", how="inner")


def factor_accuracies(
    file_names: Sequence[str],
    predicted_classes: np.ndarray,
    annotations: pd.DataFrame,
    factors: Sequence[str] = IMAGENET_X_FACTORS,
) -> pd.DataFrame:
    """Top-1 accuracy per factor on the annotated images among ``file_names``.

    ``file_names``: ImageNet val file names (basenames) of the predictions; ``predicted_classes``:
    the top-1 ImageNet-1k index of each (full 1000-class space). Images without annotation are
    ignored. Returns one row per factor plus ``"all"`` (index ``factor``), columns ``accuracy``
    (fraction in [0, 1], NaN when no image has the factor) and ``n_images``.
    """
    missing = [f for f in factors if f not in annotations.columns]
    if missing:
        raise ValueError(
            f"ImageNet-X annotations have no factor column(s) {missing}; known: {list(annotations.columns)}"
        )
    joined = _join(file_names, predicted_classes, annotations, "predicted_class")
    correct = (joined["predicted_class"].to_numpy() == joined["class"].to_numpy()).astype(np.float64)
    rows = {}
    for factor in factors:
        has = joined[factor].to_numpy() == 1
        n = int(has.sum())
        rows[factor] = (float(correct[has].mean()) if n else float("nan"), n)
    rows[ALL_ANNOTATED] = (float(correct.mean()) if len(correct) else float("nan"), len(correct))
    out = pd.DataFrame.from_dict(rows, orient="index", columns=["accuracy", "n_images"])
    out.index.name = "factor"
    return out


def label_disagreements(file_names: Sequence[str], labels: np.ndarray, annotations: pd.DataFrame) -> int:
    """How many annotated images carry a different label in our manifest than in ImageNet-X."""
    joined = _join(file_names, labels, annotations, "manifest_label")
    return int((joined["manifest_label"].to_numpy() != joined["class"].to_numpy()).sum())


def error_ratios(accuracies: pd.Series) -> pd.Series:
    """``(1 - acc_factor) / (1 - acc_all)`` per factor, from a Series indexed by factor incl. ``"all"``.

    1 means the factor is as hard as the annotated set overall; NaN (or inf) when ``acc_all`` is 1.
    """
    if ALL_ANNOTATED not in accuracies.index:
        raise ValueError(
            f"error_ratios: accuracies need the {ALL_ANNOTATED!r} entry (accuracy over all annotated images)"
        )
    factor_acc = accuracies.drop(ALL_ANNOTATED).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (1.0 - factor_acc) / (1.0 - float(accuracies[ALL_ANNOTATED]))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), LOGIT_EPS, 1.0 - LOGIT_EPS)
    return np.log(p) - np.log1p(-p)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def fit_logit_linear(x_accuracy: np.ndarray, y_accuracy: np.ndarray) -> tuple[float, float]:
    """Least-squares line ``logit(y) = slope * logit(x) + intercept`` over points with finite values.

    Raises ``ValueError`` when fewer than 2 points remain or all ``x`` are equal.
    """
    x, y = np.asarray(x_accuracy, dtype=np.float64), np.asarray(y_accuracy, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = _logit(x[keep]), _logit(y[keep])
    if len(x) < 2 or np.ptp(x) == 0:
        raise ValueError(f"logit-space fit needs at least 2 points with distinct x, got {len(x)}")
    slope, intercept = np.polyfit(x, y, 1)
    return float(slope), float(intercept)


def effective_robustness(factor_accuracy: pd.DataFrame, reference_models: Sequence[str]) -> pd.DataFrame:
    """Effective robustness per model and factor (fraction, positive = better than the trend).

    ``factor_accuracy``: models as index, one column per factor plus ``"all"`` (accuracies in [0, 1]).
    For each factor, a line is fitted in logit space of ``acc_factor`` against ``acc_all`` over
    ``reference_models``; each model's value is its ``acc_factor`` minus the line's prediction at its
    ``acc_all``. Factors where the fit is impossible (fewer than 2 usable reference models) are NaN.
    """
    if ALL_ANNOTATED not in factor_accuracy.columns:
        raise ValueError(f"effective_robustness: factor_accuracy needs an {ALL_ANNOTATED!r} column")
    unknown = sorted(set(reference_models) - set(factor_accuracy.index))
    if unknown:
        raise ValueError(f"effective_robustness: reference models {unknown} have no factor accuracies")
    reference = factor_accuracy.loc[list(reference_models)]
    x_all = _logit(factor_accuracy[ALL_ANNOTATED].to_numpy())
    out = pd.DataFrame(index=factor_accuracy.index)
    for factor in factor_accuracy.columns.drop(ALL_ANNOTATED):
        try:
            slope, intercept = fit_logit_linear(reference[ALL_ANNOTATED].to_numpy(), reference[factor].to_numpy())
        except ValueError:
            out[factor] = np.nan
            continue
        out[factor] = factor_accuracy[factor].to_numpy() - _sigmoid(slope * x_all + intercept)
    return out
