"""Calibration figures (docs/methods.md, "Figures": calibration).

ECE is in percent (15 equal-width confidence bins), NLL in nats; ``*_ts`` metrics are measured after
dividing the logits by the temperature fitted on the ImageNet val calibration half. x axes: top-1
accuracy (fraction) on the same dataset, which temperature scaling does not change.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from matplotlib.figure import Figure

from clip_robustness.figures.data import ID_TEST_HALF, IMAGENET_VAL, paper_points, points, select
from clip_robustness.figures.panels import (
    accuracy_axis,
    empty_panel,
    figure_legend,
    group_and_source_handles,
    linear_trend,
    new_figure,
    scatter_models,
)
from clip_robustness.figures.style import Style
from clip_robustness.names import (
    ID_TEST_SUFFIX,
    IMAGENET_C_DATASET,
    IMAGENET_C_PATTERN,
    IMAGENET_C_SEVERITY_PATTERN,
    imagenet_c_severity,
)

#: The paper's Figure 4 columns after the ID test half: ImageNet-V2-A, ImageNet-R, ImageNet-A.
FIGURE4_SHIFTS: tuple[str, ...] = ("imagenet_v2_threshold07", "imagenet_r", "imagenet_a")
ROW_LABELS: dict[str, str] = {
    "ece": "ECE (%)",
    "ece_ts": "ECE after TS (%)",
    "nll": "NLL (nats)",
    "nll_ts": "NLL after TS (nats)",
}


def plot_calibration(
    metrics: pd.DataFrame,
    registry: pd.DataFrame,
    style: Style,
    *,
    id_test: str = ID_TEST_HALF,
    datasets: Sequence[str] | None = None,
) -> Figure:
    """The paper's Figure 4: ECE and NLL, before and after temperature scaling, vs accuracy; one column per dataset.

    ``datasets``: the columns (default: the ID test half ``id_test``, then :data:`FIGURE4_SHIFTS`). Colour = model
    group; CLIP models carry their training source's marker. A dataset without rows gets empty panels with a note.
    """
    datasets = [id_test, *FIGURE4_SHIFTS] if datasets is None else list(datasets)
    metric_names = ("ece", "ece_ts", "nll", "nll_ts")
    fig, axes = new_figure(len(metric_names) * len(datasets), ncols=len(datasets), panel_size=(1.7, 1.35))
    plotted = []
    for row, metric in enumerate(metric_names):
        for col, dataset in enumerate(datasets):
            ax = axes[row * len(datasets) + col]
            pts = points(registry, select(metrics, "top1", dataset=dataset), select(metrics, metric, dataset=dataset))
            _panel(ax, pts, style, title=style.dataset_title(dataset), note=f"no {metric}/top1 rows\nfor {dataset}")
            plotted.append(pts)
            if col == 0:
                ax.set_ylabel(ROW_LABELS[metric])
            if row == len(metric_names) - 1:
                ax.set_xlabel("Accuracy")
    _legend(fig, plotted, style)
    in_distribution = style.dataset_title(id_test.removesuffix(ID_TEST_SUFFIX))
    fig.suptitle(
        f"Calibration before and after temperature scaling (T fitted on the {in_distribution} calibration half)"
    )
    return fig


def condition_values(metrics: pd.DataFrame, metric: str, condition: str) -> pd.Series:
    """Per-model values of ``metric`` on a test condition.

    A condition is a dataset id (``imagenet_c``: the metric stage's mean over every corruption and severity),
    or ``imagenet_c_severity_{s}``: the mean over every ImageNet-C corruption at severity ``s`` present in the
    table (means of accuracies, ECEs, NLLs).
    """
    match = IMAGENET_C_SEVERITY_PATTERN.fullmatch(condition)
    if match is None:
        return select(metrics, metric, dataset=condition)
    rows = metrics[(metrics["metric"] == metric) & metrics["factor"].isna() & metrics["score"].isna()]
    severity = rows["dataset"].str.extract(IMAGENET_C_PATTERN)["severity"]
    rows = rows[severity == match.group(1)]
    return rows.groupby("model")["value"].mean().astype(float)


def shift_conditions(
    metrics: pd.DataFrame, test_conditions: Sequence[str] | None = None, *, id_test: str = ID_TEST_HALF
) -> list[str]:
    """Panels of the calibration-under-shift figure: the ID test half ``id_test``, then each test condition.

    ``test_conditions``: dataset ids (config ``datasets.test_conditions`` plus the ImageNet-C ids);
    default: every dataset with ``ece_ts`` rows except ImageNet val itself. ImageNet-C ids become the one
    ``imagenet_c`` condition (mean over corruptions and severities, the value the findings use), followed by
    one ``imagenet_c_severity_{s}`` panel per severity.
    """
    if test_conditions is None:
        present = metrics.loc[metrics["metric"] == "ece_ts", "dataset"].dropna().unique()
        test_conditions = sorted(d for d in present if d not in (IMAGENET_VAL, id_test, IMAGENET_C_DATASET))
    plain = [d for d in test_conditions if not IMAGENET_C_PATTERN.match(d) and d not in (id_test, IMAGENET_C_DATASET)]
    severities = sorted(
        {IMAGENET_C_PATTERN.match(d).group("severity") for d in test_conditions if IMAGENET_C_PATTERN.match(d)}
    )
    imagenet_c = [IMAGENET_C_DATASET] if severities else []
    return [id_test, *plain, *imagenet_c, *(imagenet_c_severity(s) for s in severities)]


def condition_title(condition: str, style: Style) -> str:
    """Panel title of a condition id: the dataset's title (the ImageNet-C family's for the mean conditions)."""
    match = IMAGENET_C_SEVERITY_PATTERN.fullmatch(condition)
    if condition == IMAGENET_C_DATASET:
        return f"{style.dataset_title(IMAGENET_C_DATASET)} (mean, all)"
    return (
        f"{style.dataset_title(IMAGENET_C_DATASET)} s{match.group(1)} (mean)"
        if match
        else style.dataset_title(condition)
    )


def plot_calibration_shift(
    metrics: pd.DataFrame,
    registry: pd.DataFrame,
    style: Style,
    *,
    test_conditions: Sequence[str] | None = None,
    id_test: str = ID_TEST_HALF,
) -> Figure:
    """ECE and NLL after ImageNet temperature scaling vs accuracy under every test condition (one column each).

    ImageNet-C is shown as one condition (mean over corruptions and severities) and one panel per severity,
    averaged over its corruptions. Lines: least-squares
    fit per model group of the paper's models (groups with >= 2 models), to show whether CLIP lies on its own trend.
    """
    conditions = shift_conditions(metrics, test_conditions, id_test=id_test)
    metric_names = ("ece_ts", "nll_ts")
    ncols = min(7, len(conditions))
    blocks = -(-len(conditions) // ncols)
    fig, axes = new_figure(len(metric_names) * blocks * ncols, ncols=ncols, panel_size=(1.45, 1.3))
    plotted = []
    for m, metric in enumerate(metric_names):
        for i in range(blocks * ncols):
            ax = axes[(m * blocks + i // ncols) * ncols + i % ncols]
            if i >= len(conditions):
                ax.remove()
                continue
            condition = conditions[i]
            pts = points(
                registry, condition_values(metrics, "top1", condition), condition_values(metrics, metric, condition)
            )
            _panel(
                ax,
                pts,
                style,
                title=condition_title(condition, style),
                note=f"no {metric}/top1 rows",
                group_trends=True,
            )
            plotted.append(pts)
            if i % ncols == 0:
                ax.set_ylabel(ROW_LABELS[metric])
    _legend(fig, plotted, style)
    in_distribution = style.dataset_title(id_test.removesuffix(ID_TEST_SUFFIX))
    fig.suptitle(f"Calibration under distribution shift after temperature scaling on {in_distribution} (x: accuracy)")
    return fig


def _panel(ax, pts: pd.DataFrame, style: Style, *, title: str, note: str, group_trends: bool = False) -> None:
    if pts.empty:
        empty_panel(ax, title, note)
        return
    scatter_models(ax, pts, style, size=16, alpha=0.8)
    if group_trends:
        for group, members in paper_points(pts).groupby("group", sort=True):
            linear_trend(
                ax,
                members["x"].to_numpy(),
                members["y"].to_numpy(),
                color=style.color(group),
                logit_x=style.logit_scaled,
            )
    accuracy_axis(ax, style, axis="x")
    ax.set_title(title)


def _legend(fig: Figure, plotted: list[pd.DataFrame], style: Style) -> None:
    frames = [p for p in plotted if not p.empty]
    figure_legend(
        fig,
        group_and_source_handles(
            pd.concat(frames) if frames else pd.DataFrame(columns=["group", "training_source"]), style
        ),
    )
