"""Out-of-distribution detection vs ImageNet accuracy (docs/methods.md, "Figures": OOD detection).

One column per OOD set, two rows: AUROC (ImageNet val positive; 0.5 = chance, 1 = perfect) and
FPR@95TPR (fraction of OOD images scored at or above the threshold keeping 95% of ImageNet val
images; lower is better), both against top-1 accuracy on the whole ImageNet val (fraction).
One least-squares trend line per trend set of the paper's models (own models are drawn, never fitted): each
training source of the zero-shot CLIP models, each
(pretraining source, fine-tuning route) of the CLIP-FT models, and each other model group; the legend of
each panel gives Pearson's r of accuracy and the OOD metric.

Scores: ``msp`` for every model; ``mcm`` (MSP of the cosine similarities / logit scale) exists only for
zero-shot CLIP, so the MCM figure scores zero-shot CLIP by MCM and every other model by MSP (the same
values as the MSP figure).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import cycle

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import PercentFormatter

from clip_robustness.figures.data import IMAGENET_VAL, paper_points, points, select
from clip_robustness.figures.panels import (
    accuracy_axis,
    empty_panel,
    figure_legend,
    group_and_source_handles,
    linear_trend,
    new_figure,
    scatter_models,
)
from clip_robustness.figures.style import Style, group_label
from clip_robustness.names import FINE_TUNED_GROUP, ZERO_SHOT_GROUP

#: OOD sets of the paper in its order; sets found only in the table are appended, sorted.
OOD_ORDER: tuple[str, ...] = ("inaturalist", "sun", "places", "textures", "imagenet_o")
OOD_METRICS: dict[str, str] = {"auroc": "AUROC (ID positive)", "fpr95": "FPR@95TPR (ID positive)"}
LINESTYLES: tuple = ("-", "--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)))


def trend_sets(pts: pd.DataFrame) -> pd.Series:
    """Trend-set name of each row of ``pts``: ``"CLIP: <source>"`` for zero-shot CLIP, ``"CLIP-FT: <source> / <route>"``
    for CLIP-FT (split by pretraining source and fine-tuning route), the group's legend name otherwise."""
    routes = pts["finetune_route"] if "finetune_route" in pts.columns else pd.Series("", index=pts.index)
    names = [
        f"CLIP: {s}"
        if g == ZERO_SHOT_GROUP
        else f"{group_label(g)}: {s} / {r}"
        if g == FINE_TUNED_GROUP
        else group_label(g)
        for g, s, r in zip(pts["group"], pts["training_source"], routes)
    ]
    return pd.Series(names, index=pts.index)


def score_values(metrics: pd.DataFrame, metric: str, dataset: str, score: str) -> pd.Series:
    """Per-model ``metric`` (``auroc``/``fpr95``) of ``dataset`` under OOD ``score``; with ``mcm``, models without
    MCM rows (everything but zero-shot CLIP) keep their MSP value."""
    values = select(metrics, metric, dataset=dataset, score=score)
    if score != "mcm":
        return values
    msp = select(metrics, metric, dataset=dataset, score="msp")
    return pd.concat([values, msp[~msp.index.isin(values.index)]])


SCORE_TITLES: dict[str, str] = {
    "msp": "MSP score",
    "mcm": "MCM score for zero-shot CLIP, MSP for the other models",
    "max_logit": "max-logit score",
}


def ood_sets_in(metrics: pd.DataFrame) -> list[str]:
    """OOD sets with AUROC rows in the table, paper's sets first."""
    present = set(metrics.loc[metrics["metric"] == "auroc", "dataset"].dropna())
    return [d for d in OOD_ORDER if d in present] + sorted(present - set(OOD_ORDER))


def plot_ood_detection(
    metrics: pd.DataFrame,
    registry: pd.DataFrame,
    style: Style,
    *,
    ood_sets: Sequence[str] | None = None,
    score: str = "msp",
    id_dataset: str = IMAGENET_VAL,
) -> Figure:
    """AUROC and FPR@95 of OOD ``score`` (``msp``, ``mcm`` or ``max_logit``) vs ImageNet accuracy, one column per OOD set.

    ``ood_sets``: the columns (default: every OOD set of the table); a set without rows gets an empty panel.
    ``id_dataset``: the in-distribution set whose whole-set top-1 is the x axis.
    """
    sets = list(ood_sets) if ood_sets is not None else ood_sets_in(metrics)
    if not sets:
        sets = list(OOD_ORDER)
    accuracy = select(metrics, "top1", dataset=id_dataset)
    fig, axes = new_figure(2 * len(sets), ncols=len(sets), panel_size=(1.9, 1.8))
    plotted = []
    for row, (metric, label) in enumerate(OOD_METRICS.items()):
        for col, dataset in enumerate(sets):
            ax = axes[row * len(sets) + col]
            title = style.dataset_title(dataset)
            pts = points(registry, accuracy, score_values(metrics, metric, dataset, score))
            if pts.empty:
                empty_panel(ax, title, f"no {metric} ({score}) rows\nor no {id_dataset} top-1 rows")
                continue
            scatter_models(ax, pts, style, size=14, alpha=0.7)
            _trend_lines(ax, paper_points(pts), style)
            accuracy_axis(ax, style, axis="x")
            ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))  # a rate, never logit-scaled
            ax.set_title(title)
            plotted.append(pts)
            if col == 0:
                ax.set_ylabel(label)
            if row == 1:
                ax.set_xlabel(f"{style.dataset_title(id_dataset)} accuracy")
    handles = group_and_source_handles(
        pd.concat(plotted) if plotted else pd.DataFrame(columns=["group", "training_source"]), style
    )
    figure_legend(fig, handles)
    fig.suptitle(f"OOD detection ({SCORE_TITLES.get(score, score)}) vs {style.dataset_title(id_dataset)} accuracy")
    return fig


def _trend_lines(ax, pts: pd.DataFrame, style: Style) -> None:
    """One line per trend set with >= 2 points; the panel legend names each set with its Pearson r."""
    sets = trend_sets(pts)
    styles_per_group: dict[str, cycle] = {}
    handles = []
    for name in sorted(sets.unique()):
        members = pts[sets == name]
        group = members["group"].iloc[0]
        linestyle = next(styles_per_group.setdefault(group, cycle(LINESTYLES)))
        color = style.point_color(
            group, members["finetune_route"].iloc[0] if "finetune_route" in members.columns else None
        )
        r = linear_trend(
            ax,
            members["x"].to_numpy(),
            members["y"].to_numpy(),
            color=color,
            linestyle=linestyle,
            logit_x=style.logit_scaled,
        )
        if len(members) < 2:
            continue
        marker = style.marker(group, members["training_source"].iloc[0])
        text = f"{name}: r={r:.2f}" if r is not None else f"{name} (n={len(members)})"
        handles.append(Line2D([], [], color=color, linestyle=linestyle, marker=marker, markersize=3, label=text))
    if handles:
        ax.legend(
            handles=handles,
            fontsize=4.2,
            loc="best",
            frameon=True,
            framealpha=0.7,
            handlelength=2.2,
            borderpad=0.3,
            labelspacing=0.2,
        )
