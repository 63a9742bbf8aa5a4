"""Correlation of ImageNet accuracy with OOD detection, per model group or training source.

The OOD section of the paper finds that, within one training source, ImageNet accuracy correlates
strongly with AUROC. :func:`accuracy_auroc_correlations` computes Pearson's r and Spearman's rho
(with their two-sided p-values and the number of models ``n``) for each OOD set, OOD score and
group of models.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

#: Columns of the correlation table, in order.
CORRELATION_COLUMNS = (
    "grouping",
    "group",
    "dataset",
    "score",
    "n",
    "pearson_r",
    "pearson_p",
    "spearman_r",
    "spearman_p",
)


def correlate(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Pearson and Spearman correlation of two equal-length samples, ignoring pairs with a NaN.

    Returns ``n`` (pairs used) and ``pearson_r``, ``pearson_p``, ``spearman_r``, ``spearman_p``;
    the coefficients are NaN when ``n < 3`` (a line through 2 points is always r = +-1) or a
    sample is constant.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"correlate: samples differ in shape {x.shape} vs {y.shape}")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    out = {"n": int(len(x)), "pearson_r": np.nan, "pearson_p": np.nan, "spearman_r": np.nan, "spearman_p": np.nan}
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        pearson = stats.pearsonr(x, y)
        spearman = stats.spearmanr(x, y)
    out.update(
        pearson_r=float(pearson.statistic),
        pearson_p=float(pearson.pvalue),
        spearman_r=float(spearman.statistic),
        spearman_p=float(spearman.pvalue),
    )
    return out


def accuracy_auroc_correlations(
    metrics: pd.DataFrame,
    registry: pd.DataFrame,
    in_distribution: str,
    groupings: Sequence[str] = ("group", "training_source"),
) -> pd.DataFrame:
    """Correlation of ImageNet top-1 with AUROC, per grouping column, group, OOD set and score.

    ``metrics``: the tidy metrics table (columns ``model, dataset, metric, value, score``);
    accuracy is its ``top1`` on ``in_distribution`` (whole ImageNet val), AUROC its ``auroc`` rows.
    ``registry``: the model registry table (``model_id`` plus the ``groupings`` columns). Models
    with an empty group value are left out of that grouping. Columns: :data:`CORRELATION_COLUMNS`.
    """
    missing = [c for c in ("model_id", *groupings) if c not in registry.columns]
    if missing:
        raise ValueError(f"model registry lacks column(s) {missing} needed for the OOD correlations")
    accuracy = metrics[(metrics["metric"] == "top1") & (metrics["dataset"] == in_distribution)]
    accuracy = accuracy.set_index("model")["value"].rename("accuracy")
    auroc = metrics[metrics["metric"] == "auroc"][["model", "dataset", "score", "value"]].rename(columns={"value": "auroc"})
    joined = auroc.join(accuracy, on="model").merge(
        registry[["model_id", *groupings]], left_on="model", right_on="model_id", how="left"
    )
    rows = []
    for grouping in groupings:
        usable = joined[joined[grouping].notna() & (joined[grouping].astype(str) != "")]
        for (group, dataset, score), part in usable.groupby([grouping, "dataset", "score"], sort=True):
            stats_ = correlate(part["accuracy"].to_numpy(), part["auroc"].to_numpy())
            rows.append({"grouping": grouping, "group": group, "dataset": dataset, "score": score, **stats_})
    return pd.DataFrame(rows, columns=list(CORRELATION_COLUMNS))
