"""Visual-factor robustness on ImageNet-X (docs/methods.md, "Figures": factor robustness): one panel per factor.

x axis: each model's accuracy on the whole filtered ImageNet-X annotated set (fraction, see
:func:`clip_robustness.figures.data.imagenet_x_accuracy`); y axis: its accuracy on the images whose
factor is 1 (``factor_accuracy``), or its effective robustness on that factor (``effective_robustness``:
factor accuracy minus the reference group's logit-space linear fit, 0 = on the reference models' trend). The
reference group is ``reference_group`` (default :data:`clip_robustness.names.REFERENCE_GROUP`, the standard models).
"""

from __future__ import annotations

from collections.abc import Collection

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import PercentFormatter

from clip_robustness.figures.data import (
    FACTORS,
    factor_names,
    imagenet_x_accuracy,
    paper_points,
    points,
    select,
    shown_in_groups,
)
from clip_robustness.figures.panels import (
    accuracy_axis,
    draw_logit_trend,
    empty_panel,
    figure_legend,
    group_and_source_handles,
    new_figure,
    scatter_models,
)
from clip_robustness.figures.style import OTHER_COLOR, Style
from clip_robustness.names import FINE_TUNED_GROUP, REFERENCE_GROUP, ZERO_SHOT_GROUP

Y_LABELS = {
    "factor_accuracy": "Accuracy on factor",
    "effective_robustness": "Eff. robustness",
}


def factor_title(factor: str) -> str:
    """Panel title of a factor id: ``"partial_view"`` -> ``"Partial view"``."""
    return factor.replace("_", " ").capitalize()


def _factor_figure(
    metrics: pd.DataFrame,
    registry: pd.DataFrame,
    style: Style,
    *,
    y_metric: str,
    groups: Collection[str] | None,
    suptitle: str,
    reference_group: str,
) -> Figure:
    factors = list(FACTORS) + [f for f in factor_names(metrics) if f not in FACTORS]
    x_all = imagenet_x_accuracy(metrics)
    fig, axes = new_figure(len(factors), ncols=5, sharey=False)
    plotted = []
    trend_drawn = False
    for ax, factor in zip(axes, factors):
        pts = points(registry, x_all, select(metrics, y_metric, factor=factor)) if len(x_all) else pd.DataFrame()
        if pts.empty:
            empty_panel(ax, factor_title(factor), f"no {y_metric} rows\nfor this factor")
            continue
        paper = paper_points(pts)
        reference = paper[paper["group"] == reference_group]
        shown = shown_in_groups(pts, groups)
        if y_metric == "factor_accuracy":
            lo, hi = pts[["x", "y"]].min().min(), pts[["x", "y"]].max().max()
            ax.plot([lo, hi], [lo, hi], color=OTHER_COLOR, linestyle=":", linewidth=0.6, zorder=0)
            trend_drawn |= draw_logit_trend(ax, reference["x"].to_numpy(), reference["y"].to_numpy(), color="black")
            accuracy_axis(ax, style, axis="y")
        else:
            ax.axhline(0.0, color="black", linestyle="--", linewidth=0.8, zorder=3)
            ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
            trend_drawn = True
        if shown.empty:
            empty_panel(ax, factor_title(factor), "no model of the\ngroups shown")
            continue
        scatter_models(ax, shown, style)
        accuracy_axis(ax, style, axis="x")
        ax.set_title(factor_title(factor))
        plotted.append(shown)
    for ax in axes[-5:]:
        ax.set_xlabel("ImageNet-X accuracy")
    for ax in axes[::5]:
        ax.set_ylabel(Y_LABELS.get(y_metric, y_metric))
    handles = group_and_source_handles(
        pd.concat(plotted) if plotted else pd.DataFrame(columns=["group", "training_source"]), style
    )
    if trend_drawn:
        whose = f"{reference_group.replace('_', ' ').capitalize()} models' trend"
        label = f"{whose} (logit fit)" if y_metric == "factor_accuracy" else f"{whose} (= 0)"
        handles.append(Line2D([], [], color="black", linestyle="--", label=label))
    figure_legend(fig, handles)
    fig.suptitle(suptitle)
    return fig


def plot_factor_robustness(
    metrics: pd.DataFrame,
    registry: pd.DataFrame,
    style: Style,
    *,
    reference_group: str = REFERENCE_GROUP,
) -> Figure:
    """Factor accuracy vs ImageNet-X accuracy, one panel per factor, every model; dashed: the reference group's trend."""
    return _factor_figure(
        metrics,
        registry,
        style,
        y_metric="factor_accuracy",
        groups=None,
        suptitle="ImageNet-X: accuracy on each factor vs overall accuracy",
        reference_group=reference_group,
    )


def plot_factor_effective_robustness(
    metrics: pd.DataFrame,
    registry: pd.DataFrame,
    style: Style,
    *,
    reference_group: str = REFERENCE_GROUP,
) -> Figure:
    """Effective robustness per factor vs ImageNet-X accuracy, one panel per factor, every model."""
    return _factor_figure(
        metrics,
        registry,
        style,
        y_metric="effective_robustness",
        groups=None,
        suptitle="ImageNet-X: effective robustness on each factor",
        reference_group=reference_group,
    )


def plot_factor_robustness_by_source(
    metrics: pd.DataFrame,
    registry: pd.DataFrame,
    style: Style,
    *,
    reference_group: str = REFERENCE_GROUP,
) -> Figure:
    """Effective robustness per factor of the zero-shot CLIP models only; marker = training source."""
    return _factor_figure(
        metrics,
        registry,
        style,
        y_metric="effective_robustness",
        groups={ZERO_SHOT_GROUP},
        suptitle="ImageNet-X: zero-shot CLIP by training source",
        reference_group=reference_group,
    )


def plot_factor_robustness_by_finetuning(
    metrics: pd.DataFrame,
    registry: pd.DataFrame,
    style: Style,
    *,
    reference_group: str = REFERENCE_GROUP,
) -> Figure:
    """Effective robustness per factor of zero-shot CLIP vs CLIP fine-tuned on ImageNet (CLIP-FT), CLIP-FT split by
    fine-tuning route (colour) and pretraining source (marker)."""
    return _factor_figure(
        metrics,
        registry,
        style,
        y_metric="effective_robustness",
        groups={ZERO_SHOT_GROUP, FINE_TUNED_GROUP},
        suptitle="ImageNet-X: zero-shot CLIP vs CLIP-FT (colour: fine-tuning route; marker: pretraining source)",
        reference_group=reference_group,
    )
