"""Tables of the study (docs/methods.md, "Figures": tables): the model registry as in the paper's appendix
(CSV and LaTeX) and a per-model summary of every metric (CSV)."""

from __future__ import annotations

import pandas as pd

from clip_robustness.figures.data import FigureInputError, check_metrics, check_models_known, check_registry
from clip_robustness.figures.style import GROUP_ORDER, group_label

#: Registry column -> appendix column header, in table order.
REGISTRY_HEADERS: dict[str, str] = {
    "model_id": "Model",
    "group": "Group",
    "library": "Library",
    "architecture": "Architecture",
    "pretrained": "Pretrained tag",
    "training_source": "Training data",
    "training_size": "Data size",
    "finetune_route": "Fine-tuning route",
    "resolution": "Resolution",
}

#: Metric order of the summary's columns (metrics not listed come after, sorted).
METRIC_ORDER: tuple[str, ...] = (
    "top1",
    "ece",
    "nll",
    "temperature",
    "ece_ts",
    "nll_ts",
    "auroc",
    "fpr95",
    "factor_accuracy",
    "error_ratio",
    "effective_robustness",
)


def registry_table(registry: pd.DataFrame) -> pd.DataFrame:
    """The appendix table: one row per model, columns :data:`REGISTRY_HEADERS` (those the registry has),
    groups in legend order, then by training data and model id; group ids shown by their legend names."""
    registry = check_registry(registry)
    rank = {g: i for i, g in enumerate(GROUP_ORDER)}
    ordered = registry.assign(_rank=registry["group"].map(lambda g: rank.get(g, len(rank))))
    ordered = ordered.sort_values(["_rank", "training_source", "model_id"], kind="stable", na_position="last")
    columns = [c for c in REGISTRY_HEADERS if c in registry.columns]
    table = ordered[columns].assign(group=ordered["group"].map(group_label))
    return table.rename(columns=REGISTRY_HEADERS).reset_index(drop=True)


def registry_latex(table: pd.DataFrame, *, caption: str = "Models of the study.", label: str = "tab:models") -> str:
    """``table`` (from :func:`registry_table`) as a LaTeX ``longtable`` with booktabs rules, special characters escaped."""
    styler = table.fillna("").style.hide(axis="index").format(escape="latex").format_index(escape="latex", axis=1)
    return styler.to_latex(
        environment="longtable", hrules=True, caption=caption, label=label, column_format="l" * table.shape[1]
    )


def summary_column(metric: str, dataset: object, factor: object, score: object) -> str:
    """Column name of one metric in the summary: ``metric/dataset[/factor][/score]``."""
    parts = [metric, str(dataset)]
    parts += [str(v) for v in (factor, score) if v is not None and not pd.isna(v)]
    return "/".join(parts)


def model_summary(metrics: pd.DataFrame, registry: pd.DataFrame) -> pd.DataFrame:
    """One row per registry model with metrics: ``model, group, training_source`` then one column per
    (metric, dataset[, factor][, score]) named by :func:`summary_column`, values in the units of the
    metrics table (accuracies fractions, ECE percent, NLL nats). Raises on duplicate rows, naming one."""
    metrics = check_metrics(metrics)
    registry = check_registry(registry)
    keyed = metrics.assign(
        column=[
            summary_column(*row) for row in metrics[["metric", "dataset", "factor", "score"]].itertuples(index=False)
        ]
    )
    duplicated = keyed[keyed.duplicated(["model", "column"])]
    if not duplicated.empty:
        first = duplicated.iloc[0]
        raise FigureInputError(f"metrics table: several rows for model {first['model']!r} and {first['column']!r}")
    check_models_known(metrics, registry)
    wide = keyed.pivot(index="model", columns="column", values="value")
    rank = {m: i for i, m in enumerate(METRIC_ORDER)}
    wide = wide[sorted(wide.columns, key=lambda c: (rank.get(c.split("/")[0], len(rank)), c))]
    meta = registry.set_index("model_id")[["group", "training_source"]]
    out = meta.join(wide, how="inner")
    order = registry_table(registry)["Model"].tolist()
    out = out.loc[[m for m in order if m in out.index]]
    out.index.name = "model"
    return out.reset_index()


def ood_correlations_table(correlations: pd.DataFrame, *, decimals: int = 4) -> pd.DataFrame:
    """The metric stage's OOD correlation table (Pearson/Spearman of ImageNet accuracy vs AUROC per
    grouping / group, OOD set and score) as shown in the report: same columns and rows, floats rounded
    to ``decimals``. A small study may have no rows (no group with enough models): kept as a header."""
    return correlations.round(decimals)
