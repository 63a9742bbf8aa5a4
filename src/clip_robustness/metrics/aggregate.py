"""The aggregate over models: every per-model table in one tidy frame, plus the rows only the whole study gives
(effective robustness against the reference group's fit, the ImageNet-C condition)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from clip_robustness.metrics.imagenet_x import ALL_ANNOTATED, effective_robustness
from clip_robustness.metrics.tidy import (
    IMAGENET_X_DATASET,
    MetricSettings,
    MetricsInputError,
    read_metrics_table,
    settings_record,
    tidy_frame,
    tidy_row,
)
from clip_robustness.models.registry import paper_rows
from clip_robustness.names import IMAGENET_C_DATASET, IMAGENET_C_PATTERN, REFERENCE_GROUP

log = logging.getLogger(__name__)

#: Metrics averaged into the ImageNet-C condition (accuracy, calibration before and after TS).
IMAGENET_C_METRICS: tuple[str, ...] = ("top1", "ece", "nll", "temperature", "ece_ts", "nll_ts")


def imagenet_c_mean_rows(metrics: pd.DataFrame) -> pd.DataFrame:
    """Tidy rows of the ImageNet-C condition (dataset :data:`IMAGENET_C_DATASET`): per model and metric of
    :data:`IMAGENET_C_METRICS`, the mean over every ImageNet-C (corruption, severity) dataset in ``metrics``.

    A model that lacks some of the ImageNet-C datasets the table holds gets no row for that metric (a mean
    over fewer corruptions would not be comparable). No rows when the table has no ImageNet-C dataset.
    """
    rows = metrics[
        metrics["dataset"].astype(str).str.match(IMAGENET_C_PATTERN.pattern)
        & metrics["factor"].isna()
        & metrics["score"].isna()
        & metrics["metric"].isin(IMAGENET_C_METRICS)
    ]
    if rows.empty:
        return tidy_frame([])
    expected = rows["dataset"].nunique()
    grouped = rows.groupby(["model", "metric"])["value"].agg(["mean", "count"]).reset_index()
    incomplete = grouped[grouped["count"] < expected]
    if not incomplete.empty:
        log.warning(
            "ImageNet-C mean: %d (model, metric) pairs lack some of the %d ImageNet-C datasets, e.g. %s: no mean for them",
            len(incomplete),
            expected,
            incomplete.head(3)[["model", "metric"]].to_dict("records"),
        )
    complete = grouped[grouped["count"] == expected]
    return tidy_frame(
        [
            tidy_row(str(m), IMAGENET_C_DATASET, str(k), v)
            for m, k, v in complete[["model", "metric", "mean"]].itertuples(index=False)
        ]
    )


def effective_robustness_rows(metrics: pd.DataFrame, reference_models: Sequence[str]) -> pd.DataFrame:
    """Tidy ``effective_robustness`` rows (dataset ``imagenet_x``, per factor) for every model.

    The fit uses ``reference_models`` (normally the registry's "standard" group) that have ImageNet-X
    rows; with fewer than 2 of them no rows are returned (a warning is logged).
    """
    subset = metrics[metrics["dataset"] == IMAGENET_X_DATASET]
    factor_acc = subset[subset["metric"] == "factor_accuracy"].pivot_table(
        index="model", columns="factor", values="value", aggfunc="first"
    )
    overall = subset[(subset["metric"] == "top1") & subset["factor"].isna()].set_index("model")["value"]
    if factor_acc.empty or overall.empty:
        log.warning("no ImageNet-X rows in the metrics table: no effective_robustness rows")
        return tidy_frame([])
    factor_acc = factor_acc.join(overall.rename(ALL_ANNOTATED), how="inner")
    factor_acc.columns = [str(c) for c in factor_acc.columns]
    usable = [m for m in reference_models if m in factor_acc.index]
    if len(usable) < 2:
        log.warning(
            "effective robustness needs at least 2 reference ('standard') models with ImageNet-X rows, found %d (%s): "
            "no effective_robustness rows",
            len(usable),
            usable,
        )
        return tidy_frame([])
    robustness = effective_robustness(factor_acc, usable)
    rows = [
        tidy_row(str(model), IMAGENET_X_DATASET, "effective_robustness", value, factor=str(factor))
        for model, per_factor in robustness.iterrows()
        for factor, value in per_factor.items()
        if np.isfinite(value)
    ]
    return tidy_frame(rows)


def aggregate_metrics(
    tables: Sequence[pd.DataFrame],
    registry: pd.DataFrame,
    reference_group: str = REFERENCE_GROUP,
) -> pd.DataFrame:
    """All per-model tables in one tidy frame, plus the ``effective_robustness`` rows and the ImageNet-C condition
    (:func:`imagenet_c_mean_rows`).

    ``registry``: the model registry table (``model_id``, ``group``, optional ``study``); the reference models of the
    effective-robustness fit are the paper's models (:func:`~clip_robustness.models.registry.paper_rows`) whose
    ``group`` is ``reference_group``; every model gets rows against that fit. Raises
    :class:`MetricsInputError` when a model is missing from the registry or appears in two tables.
    """
    if not tables:
        raise MetricsInputError("aggregate_metrics: no per-model metric tables")
    combined = pd.concat([tidy_frame(t.to_dict("records")) for t in tables], ignore_index=True)
    per_model = combined.groupby("model")["dataset"].size()
    known = set(registry["model_id"].astype(str))
    unknown = sorted(set(per_model.index) - known)
    if unknown:
        raise MetricsInputError(f"metrics tables for model(s) {unknown[:10]} that the model registry does not list")
    key = ["model", "dataset", "metric", "factor", "score"]
    duplicated = combined[combined.duplicated(key, keep=False)]
    if not duplicated.empty:
        raise MetricsInputError(
            f"duplicate metric rows, e.g. {duplicated.head(3).to_dict('records')}: a model appears in two tables"
        )
    paper = paper_rows(registry)  # a user's own models are measured against the paper's fit, never part of it
    reference = paper.loc[paper["group"].astype(str) == reference_group, "model_id"].astype(str).tolist()
    extra = [
        frame
        for frame in (effective_robustness_rows(combined, reference), imagenet_c_mean_rows(combined))
        if len(frame)
    ]
    return pd.concat([combined, *extra], ignore_index=True) if extra else combined


@dataclass(frozen=True)
class AggregateResult:
    """What the aggregate rule writes: the tidy table, the OOD correlations and ``settings.json``."""

    metrics: pd.DataFrame
    correlations: pd.DataFrame
    settings: dict[str, Any]


def aggregate_from_files(
    table_paths: Sequence[str | os.PathLike],
    registry: pd.DataFrame,
    settings: MetricSettings,
    in_distribution: str,
    reference_group: str = REFERENCE_GROUP,
    n_imagenet_x_annotated: int | None = None,
) -> AggregateResult:
    """Read every per-model table, check they share ``settings``, and aggregate them.

    A per-model table computed under other settings (its parquet metadata) raises
    :class:`MetricsInputError` naming the file: rerun its ``compute_model_metrics`` job.
    """
    from clip_robustness.metrics.correlation import accuracy_auroc_correlations

    tables = []
    expected = settings.to_dict()
    for path in table_paths:
        table, metadata = read_metrics_table(path)
        recorded = metadata.get("settings")
        if recorded is not None and recorded != expected:
            changed = sorted(k for k in set(recorded) | set(expected) if recorded.get(k) != expected.get(k))
            raise MetricsInputError(
                f"{path}: computed with other metric settings ({changed}); rerun snakemake so it is recomputed"
            )
        tables.append(table)
    metrics = aggregate_metrics(tables, registry, reference_group)
    correlations = accuracy_auroc_correlations(metrics, registry, in_distribution)
    record = settings_record(settings, in_distribution, n_imagenet_x_annotated)
    record["reference_group"] = reference_group
    return AggregateResult(metrics=metrics, correlations=correlations, settings=record)
