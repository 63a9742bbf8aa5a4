"""Correlation of ImageNet accuracy with OOD detection, per (model group, training source[, fine-tuning route]).

The OOD section of the paper finds that, within one training source, zero-shot CLIP's ImageNet accuracy
correlates strongly with AUROC. :func:`accuracy_auroc_correlations` computes Pearson's r and Spearman's rho
(with their two-sided p-values and the number of models ``n``) for each OOD set, OOD score and set of models:
zero-shot CLIP and CLIP-FT are never pooled, DataComp's scales form one source family, and CLIP-FT is also
split by fine-tuning route (docs/methods.md, "Correlations (OOD table)").
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
from scipy import stats

from clip_robustness.models.registry import paper_rows

#: Training sources of the DataComp pools (one per scale), which form one source family.
DATACOMP = re.compile(r"(?i)^datacomp\b")
DATACOMP_FAMILY = "DataComp"
#: Value of ``training_source`` / ``finetune_route`` in rows that pool every source / route of the group.
ALL = "all"

#: Columns of the correlation table, in order.
CORRELATION_COLUMNS = (
    "model_group",
    "training_source",
    "finetune_route",
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


def source_family(training_source: object) -> str:
    """The training-source family of a registry ``training_source``: DataComp's pool sizes (``DataComp-1B``,
    ``DataComp-L``, ``-M``, ``-S``) form one family ``"DataComp"``; every other source is its own family."""
    text = (
        ""
        if training_source is None or (isinstance(training_source, float) and np.isnan(training_source))
        else str(training_source)
    )
    return DATACOMP_FAMILY if DATACOMP.match(text) else text


def accuracy_auroc_correlations(metrics: pd.DataFrame, registry: pd.DataFrame, in_distribution: str) -> pd.DataFrame:
    """Correlation of ImageNet top-1 with AUROC per model group, training-source family, fine-tuning route, OOD set and score.

    ``metrics``: the tidy metrics table (columns ``model, dataset, metric, value, score``); accuracy is its
    ``top1`` on ``in_distribution`` (whole ImageNet val), AUROC its ``auroc`` rows. ``registry``: the model
    registry table (``model_id, group, training_source``, optional ``finetune_route``, ``study``); only the
    paper's models (:func:`~clip_robustness.models.registry.paper_rows`) are correlated.

    Rows (columns :data:`CORRELATION_COLUMNS`), for every model group: the whole group (``training_source`` and
    ``finetune_route`` = ``"all"``), and each training-source family in it (:func:`source_family`; the paper's
    claim is the zero-shot CLIP rows of this level); for a group with several fine-tuning routes (CLIP-FT) also
    each route, and each (source family, route). ``n`` is the number of models behind every coefficient;
    coefficients are NaN below 3 models.
    """
    missing = [c for c in ("model_id", "group", "training_source") if c not in registry.columns]
    if missing:
        raise ValueError(f"model registry lacks column(s) {missing} needed for the OOD correlations")
    accuracy = metrics[(metrics["metric"] == "top1") & (metrics["dataset"] == in_distribution)]
    accuracy = accuracy.set_index("model")["value"].rename("accuracy")
    auroc = metrics[metrics["metric"] == "auroc"][["model", "dataset", "score", "value"]].rename(
        columns={"value": "auroc"}
    )
    registry = paper_rows(registry)  # the paper's groups only: a user's own models never enter a coefficient
    meta = registry[["model_id", "group", "training_source"]].copy()
    route = (
        registry["finetune_route"] if "finetune_route" in registry.columns else pd.Series("none", index=registry.index)
    )
    meta["finetune_route"] = route.fillna("none").astype(str).replace("", "none")
    meta["training_source"] = meta["training_source"].map(source_family)
    joined = auroc.join(accuracy, on="model").merge(meta, left_on="model", right_on="model_id", how="inner")
    joined = joined[joined["group"].notna() & (joined["group"].astype(str) != "")]
    rows = []
    for group, members in joined.groupby("group", sort=True):
        several_routes = members["finetune_route"].nunique() > 1
        levels = [(ALL, ALL), ("training_source", ALL)] + (
            [(ALL, "finetune_route"), ("training_source", "finetune_route")] if several_routes else []
        )
        for source_key, route_key in levels:
            keys = [k for k in (source_key, route_key) if k != ALL]
            parts = members.groupby([*keys, "dataset", "score"], sort=True)
            for key, part in parts:
                values = dict(zip([*keys, "dataset", "score"], key))
                stats_ = correlate(part["accuracy"].to_numpy(), part["auroc"].to_numpy())
                rows.append(
                    {
                        "model_group": group,
                        "training_source": values.get("training_source", ALL),
                        "finetune_route": values.get("finetune_route", ALL),
                        "dataset": values["dataset"],
                        "score": values["score"],
                        **stats_,
                    }
                )
    return pd.DataFrame(rows, columns=list(CORRELATION_COLUMNS))
