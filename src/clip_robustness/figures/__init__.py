"""Figures and tables of the study, drawn from the tidy metrics table and the model registry (docs/methods.md, "Figures").

Each figure is one :class:`FigureSpec` of :data:`FIGURES` (name = stem of ``results/figures/{name}.png|pdf``,
report category, caption file, options) and one drawing function ``(metrics, registry, style, **options) ->
matplotlib Figure`` (:func:`figure_function`); workflow/rules/figures.smk makes one rule per entry, and
:func:`render_figure` draws one by name and writes both files. Colours (model group) and markers (CLIP training source) come
from :class:`clip_robustness.figures.style.Style`, built once from the whole registry.

Importing this package is cheap (the Snakefile imports it to list targets): matplotlib, seaborn and
the figure modules load on first use.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from clip_robustness.names import REFERENCE_GROUP, id_test_dataset

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FigureSpec:
    """One figure of the study, as the workflow sees it: ``results/figures/{name}.png|pdf``, shown in the report
    under ``category`` with the caption ``workflow/report/{name}.rst``.

    ``study_options``: keyword options of the figure's function filled from the study (names of
    :func:`study_options`: ``id_dataset``, ``id_test``, ``ood_sets``, ``test_conditions``, ``reference_group``).
    ``fixed_options``: keyword options that make this figure a variant of its function (e.g. the OOD score).
    ``y_metric``: the metric of the tidy table on the figure's y axis (its ``score``, if any, is the ``score`` fixed
    option), by which a model's report card places it among the paper's groups.
    """

    name: str
    category: str
    study_options: tuple[str, ...] = ()
    fixed_options: Mapping[str, object] = field(default_factory=dict)
    y_metric: str = ""

    @property
    def caption(self) -> str:
        """The caption file, relative to workflow/rules/."""
        return f"../report/{self.name}.rst"


CATEGORY_FACTOR = "Factor robustness (ImageNet-X)"
CATEGORY_OOD = "OOD detection"
CATEGORY_CALIBRATION = "Calibration"
#: Report category of the findings table: the report lists categories alphabetically, the digit puts it first.
CATEGORY_FINDINGS = "1. Findings: the paper's claims, tested"
CATEGORY_TABLES = "Tables"
CATEGORY_SHAPE_BIAS = "Shape bias (cue conflict)"

#: Every figure, in report order. Drawing functions: :func:`figure_function` (same names).
FIGURES: tuple[FigureSpec, ...] = (
    FigureSpec("factor_robustness", CATEGORY_FACTOR, ("reference_group",), y_metric="factor_accuracy"),
    FigureSpec("factor_effective_robustness", CATEGORY_FACTOR, ("reference_group",), y_metric="effective_robustness"),
    FigureSpec("factor_robustness_by_source", CATEGORY_FACTOR, ("reference_group",), y_metric="effective_robustness"),
    FigureSpec(
        "factor_robustness_by_finetuning", CATEGORY_FACTOR, ("reference_group",), y_metric="effective_robustness"
    ),
    FigureSpec("ood_detection", CATEGORY_OOD, ("ood_sets", "id_dataset"), {"score": "msp"}, y_metric="auroc"),
    FigureSpec("ood_detection_mcm", CATEGORY_OOD, ("ood_sets", "id_dataset"), {"score": "mcm"}, y_metric="auroc"),
    FigureSpec("calibration", CATEGORY_CALIBRATION, ("id_test",), y_metric="ece"),
    FigureSpec("calibration_shift", CATEGORY_CALIBRATION, ("test_conditions", "id_test"), y_metric="ece_ts"),
    FigureSpec("shape_bias", CATEGORY_SHAPE_BIAS, ("id_dataset",), y_metric="shape_bias"),
)
FIGURE_NAMES: tuple[str, ...] = tuple(spec.name for spec in FIGURES)

#: Stems of the tables under results/tables/ (see clip_robustness.figures.tables and clip_robustness.metrics.findings).
TABLE_FILES: tuple[str, ...] = (
    "model_registry.csv",
    "model_registry.tex",
    "model_summary.csv",
    "ood_correlations.csv",
    "findings.csv",
)


def figure_spec(name: str) -> FigureSpec:
    """The :class:`FigureSpec` of figure ``name``; raises ``KeyError`` naming the known figures."""
    for spec in FIGURES:
        if spec.name == name:
            return spec
    raise KeyError(f"unknown figure {name!r}; known figures: {list(FIGURE_NAMES)}")


def study_options(
    in_distribution: str,
    test_conditions: Sequence[str],
    ood_sets: Sequence[str],
    reference_group: str = REFERENCE_GROUP,
) -> dict[str, object]:
    """Every study-dependent figure option, by name (a :class:`FigureSpec` picks its ``study_options``).

    ``reference_group``: the group whose trend defines effective robustness (the metrics' reference group)."""
    return {
        "id_dataset": in_distribution,
        "id_test": id_test_dataset(in_distribution),
        "ood_sets": list(ood_sets),
        "test_conditions": list(test_conditions),
        "reference_group": reference_group,
    }


def figure_options(
    name: str,
    in_distribution: str,
    test_conditions: Sequence[str],
    ood_sets: Sequence[str],
    reference_group: str = REFERENCE_GROUP,
) -> dict[str, object]:
    """Keyword options of figure ``name``'s function for a study (its study options, then its fixed ones)."""
    spec = figure_spec(name)
    available = study_options(in_distribution, test_conditions, ood_sets, reference_group)
    return {**{key: available[key] for key in spec.study_options}, **dict(spec.fixed_options)}


def _drawing_functions() -> dict[str, Callable[..., "Figure"]]:
    # Imported here, not at module level: the Snakefile imports this package to list targets, and the plotting
    # modules pull in matplotlib, seaborn and scipy (seconds per parse).
    from clip_robustness.figures import calibration, factor, ood, shape_bias

    return {
        "factor_robustness": factor.plot_factor_robustness,
        "factor_effective_robustness": factor.plot_factor_effective_robustness,
        "factor_robustness_by_source": factor.plot_factor_robustness_by_source,
        "factor_robustness_by_finetuning": factor.plot_factor_robustness_by_finetuning,
        "ood_detection": ood.plot_ood_detection,
        "ood_detection_mcm": ood.plot_ood_detection,
        "calibration": calibration.plot_calibration,
        "calibration_shift": calibration.plot_calibration_shift,
        "shape_bias": shape_bias.plot_shape_bias,
    }


def figure_function(name: str) -> Callable[..., "Figure"]:
    """The function drawing figure ``name`` (``(metrics, registry, style, **options) -> Figure``), with the
    figure's fixed options bound; raises ``KeyError`` naming the known figures."""
    spec = figure_spec(name)
    draw = _drawing_functions()[name]
    return functools.partial(draw, **spec.fixed_options) if spec.fixed_options else draw


def render_figure(
    name: str,
    metrics: "pd.DataFrame",
    registry: "pd.DataFrame",
    png: str | Path,
    pdf: str | Path,
    *,
    logit_scaled: bool = False,
    dataset_titles: Mapping[str, str] | None = None,
    **options,
) -> None:
    """Draw figure ``name`` from the tidy ``metrics`` table and the model ``registry`` table; write PNG and PDF.

    ``logit_scaled``: accuracy axes on a logit scale. ``dataset_titles``: dataset id -> the name panels show (the
    dataset registry's :meth:`~clip_robustness.datasets.registry.DatasetRegistry.figure_titles`; default: the ids).
    ``options``: keyword arguments of that figure's function (:func:`figure_options`).
    """
    from clip_robustness.figures.data import check_metrics, check_models_known, check_registry
    from clip_robustness.figures.panels import save
    from clip_robustness.figures.style import Style, paper_context

    for chatty in ("fontTools", "matplotlib", "PIL"):  # per-glyph subsetting chatter of PDF font embedding
        logging.getLogger(chatty).setLevel(logging.WARNING)
    draw = figure_function(name)
    metrics = check_metrics(metrics)
    registry = check_registry(registry)
    check_models_known(metrics, registry)
    style = Style.from_registry(registry, logit_scaled=logit_scaled, dataset_titles=dataset_titles)
    start = time.perf_counter()
    with paper_context():
        fig = draw(metrics, registry, style, **options)
        save(fig, png, pdf)
    log.info(
        "figure %s: %d models, %d metric rows, logit_scaled=%s, options=%s -> %s, %s (%.1f s)",
        name,
        metrics["model"].nunique(),
        len(metrics),
        logit_scaled,
        options,
        png,
        pdf,
        time.perf_counter() - start,
    )


def __getattr__(attribute: str):
    """``clip_robustness.figures.plot_<name>`` and ``FigureInputError``, imported on first use."""
    if attribute == "FigureInputError":
        from clip_robustness.figures.data import FigureInputError

        return FigureInputError
    raise AttributeError(f"module {__name__!r} has no attribute {attribute!r}")


__all__ = [
    "FIGURES",
    "FIGURE_NAMES",
    "TABLE_FILES",
    "FigureSpec",
    "figure_function",
    "figure_options",
    "figure_spec",
    "render_figure",
]
