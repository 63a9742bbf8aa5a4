"""Reading and selecting the inputs of the figures: the tidy metrics table and the model registry.

The tidy metrics table (docs/architecture.md, "Metrics") has one row per model x dataset x metric
[x factor | x OOD score]: columns ``model, dataset, metric, value, factor, score``. Units of ``value``:
accuracies (``top1``, ``factor_accuracy``) and ``auroc``/``fpr95`` are fractions in [0, 1]; ``ece`` and
``ece_ts`` are percent in [0, 100]; ``nll``/``nll_ts`` are nats; ``error_ratio`` is a ratio (1 = as good
as on the whole annotated set); ``effective_robustness`` is a difference of accuracies (fraction).
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import pandas as pd

from clip_robustness.metrics.imagenet_x import IMAGENET_X_FACTORS as FACTORS  # the 10 factors, in the paper's order
from clip_robustness.metrics.tidy import IMAGENET_X_DATASET as IMAGENET_X  # annotated, prototype-filtered val subset
from clip_robustness.metrics.tidy import METRIC_COLUMNS
from clip_robustness.models.registry import OWN_STUDY, PAPER_STUDY, study_of
from clip_robustness.names import METRICS_TABLE, id_test_dataset

REGISTRY_COLUMNS: tuple[str, ...] = ("model_id", "group", "training_source")

#: The whole ImageNet val set (default accuracy axis of the OOD figure) and its calibration ID test half.
IMAGENET_VAL = "imagenet_val"
ID_TEST_HALF = id_test_dataset(IMAGENET_VAL)


class FigureInputError(ValueError):
    """A metrics table or model registry that the figures cannot use; the message names file and problem."""


def read_metrics(path: str | Path) -> pd.DataFrame:
    """The tidy metrics table at ``path`` (``.parquet`` or ``.csv``), checked by :func:`check_metrics`."""
    path = Path(path)
    if not path.exists():
        raise FigureInputError(
            f"metrics table {path} does not exist: run the metric rules first (snakemake {METRICS_TABLE})"
        )
    table = pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
    return check_metrics(table, source=str(path))


def check_metrics(metrics: pd.DataFrame, *, source: str = "metrics table") -> pd.DataFrame:
    """``metrics`` with the tidy columns typed (``value`` float, the others string/NaN); raises on missing columns."""
    missing = [c for c in METRIC_COLUMNS if c not in metrics.columns]
    if missing:
        raise FigureInputError(f"{source}: missing column(s) {missing}; expected {list(METRIC_COLUMNS)}")
    out = metrics.loc[:, list(METRIC_COLUMNS)].copy()
    for column in ("model", "dataset", "metric", "factor", "score"):
        out[column] = out[column].astype("object").where(out[column].notna(), None)
    try:
        out["value"] = pd.to_numeric(out["value"]).astype(float)
    except (TypeError, ValueError) as error:
        raise FigureInputError(f"{source}: column 'value' is not numeric ({error})") from error
    return out


def check_registry(registry: pd.DataFrame, *, source: str = "model registry") -> pd.DataFrame:
    """``registry`` after checking it has the columns the figures need and unique ``model_id`` values."""
    missing = [c for c in REGISTRY_COLUMNS if c not in registry.columns]
    if missing:
        raise FigureInputError(f"{source}: missing column(s) {missing}; the figures need {list(REGISTRY_COLUMNS)}")
    duplicated = registry["model_id"][registry["model_id"].duplicated()].unique().tolist()
    if duplicated:
        raise FigureInputError(f"{source}: duplicated model_id(s) {duplicated}")
    return registry


def check_models_known(metrics: pd.DataFrame, registry: pd.DataFrame) -> None:
    """Raise naming the models of ``metrics`` that ``registry`` does not list (a stale metrics table,
    or a registry that lost rows): rerun the metric rules, or restore the registry rows."""
    unknown = sorted(set(metrics["model"].dropna()) - set(registry["model_id"]))
    if unknown:
        raise FigureInputError(
            f"metrics table has {len(unknown)} model(s) the model registry does not list: {unknown[:10]}; "
            f"rerun the metric rules (snakemake {METRICS_TABLE}) or restore the registry rows"
        )


def select(
    metrics: pd.DataFrame,
    metric: str,
    *,
    dataset: str | None = None,
    factor: str | None = None,
    score: str | None = None,
) -> pd.Series:
    """Values of one metric, indexed by model.

    ``dataset``/``score``: ``None`` means "any" for the dataset and "rows without a score" for the score.
    ``factor``: ``None`` keeps rows without a factor. Several rows for one model are an error (a table
    assembled twice), reported with the model names.
    """
    rows = metrics[metrics["metric"] == metric]
    if dataset is not None:
        rows = rows[rows["dataset"] == dataset]
    rows = rows[rows["factor"].isna()] if factor is None else rows[rows["factor"] == factor]
    rows = rows[rows["score"].isna()] if score is None else rows[rows["score"] == score]
    duplicated = rows["model"][rows["model"].duplicated()].unique().tolist()
    if duplicated:
        raise FigureInputError(
            f"metrics table: several rows for metric={metric!r} dataset={dataset!r} factor={factor!r} "
            f"score={score!r} and model(s) {duplicated[:5]}"
        )
    return rows.set_index("model")["value"].astype(float)


def points(registry: pd.DataFrame, x: pd.Series, y: pd.Series) -> pd.DataFrame:
    """One row per model with both values: columns ``model, group, training_source, finetune_route, study, x, y``
    (``finetune_route`` ``"none"`` when the registry has no such column or value; ``study`` from
    :func:`~clip_robustness.models.registry.study_of`).

    Every figure gets its points here, and this is where the studies part: the rows of the paper's models
    (:func:`paper_points`) make up the groups, legends and every trend line; a user's ``own`` models are drawn on
    top of them, highlighted and labelled with their id, and ``catalogue`` checkpoints as a faint unlabelled
    background (:func:`clip_robustness.figures.panels.scatter_models`). Catalogue rows are drawn rather than left out
    because they are measured checkpoints of the same libraries, the context the all-checkpoints switch asks for;
    unlabelled because there are hundreds, and faint because their groups are partly ``unknown``.

    Models of the metrics table that the registry does not list are an error naming them (a stale
    metrics table, or a registry that lost rows).
    """
    joined = pd.concat({"x": x, "y": y}, axis=1).dropna()
    check_models_known(pd.DataFrame({"model": joined.index}), registry)
    meta = registry.set_index("model_id")[["group", "training_source"]].copy()
    route = registry["finetune_route"].to_numpy() if "finetune_route" in registry.columns else None
    meta["finetune_route"] = "none" if route is None else pd.Series(route, index=meta.index).fillna("none").astype(str)
    meta["study"] = study_of(registry).to_numpy()
    out = joined.join(meta, how="left")
    out.index.name = "model"
    return out.reset_index()[["model", "group", "training_source", "finetune_route", "study", "x", "y"]]


def paper_points(pts: pd.DataFrame) -> pd.DataFrame:
    """The rows of :func:`points` that belong to the paper's models: the only input of group legends, group medians
    and trend fits in every figure (a frame without a ``study`` column is all the paper's)."""
    return pts[study_of(pts) == PAPER_STUDY]


def shown_in_groups(pts: pd.DataFrame, groups: Collection[str] | None) -> pd.DataFrame:
    """The rows of :func:`points` that a figure restricted to model ``groups`` (``None``: every group) draws: the
    models of those groups, and every own model (an own model is drawn in every figure, whatever its group)."""
    if groups is None:
        return pts
    return pts[pts["group"].isin(groups) | (study_of(pts) == OWN_STUDY)]


def factor_names(metrics: pd.DataFrame) -> list[str]:
    """The ImageNet-X factors present in the table, in the paper's order (unknown ones appended, sorted)."""
    present = set(metrics.loc[metrics["factor"].notna(), "factor"])
    return [f for f in FACTORS if f in present] + sorted(present - set(FACTORS))


def imagenet_x_accuracy(metrics: pd.DataFrame) -> pd.Series:
    """Accuracy (fraction) of each model on the whole filtered ImageNet-X annotated set, indexed by model.

    Taken from the ``top1`` rows of dataset ``imagenet_x``. For a model without such a row it is
    recovered from its factor rows through error_ratio = (1 - acc_factor) / (1 - acc_all), i.e.
    acc_all = 1 - (1 - acc_factor) / error_ratio (median over factors; error_ratio 0 is skipped).
    """
    direct = select(metrics, "top1", dataset=IMAGENET_X)
    acc = metrics[(metrics["metric"] == "factor_accuracy") & metrics["factor"].notna()]
    ratio = metrics[(metrics["metric"] == "error_ratio") & metrics["factor"].notna()]
    both = acc.merge(ratio, on=["model", "dataset", "factor"], suffixes=("_acc", "_ratio"))
    both = both[both["value_ratio"] > 0]
    both = both.assign(acc_all=1.0 - (1.0 - both["value_acc"]) / both["value_ratio"])
    derived = both.groupby("model")["acc_all"].median().astype(float)
    return pd.concat([direct, derived[~derived.index.isin(direct.index)]]).rename("value")
