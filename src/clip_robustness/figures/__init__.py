"""Figures and tables of the study, drawn from the tidy metrics table and the model registry (SPEC section 5).

Each figure is one function ``plot_<name>(metrics, registry, style, **options) -> matplotlib Figure``;
:data:`FIGURE_NAMES` lists the stems of ``results/figures/{name}.png|pdf`` and :func:`render_figure`
draws one by name and writes both files. Colours (model group) and markers (CLIP training source) come
from :class:`clip_robustness.figures.style.Style`, built once from the whole registry.

Importing this package is cheap (the Snakefile imports it to list targets): matplotlib, seaborn and
the figure modules load on first use.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

#: Figure name -> "module:function" drawing it. Names are the stems of results/figures/{name}.png and .pdf.
FIGURE_FUNCTIONS: dict[str, str] = {
    "factor_robustness": "factor:plot_factor_robustness",
    "factor_effective_robustness": "factor:plot_factor_effective_robustness",
    "factor_robustness_by_source": "factor:plot_factor_robustness_by_source",
    "factor_robustness_by_finetuning": "factor:plot_factor_robustness_by_finetuning",
    "ood_detection": "ood:plot_ood_detection",
    "calibration": "calibration:plot_calibration",
    "calibration_shift": "calibration:plot_calibration_shift",
}
FIGURE_NAMES: tuple[str, ...] = tuple(FIGURE_FUNCTIONS)

#: Stems of the tables under results/tables/ (see clip_robustness.figures.tables).
TABLE_FILES: tuple[str, ...] = ("model_registry.csv", "model_registry.tex", "model_summary.csv", "ood_correlations.csv")


def figure_function(name: str) -> Callable[..., "Figure"]:
    """The function drawing figure ``name``; raises ``KeyError`` naming the known figures."""
    if name not in FIGURE_FUNCTIONS:
        raise KeyError(f"unknown figure {name!r}; known figures: {list(FIGURE_NAMES)}")
    module, function = FIGURE_FUNCTIONS[name].split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), function)


def render_figure(
    name: str,
    metrics: "pd.DataFrame",
    registry: "pd.DataFrame",
    png: str | Path,
    pdf: str | Path,
    *,
    logit_scaled: bool = False,
    **options,
) -> None:
    """Draw figure ``name`` from the tidy ``metrics`` table and the model ``registry`` table; write PNG and PDF.

    ``logit_scaled``: accuracy axes on a logit scale. ``options``: keyword arguments of that figure's
    function (``ood_detection``: ``ood_sets``, ``score``; ``calibration``: ``datasets``;
    ``calibration_shift``: ``test_conditions``).
    """
    from clip_robustness.figures.data import check_metrics, check_models_known, check_registry
    from clip_robustness.figures.panels import save
    from clip_robustness.figures.style import Style, paper_context

    draw = figure_function(name)
    metrics = check_metrics(metrics)
    registry = check_registry(registry)
    check_models_known(metrics, registry)
    style = Style.from_registry(registry, logit_scaled=logit_scaled)
    start = time.perf_counter()
    with paper_context():
        fig = draw(metrics, registry, style, **options)
        save(fig, png, pdf)
    log.info("figure %s: %d models, %d metric rows, logit_scaled=%s, options=%s -> %s, %s (%.1f s)",
             name, metrics["model"].nunique(), len(metrics), logit_scaled, options, png, pdf, time.perf_counter() - start)


def __getattr__(attribute: str):
    """``clip_robustness.figures.plot_<name>`` and ``FigureInputError``, imported on first use."""
    if attribute.startswith("plot_") and attribute[5:] in FIGURE_FUNCTIONS:
        return figure_function(attribute[5:])
    if attribute == "FigureInputError":
        from clip_robustness.figures.data import FigureInputError

        return FigureInputError
    raise AttributeError(f"module {__name__!r} has no attribute {attribute!r}")


__all__ = ["FIGURE_FUNCTIONS", "FIGURE_NAMES", "TABLE_FILES", "figure_function", "render_figure"]
