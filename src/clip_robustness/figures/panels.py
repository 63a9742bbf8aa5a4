"""Drawing helpers shared by the figures: scatter of models, trend lines, accuracy axes, legends, saving."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullFormatter, PercentFormatter
from scipy import stats

from clip_robustness.figures.data import paper_points
from clip_robustness.figures.style import (
    CATALOGUE_COLOR,
    CATALOGUE_LABEL,
    DEFAULT_MARKER,
    OTHER_COLOR,
    OWN_COLOR,
    OWN_LABEL,
    OWN_MARKER,
    Style,
    group_label,
)
from clip_robustness.models.registry import CATALOGUE_STUDY, OWN_STUDY, PAPER_STUDY, study_of
from clip_robustness.names import CLIP_GROUPS, FINE_TUNED_GROUP, ZERO_SHOT_GROUP

#: Accuracies are clipped to [EPS, 1 - EPS] before a logit transform (0 and 1 have no logit).
EPS = 1e-4

#: Fewest points a group needs for a trend line, and for a correlation coefficient in its legend.
MIN_POINTS_TREND = 2
MIN_POINTS_R = 3


def logit(p: np.ndarray | pd.Series) -> np.ndarray:
    """log(p / (1 - p)) of accuracies (fractions), clipped to [EPS, 1 - EPS]."""
    p = np.clip(np.asarray(p, dtype=float), EPS, 1 - EPS)
    return np.log(p / (1 - p))


def expit(z: np.ndarray) -> np.ndarray:
    """Inverse of :func:`logit`."""
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=float)))


def new_figure(
    n_panels: int, *, ncols: int, panel_size: tuple[float, float] = (1.45, 1.35), sharey: bool | str = False
) -> tuple[Figure, np.ndarray]:
    """A figure with ``n_panels`` axes on a grid of ``ncols`` columns (extra grid cells removed).

    Returns the figure and a flat array of its ``n_panels`` axes. No pyplot state is touched.
    """
    ncols = max(1, min(ncols, n_panels))
    nrows = max(1, -(-n_panels // ncols))
    fig = Figure(figsize=(panel_size[0] * ncols, panel_size[1] * nrows + 0.7), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False, sharey=sharey)).ravel()
    for ax in axes[n_panels:]:
        ax.remove()
    return fig, axes[:n_panels]


def accuracy_axis(ax: Axes, style: Style, *, axis: str = "x", label: str | None = None) -> None:
    """Make ``ax``'s ``axis`` an accuracy axis: percent ticks, logit scale when ``style.logit_scaled``."""
    set_scale = ax.set_xscale if axis == "x" else ax.set_yscale
    target = ax.xaxis if axis == "x" else ax.yaxis
    if style.logit_scaled:
        set_scale("logit", nonpositive="clip")
        target.set_minor_formatter(NullFormatter())
    target.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
    if label is not None:
        (ax.set_xlabel if axis == "x" else ax.set_ylabel)(label)


def empty_panel(ax: Axes, title: str, note: str) -> None:
    """A panel with a title and a centred note saying why it holds no data."""
    ax.set_title(title)
    ax.text(0.5, 0.5, note, ha="center", va="center", transform=ax.transAxes, fontsize=6, color=OTHER_COLOR, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)


#: Drawing order (matplotlib zorder) of the catalogue background and of the own models (above the trend lines, 3,
#: and the panel legends, 5).
CATALOGUE_ZORDER = 0.5
OWN_ZORDER = 6
#: Area of an own model's ring, relative to the other points.
OWN_SIZE_FACTOR = 3.5


def scatter_models(ax: Axes, pts: pd.DataFrame, style: Style, *, size: float = 16, alpha: float = 0.85) -> None:
    """One point per model of ``pts`` (columns ``group, training_source, x, y``, optional ``finetune_route`` and
    ``study``, see :func:`clip_robustness.figures.data.points`): colour = group (CLIP-FT: its fine-tuning route),
    marker = (pre)training source of CLIP models. A user's own models are hollow rings (``OWN_COLOR``) on top,
    labelled with their id; catalogue checkpoints small faint dots below."""
    if pts.empty:
        return
    study = study_of(pts)
    background = pts[study == CATALOGUE_STUDY]
    if not background.empty:
        ax.scatter(
            background["x"],
            background["y"],
            s=size / 3,
            marker=DEFAULT_MARKER,
            color=CATALOGUE_COLOR,
            alpha=0.6,
            linewidths=0,
            zorder=CATALOGUE_ZORDER,
        )
    _scatter_paper_models(ax, pts[study == PAPER_STUDY], style, size=size, alpha=alpha)
    own = pts[study == OWN_STUDY]
    if not own.empty:
        ax.scatter(
            own["x"],
            own["y"],
            s=size * OWN_SIZE_FACTOR,
            marker=OWN_MARKER,
            facecolors="none",
            edgecolors=OWN_COLOR,
            linewidths=1.2,
            zorder=OWN_ZORDER,
            clip_on=False,
        )
        _label_own_models(ax, own)
    ax.set_xlabel("")
    ax.set_ylabel("")


def _label_own_models(ax: Axes, own: pd.DataFrame) -> None:
    """Each own model's id beside its ring, towards the inside of the panel (kept out of the layout: a long id never
    shrinks the panels)."""
    (x_lo, x_hi), (y_lo, y_hi) = ax.get_xlim(), ax.get_ylim()
    for model, x, y in zip(own["model"], own["x"], own["y"]):
        right = x_hi > x_lo and (x - x_lo) / (x_hi - x_lo) > 0.5
        top = y_hi > y_lo and (y - y_lo) / (y_hi - y_lo) > 0.5
        label = ax.annotate(
            str(model),
            (x, y),
            xytext=(-5 if right else 5, -5 if top else 5),
            textcoords="offset points",
            ha="right" if right else "left",
            va="top" if top else "bottom",
            fontsize=4.5,
            color=OWN_COLOR,
            zorder=OWN_ZORDER,
            bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.75},
        )
        label.set_in_layout(False)


def _scatter_paper_models(ax: Axes, pts: pd.DataFrame, style: Style, *, size: float, alpha: float) -> None:
    if pts.empty:
        return
    # Draw in reverse legend order so CLIP models (first in the legend) lie on top of the crowd.
    rank = {g: i for i, g in enumerate(style.groups)}
    routes = (
        pts["finetune_route"] if "finetune_route" in pts.columns else pd.Series(None, index=pts.index, dtype=object)
    )
    frame = pts.assign(
        _marker=[style.marker(g, s) for g, s in zip(pts["group"], pts["training_source"])],
        _color=[style.point_color(g, r) for g, r in zip(pts["group"], routes)],
        _rank=[-rank.get(g, len(rank)) for g in pts["group"]],
    ).sort_values("_rank", kind="stable")
    markers = {m: m for m in frame["_marker"].unique()}
    palette = {c: c for c in frame["_color"].unique()}
    sns.scatterplot(
        data=frame,
        x="x",
        y="y",
        hue="_color",
        palette=palette,
        style="_marker",
        markers=markers,
        s=size,
        alpha=alpha,
        linewidth=0.3,
        edgecolor="white",
        legend=False,
        ax=ax,
    )


def logit_trend(x: np.ndarray, y: np.ndarray) -> tuple[float, float] | None:
    """Slope and intercept of logit(y) = a * logit(x) + b by least squares; ``None`` below MIN_POINTS_TREND points
    or when all x are equal."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < MIN_POINTS_TREND or np.ptp(logit(x)) == 0:
        return None
    slope, intercept = np.polyfit(logit(x), logit(y), 1)
    return float(slope), float(intercept)


def draw_logit_trend(
    ax: Axes, x: np.ndarray, y: np.ndarray, *, color: str = OTHER_COLOR, label: str | None = None
) -> bool:
    """Draw the logit-space linear fit of accuracies ``y`` on ``x`` over the range of ``x``; False when too few points."""
    fit = logit_trend(x, y)
    if fit is None:
        return False
    grid = expit(np.linspace(logit(np.min(x)), logit(np.max(x)), 100))
    ax.plot(
        grid, expit(fit[0] * logit(grid) + fit[1]), color=color, linestyle="--", linewidth=1.0, label=label, zorder=3
    )
    return True


def linear_trend(
    ax: Axes, x: np.ndarray, y: np.ndarray, *, color: str, linestyle: str = "-", logit_x: bool = False
) -> float | None:
    """Draw the least-squares line of ``y`` on ``x`` (on logit(x) when ``logit_x``) and return Pearson's r of x and y.

    Nothing is drawn below MIN_POINTS_TREND points or for constant x; r is ``None`` below MIN_POINTS_R points.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    u = logit(x) if logit_x else x
    if len(x) < MIN_POINTS_TREND or np.ptp(u) == 0:
        return None
    slope, intercept = np.polyfit(u, y, 1)
    grid = np.linspace(u.min(), u.max(), 50)
    ax.plot(
        expit(grid) if logit_x else grid,
        slope * grid + intercept,
        color=color,
        linestyle=linestyle,
        linewidth=0.9,
        zorder=3,
    )
    if len(x) < MIN_POINTS_R or np.ptp(y) == 0:
        return None
    return float(stats.pearsonr(x, y).statistic)


def group_and_source_handles(pts: pd.DataFrame, style: Style) -> list[Line2D]:
    """Legend handles naming every group (colour; CLIP-FT once per fine-tuning route when it has several) and CLIP
    training source (marker) of the paper's models in ``pts``, then the own models' ring and the catalogue's dots
    when ``pts`` has any."""
    studies = set(study_of(pts))
    pts = paper_points(pts)
    handles = []
    present_groups = set(pts["group"])
    ft_routes = (
        sorted(set(pts.loc[pts["group"] == FINE_TUNED_GROUP, "finetune_route"].dropna().astype(str)))
        if "finetune_route" in pts.columns
        else []
    )
    for group in style.groups:
        if group == FINE_TUNED_GROUP and len(ft_routes) > 1:
            for route in ft_routes:
                handles.append(
                    Line2D(
                        [],
                        [],
                        linestyle="",
                        marker=DEFAULT_MARKER,
                        color=style.point_color(group, route),
                        label=f"{group_label(group)} ({route})",
                    )
                )
        elif group in present_groups:
            handles.append(
                Line2D([], [], linestyle="", marker=DEFAULT_MARKER, color=style.color(group), label=group_label(group))
            )
    clip_sources = set(pts.loc[pts["group"].isin(CLIP_GROUPS), "training_source"].dropna().astype(str))
    for source, marker in style.source_markers.items():
        if source in clip_sources:
            handles.append(
                Line2D([], [], linestyle="", marker=marker, color=style.color(ZERO_SHOT_GROUP), label=f"CLIP: {source}")
            )
    if OWN_STUDY in studies:
        handles.append(
            Line2D(
                [],
                [],
                linestyle="",
                marker=OWN_MARKER,
                markerfacecolor="none",
                markeredgecolor=OWN_COLOR,
                markersize=6,
                label=OWN_LABEL,
            )
        )
    if CATALOGUE_STUDY in studies:
        handles.append(
            Line2D(
                [], [], linestyle="", marker=DEFAULT_MARKER, color=CATALOGUE_COLOR, markersize=3, label=CATALOGUE_LABEL
            )
        )
    return handles


def figure_legend(fig: Figure, handles: Sequence[Line2D], *, ncols: int = 6) -> None:
    """Put ``handles`` in one legend below the panels of ``fig``."""
    if handles:
        fig.legend(handles=list(handles), loc="outside lower center", ncols=min(ncols, len(handles)), frameon=False)


def save(fig: Figure, png: str | Path, pdf: str | Path) -> None:
    """Write ``fig`` as PNG and PDF (parent folders created)."""
    for path in (png, pdf):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, bbox_inches="tight", pad_inches=0.05)
