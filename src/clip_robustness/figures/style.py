"""One visual vocabulary for every figure: a colour per model group, a marker per CLIP training source.

Every figure builds its :class:`Style` from the *whole* model registry (never from the subset it
happens to plot), so a group keeps its colour and a training source keeps its marker across figures.
Sizes are chosen for the paper's page: text is legible when a figure is printed at ``PAPER_WIDTH_IN``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import matplotlib as mpl
import pandas as pd
import seaborn as sns

from clip_robustness.names import (
    ADVERSARIAL_GROUP,
    CLIP_GROUPS,
    FINE_TUNED_GROUP,
    ID_TEST_SUFFIX,
    MORE_DATA_GROUP,
    PAPER_GROUPS,
    STANDARD_GROUP,
    ZERO_SHOT_GROUP,
)

#: Model groups of the registry (column ``group``), in legend order.
GROUP_ORDER: tuple[str, ...] = PAPER_GROUPS

#: Legend names of the groups (the paper's wording).
GROUP_LABELS: dict[str, str] = {
    ZERO_SHOT_GROUP: "CLIP (zero-shot)",
    FINE_TUNED_GROUP: "CLIP-FT",
    STANDARD_GROUP: "Standard (IN-1k)",
    MORE_DATA_GROUP: "More data",
    ADVERSARIAL_GROUP: "Adversarial",
}

_COLORBLIND = sns.color_palette("colorblind", 10).as_hex()

#: One colour per group (seaborn's colour-blind palette); used by every figure.
GROUP_PALETTE: dict[str, str] = {
    ZERO_SHOT_GROUP: _COLORBLIND[3],  # vermilion
    FINE_TUNED_GROUP: _COLORBLIND[4],  # purple
    STANDARD_GROUP: _COLORBLIND[0],  # blue
    MORE_DATA_GROUP: _COLORBLIND[2],  # green
    ADVERSARIAL_GROUP: _COLORBLIND[5],  # brown
}

#: Colours of the CLIP-FT fine-tuning routes after the first (which keeps the CLIP-FT colour), in sorted route order.
SPARE_ROUTE_COLORS: tuple[str, ...] = (_COLORBLIND[6], _COLORBLIND[9], _COLORBLIND[8], _COLORBLIND[1])  # pink, sky, ...

#: Colour of anything outside the known groups, and of reference (trend) lines of standard models.
OTHER_COLOR = "#7f7f7f"

#: Marker of every point that is not a zero-shot CLIP model (those get their training source's marker).
DEFAULT_MARKER = "o"

#: A user's own models (registry ``study`` ``own``): a hollow ring of this colour, larger than the other points, drawn
#: on top and labelled with the model id, in every figure (:func:`clip_robustness.figures.panels.scatter_models`).
OWN_COLOR = "black"
OWN_MARKER = "o"
OWN_LABEL = "Own model (labelled with its id)"
#: Catalogue checkpoints (``study`` ``catalogue``): small, faint and unlabelled, below everything else.
CATALOGUE_COLOR = "#c7c7c7"
CATALOGUE_LABEL = "Other library checkpoints"

#: Markers of the CLIP training sources named in docs/methods.md ("The study") and config/models.tsv, keyed by normalised name
#: (see :func:`normalise_source`). Sources not listed here get the next free marker of ``SPARE_MARKERS``
#: in sorted order of their names over the whole registry.
SOURCE_MARKERS: dict[str, str] = {
    "wit400m": "*",  # OpenAI WIT-400M
    "yfcc15m": "v",
    "cc12m": "<",
    "laion400m": "s",
    "laion2b": "D",
    "laionaesthetic": "d",
    "datacomp": "^",
    "datacomp1b": "^",  # DataComp variants by pool size: same family, one marker per quantity
    "datacompl": ">",
    "datacompm": "h",
    "datacomps": "p",
    "merged2b": "P",  # EVA-CLIP's Merged-2B
}
SPARE_MARKERS: tuple[str, ...] = ("X", "H", "8", "1", "2", "3", "4", "+", "x")

#: Width of a full-width figure in the paper (NeurIPS text width, inches).
PAPER_WIDTH_IN = 5.5 * 1.3

#: matplotlib settings for all figures (sizes in points at the figure's print size).
PAPER_RC: dict[str, object] = {
    "font.size": 7,
    "axes.titlesize": 7.5,
    "axes.labelsize": 7,
    "xtick.labelsize": 6,
    "ytick.labelsize": 6,
    "legend.fontsize": 6,
    "legend.title_fontsize": 6.5,
    "lines.linewidth": 1.0,
    "lines.markersize": 4,
    "axes.linewidth": 0.6,
    "axes.grid": True,
    "grid.linewidth": 0.4,
    "grid.alpha": 0.5,
    "savefig.dpi": 200,
    "pdf.fonttype": 42,  # embed TrueType: text stays text in the PDF
}


def normalise_source(source: object) -> str:
    """Registry spelling of a training source -> lookup key (lower case, letters and digits only).

    ``"LAION-2B"``, ``"laion2b"`` and ``"LAION 2B"`` all become ``"laion2b"``; a missing value becomes ``""``.
    """
    if source is None or (isinstance(source, float) and pd.isna(source)):
        return ""
    return re.sub(r"[^0-9a-z]", "", str(source).lower())


def dataset_title(dataset_id: str, titles: Mapping[str, str]) -> str:
    """The name a figure shows for ``dataset_id``: its title in ``titles`` (the dataset registry's, by
    :meth:`~clip_robustness.datasets.registry.DatasetRegistry.figure_titles`), else the id itself;
    ``<id>_id_test`` is the ID test half of ``<id>``."""
    if dataset_id.endswith(ID_TEST_SUFFIX) and dataset_id not in titles:
        return f"{dataset_title(dataset_id[: -len(ID_TEST_SUFFIX)], titles)} (ID test half)"
    return titles.get(dataset_id, dataset_id)


def group_label(group: str) -> str:
    """Legend name of a registry group (the group id itself when unknown)."""
    return GROUP_LABELS.get(group, group)


@dataclass(frozen=True)
class Style:
    """Colours of the model groups and markers of the CLIP training sources of one model registry.

    ``group_colors``: registry group -> hex colour. ``source_markers``: training source as spelled in
    the registry -> matplotlib marker; only sources of CLIP models (zero-shot and fine-tuned) are listed.
    ``route_colors``: CLIP-FT fine-tuning route -> colour (the first route in sorted order keeps the CLIP-FT
    colour). ``logit_scaled``: accuracy axes on a logit scale (config ``figures.logit_scaled_accuracy``).
    ``dataset_titles``: dataset id -> the name panels show (the dataset registry's, see :func:`dataset_title`).
    """

    group_colors: Mapping[str, str]
    source_markers: Mapping[str, str]
    logit_scaled: bool = False
    groups: tuple[str, ...] = field(default=GROUP_ORDER)
    route_colors: Mapping[str, str] = field(default_factory=dict)
    dataset_titles: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_registry(
        cls, registry: pd.DataFrame, *, logit_scaled: bool = False, dataset_titles: Mapping[str, str] | None = None
    ) -> "Style":
        """The style of a registry table (columns ``group`` and ``training_source``)."""
        present = [g for g in registry["group"].dropna().unique()]
        groups = tuple(g for g in GROUP_ORDER if g in present) + tuple(
            sorted(g for g in present if g not in GROUP_ORDER)
        )
        colors = {g: GROUP_PALETTE.get(g, OTHER_COLOR) for g in groups}
        clip = registry.loc[registry["group"].isin(CLIP_GROUPS), "training_source"].dropna()
        routes: list[str] = []
        if "finetune_route" in registry.columns:
            routes = sorted(
                {
                    str(r)
                    for r in registry.loc[registry["group"] == FINE_TUNED_GROUP, "finetune_route"].dropna()
                    if str(r)
                }
            )
        spare = iter(SPARE_ROUTE_COLORS)
        route_colors = {
            r: colors.get(FINE_TUNED_GROUP, OTHER_COLOR) if i == 0 else next(spare, OTHER_COLOR)
            for i, r in enumerate(routes)
        }
        return cls(
            colors, assign_source_markers(clip.unique()), logit_scaled, groups, route_colors, dict(dataset_titles or {})
        )

    def dataset_title(self, dataset_id: str) -> str:
        """The name panels show for ``dataset_id`` (:func:`dataset_title` with this style's titles)."""
        return dataset_title(dataset_id, self.dataset_titles)

    def color(self, group: str) -> str:
        """Colour of a group (grey for a group the registry does not have)."""
        return self.group_colors.get(group, OTHER_COLOR)

    def point_color(self, group: str, finetune_route: object = None) -> str:
        """Colour of one model: its group's, except CLIP-FT models, coloured by fine-tuning route."""
        if group == FINE_TUNED_GROUP and finetune_route is not None and str(finetune_route) in self.route_colors:
            return self.route_colors[str(finetune_route)]
        return self.color(group)

    def marker(self, group: str, training_source: object) -> str:
        """Marker of one model: its (pre)training source's for CLIP models, ``DEFAULT_MARKER`` otherwise."""
        if group in CLIP_GROUPS:
            return self.source_markers.get(str(training_source), DEFAULT_MARKER)
        return DEFAULT_MARKER


def assign_source_markers(sources: Iterable[object]) -> dict[str, str]:
    """Marker of each training source: the pinned one of ``SOURCE_MARKERS``, else the next spare one.

    Spare markers go to unknown sources in sorted order of their names, so the assignment depends only
    on the set of sources (the whole registry), not on which models a figure shows.
    """
    names = sorted({str(s) for s in sources if normalise_source(s)})
    markers: dict[str, str] = {}
    spare = iter(m for m in SPARE_MARKERS)
    for name in names:
        pinned = SOURCE_MARKERS.get(normalise_source(name))
        markers[name] = pinned if pinned is not None else next(spare, DEFAULT_MARKER)
    return markers


def paper_context() -> mpl.rc_context:
    """A context manager that applies :data:`PAPER_RC` (use around figure construction and saving)."""
    return mpl.rc_context(PAPER_RC)
