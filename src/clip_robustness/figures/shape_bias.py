"""Shape bias against ImageNet accuracy (docs/methods.md, "Shape bias"; the journal extension's shape-bias figure).

One panel per cue-conflict dataset in the metrics table (rows ``shape_bias``): x = top-1 accuracy on ImageNet val,
y = shape bias (shape decisions / (shape + texture decisions), images whose cues agree left out). Colour = model
group, marker = CLIP training source; a dashed line per group at its mean shape bias; the dotted line at 0.5 is
"as much shape as texture".
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from clip_robustness.figures.data import IMAGENET_VAL, paper_points, points, select
from clip_robustness.figures.panels import (
    accuracy_axis,
    empty_panel,
    figure_legend,
    group_and_source_handles,
    new_figure,
    scatter_models,
)
from clip_robustness.figures.style import Style

SHAPE_BIAS_METRIC = "shape_bias"


def plot_shape_bias(
    metrics: pd.DataFrame, registry: pd.DataFrame, style: Style, *, id_dataset: str = IMAGENET_VAL
) -> Figure:
    """Shape bias vs ImageNet top-1, one panel per cue-conflict dataset (an empty panel with a note when none)."""
    datasets = sorted(metrics.loc[metrics["metric"] == SHAPE_BIAS_METRIC, "dataset"].dropna().astype(str).unique())
    fig, axes = new_figure(max(1, len(datasets)), ncols=max(1, len(datasets)), panel_size=(2.6, 2.2))
    plotted = []
    if not datasets:
        empty_panel(axes[0], "Shape bias", "no shape_bias rows\n(config datasets.cue_conflict is empty)")
    x = select(metrics, "top1", dataset=id_dataset)
    for ax, dataset in zip(axes, datasets):
        pts = points(registry, x, select(metrics, SHAPE_BIAS_METRIC, dataset=dataset))
        pts = pts[np.isfinite(pts["y"].to_numpy(dtype=float))]
        if pts.empty:
            empty_panel(ax, style.dataset_title(dataset), f"no shape_bias/top1 rows\nfor {dataset}")
            continue
        scatter_models(ax, pts, style, size=18, alpha=0.85)
        for group, members in paper_points(pts).groupby("group", sort=True):
            ax.axhline(float(members["y"].mean()), color=style.color(group), linestyle="--", linewidth=0.8)
        ax.axhline(0.5, color="0.5", linestyle=":", linewidth=0.8)
        ax.set_ylim(0.0, 1.0)
        accuracy_axis(ax, style, axis="x", label=f"Top-1 accuracy ({style.dataset_title(id_dataset)})")
        ax.set_ylabel("Shape bias")
        ax.set_title(style.dataset_title(dataset))
        plotted.append(pts)
    frames = [p for p in plotted if not p.empty]
    figure_legend(
        fig,
        group_and_source_handles(
            pd.concat(frames) if frames else pd.DataFrame(columns=["group", "training_source"]), style
        ),
    )
    fig.suptitle("Shape bias on cue-conflict stimuli (16-category decision; dashed: group means)")
    return fig
