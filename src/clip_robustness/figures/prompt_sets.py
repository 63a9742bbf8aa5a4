"""The prompt-set ablation's figure (docs/methods.md, "Embeddings cache and prompt-set ablation"): each property
against the prompt set, per model group; thin lines are models, thick lines with markers the group means.

Drawn from the ablation's table (``results/ablation/prompt_set_metrics.parquet``: the tidy metric columns plus
``prompt_set``) and the model registry, with the colours of every other figure (:class:`~clip_robustness.figures.style.Style`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from clip_robustness.figures.panels import empty_panel, new_figure, save
from clip_robustness.figures.style import Style, group_label, paper_context
from clip_robustness.metrics.prompt_ablation import PROMPT_SET_COLUMN, PROPERTIES, prompt_set_properties

log = logging.getLogger(__name__)

#: Figure stem: ``results/figures/prompt_sets.png|pdf``.
PROMPT_SETS_FIGURE = "prompt_sets"
#: Report category of the figure.
CATEGORY_PROMPT_SETS = "Prompt-set ablation (zero-shot CLIP)"
#: y-axis label of each property.
PROPERTY_LABELS: dict[str, str] = {
    "id_accuracy": "ID top-1",
    "shift_accuracy": "mean top-1 under shift",
    "effective_robustness": "mean effective robustness\n(ImageNet-X factors)",
    "ece": "ECE, ID test half (%)",
    "ood_auroc": "mean OOD AUROC (MCM)",
}


def plot_prompt_sets(
    table: pd.DataFrame,
    registry: pd.DataFrame,
    style: Style,
    *,
    id_dataset: str,
    test_conditions: Sequence[str],
    ood_sets: Sequence[str],
    prompt_sets: Sequence[str] | None = None,
) -> Figure:
    """One panel per property of :data:`PROPERTIES` the table has: the value per prompt set (x, in ``prompt_sets``
    order, default the table's), one thin line per model and a thick line per group (its mean), coloured by group."""
    properties = prompt_set_properties(table, id_dataset, test_conditions, ood_sets)
    sets = list(prompt_sets) if prompt_sets is not None else [str(s) for s in pd.unique(table[PROMPT_SET_COLUMN])]
    shown = [p for p in PROPERTIES if p in set(properties["property"])] or list(PROPERTIES[:1])
    fig, axes = new_figure(len(shown), ncols=min(len(shown), 3), panel_size=(1.9, 1.5))
    groups = registry.set_index(registry["model_id"].astype(str))["group"].astype(str)
    x = np.arange(len(sets))
    for ax, name in zip(axes.flat, shown):
        part = properties[properties["property"] == name]
        if part.empty:
            empty_panel(ax, PROPERTY_LABELS[name], "no rows: no ablation in this table")
            continue
        wide = part.pivot_table(index="model", columns=PROMPT_SET_COLUMN, values="value", aggfunc="first")
        wide = wide.reindex(columns=sets)
        for model, values in wide.iterrows():
            ax.plot(
                x,
                values.to_numpy(dtype=float),
                color=style.color(groups.get(str(model), "unknown")),
                linewidth=0.6,
                alpha=0.35,
            )
        for group, members in wide.groupby(wide.index.map(lambda m: groups.get(str(m), "unknown"))):
            ax.plot(
                x,
                members.mean(axis=0).to_numpy(dtype=float),
                color=style.color(group),
                linewidth=1.8,
                marker="o",
                markersize=3,
                label=f"{group_label(group)} (n={len(members)})",
            )
        ax.set_xticks(x, sets, rotation=30, ha="right")
        ax.set_ylabel(PROPERTY_LABELS[name])
        ax.set_xlabel("prompt set")
        ax.legend(fontsize="x-small", frameon=False)
    for ax in list(axes.flat)[len(shown) :]:
        ax.set_visible(False)
    return fig


def render_prompt_sets(
    table: pd.DataFrame,
    registry: pd.DataFrame,
    png: str | Path,
    pdf: str | Path,
    *,
    logit_scaled: bool = False,
    **options,
) -> None:
    """Draw :func:`plot_prompt_sets` and write PNG and PDF (the figures' style and saving)."""
    from clip_robustness.figures.data import check_registry

    missing = [
        c
        for c in ("model", "dataset", "metric", "value", "factor", "score", PROMPT_SET_COLUMN)
        if c not in table.columns
    ]
    if missing:
        raise ValueError(f"prompt-set table lacks column(s) {missing}: rerun aggregate_prompt_sets")
    registry = check_registry(registry)
    style = Style.from_registry(registry, logit_scaled=logit_scaled)
    with paper_context():
        save(plot_prompt_sets(table, registry, style, **options), png, pdf)
    log.info(
        "figure %s: %d models x %d prompt sets -> %s, %s",
        PROMPT_SETS_FIGURE,
        table["model"].nunique(),
        table[PROMPT_SET_COLUMN].nunique(),
        png,
        pdf,
    )
