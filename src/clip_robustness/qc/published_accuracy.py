"""Published-accuracy QC: our top-1 against the numbers open_clip and timm publish for the same weights.

Each model's adapter reads its library's published tables and looks the model up in them
(:meth:`ModelAdapter.published_top1`); models of a library that publishes nothing (``python``) are reported
missing, never flagged.

A deviation above a tolerance (percentage points) is how a user learns that a preprocessing, QuickGELU
or label-space mismatch crept into the logits cache. The reference tables ship in ``config/reference/``
(rows and columns of open_clip's ``docs/openclip_results.csv`` and timm's ``results/results-*.csv``;
see the README there for source and commit):

- open_clip: zero-shot top-1 as *fractions* in [0, 1], keyed by (``name``, ``pretrained``), columns
  ``ImageNet 1k``, ``ImageNet v2`` (matched frequency), ``ImageNet Sketch``, ``ImageNet-A``,
  ``ImageNet-R``, ``ObjectNet``;
- timm: top-1 in *percent*, keyed by ``model`` = ``arch.tag`` and ``img_size``; ImageNet-A/-R are
  scored on their 200-class subsets, as our metric is. timm publishes no ObjectNet numbers.

All published and compared values here are top-1 accuracy in percent (0-100); differences are
percentage points (ours minus published).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from clip_robustness.models.adapters import ADAPTERS, adapter_for
from clip_robustness.models.adapters.published import ReferenceTableError

#: The datasets the QC compares (ids of the dataset registry), in report order; each adapter maps them to its tables.
QC_DATASET_IDS: tuple[str, ...] = (
    "imagenet_val",
    "imagenet_v2_matched_frequency",
    "imagenet_sketch",
    "imagenet_r",
    "imagenet_a",
    "objectnet",
)
QC_COLUMNS = ("model", "dataset", "ours_pct", "published_pct", "diff_pp", "flagged", "source")
PUBLISHED_COLUMNS = ("model", "dataset", "published_pct", "source")

__all__ = [
    "PUBLISHED_COLUMNS",
    "QC_COLUMNS",
    "QC_DATASET_IDS",
    "MetricsTableError",
    "ReferenceTableError",
    "ReferenceTables",
    "compare_with_published",
    "load_reference_tables",
    "our_top1",
    "published_accuracy_qc",
    "published_top1",
    "qc_summary",
    "reference_table_files",
]


class MetricsTableError(ValueError):
    """The metrics table lacks a column or holds duplicate top-1 rows; the message names them."""


@dataclass(frozen=True)
class ReferenceTables:
    """The published tables: ``tables`` maps each library that publishes results to its adapter's loaded tables."""

    tables: dict[str, Any]
    directory: Path


def reference_table_files(directory: str | Path) -> list[Path]:
    """The published tables the QC reads from ``directory``: each adapter's files, in the adapter table's order."""
    return [Path(directory) / name for adapter in ADAPTERS.values() for name in adapter.qc_reference_files()]


def load_reference_tables(directory: str | Path) -> ReferenceTables:
    """Read the shipped published tables from ``directory`` (``config/reference``), each library's by its adapter."""
    directory = Path(directory)
    tables = {
        library: adapter.load_qc_references(directory)
        for library, adapter in ADAPTERS.items()
        if adapter.qc_reference_files()
    }
    return ReferenceTables(tables=tables, directory=directory)


def published_top1(registry_table: pd.DataFrame, references: ReferenceTables) -> pd.DataFrame:
    """Published top-1 (percent) of each registry model on each QC dataset.

    ``registry_table``: the model registry (``model_id, library, architecture, pretrained, resolution``); each
    row's adapter looks it up in its library's tables (:meth:`ModelAdapter.published_top1`).
    Returns one row per (model, QC dataset) with columns ``model, dataset, published_pct, source``;
    ``published_pct`` is NaN where nothing is published, and ``source`` then says what was looked for.
    """
    records = []
    for model in registry_table.to_dict("records"):
        adapter = adapter_for(model["library"], model["model_id"])
        found = adapter.published_top1(model, references.tables.get(model["library"]), QC_DATASET_IDS)
        records += [
            (model["model_id"], dataset, value, source) for dataset, (value, source) in zip(QC_DATASET_IDS, found)
        ]
    return pd.DataFrame.from_records(records, columns=list(PUBLISHED_COLUMNS))


def our_top1(metrics: pd.DataFrame) -> pd.DataFrame:
    """Our top-1 rows on the QC datasets from the tidy metrics table, as ``model, dataset, ours_pct`` (percent).

    ``metrics``: columns ``model, dataset, metric, value, factor, score``; top-1 ``value`` is a fraction in [0, 1].
    Raises :class:`MetricsTableError` on a missing column or a (model, dataset) with several top-1 rows.
    """
    missing = [c for c in ("model", "dataset", "metric", "value") if c not in metrics.columns]
    if missing:
        raise MetricsTableError(f"metrics table: missing column(s) {', '.join(map(repr, missing))}")
    top1 = metrics[(metrics["metric"] == "top1") & metrics["dataset"].isin(QC_DATASET_IDS)]
    for column in ("factor", "score"):
        if column in top1.columns:
            top1 = top1[top1[column].isna()]
    duplicated = top1[top1.duplicated(["model", "dataset"], keep=False)]
    if len(duplicated):
        first = duplicated.iloc[0]
        raise MetricsTableError(
            f"metrics table: {len(duplicated)} duplicate top1 rows, e.g. model "
            f"{first['model']!r} on {first['dataset']!r}"
        )
    out = top1[["model", "dataset"]].copy()
    out["ours_pct"] = 100.0 * top1["value"].astype("float64")
    return out.reset_index(drop=True)


def compare_with_published(ours: pd.DataFrame, published: pd.DataFrame, tolerance_pp: float) -> pd.DataFrame:
    """The QC table: one row per (model, dataset) we computed, our top-1 beside the published one.

    ``ours``: ``model, dataset, ours_pct``; ``published``: ``model, dataset, published_pct, source``
    (both percent). ``diff_pp`` = ours - published in percentage points; ``flagged`` is True where
    ``|diff_pp| > tolerance_pp``. Rows with no published number keep NaN there, are not flagged, and
    their ``source`` says what is missing. Sorted by model, then the QC dataset order.
    """
    if tolerance_pp < 0:
        raise ValueError(f"tolerance_pp must be >= 0 percentage points, got {tolerance_pp}")
    table = ours.merge(published, on=["model", "dataset"], how="left")
    no_registry_row = table["source"].isna()
    table.loc[no_registry_row, "source"] = "missing: model not in the registry"
    table["diff_pp"] = (table["ours_pct"] - table["published_pct"]).round(6)
    table["flagged"] = (table["diff_pp"].abs() > tolerance_pp).astype(bool)  # NaN compares False
    order = {dataset: i for i, dataset in enumerate(QC_DATASET_IDS)}
    table = table.assign(_order=table["dataset"].map(order)).sort_values(["model", "_order"], kind="stable")
    return table[list(QC_COLUMNS)].reset_index(drop=True)


def published_accuracy_qc(
    metrics: pd.DataFrame, registry_table: pd.DataFrame, references: ReferenceTables, tolerance_pp: float
) -> pd.DataFrame:
    """The whole QC: our top-1 rows of ``metrics`` against the published rows of the registry's models."""
    return compare_with_published(our_top1(metrics), published_top1(registry_table, references), tolerance_pp)


def qc_summary(table: pd.DataFrame, tolerance_pp: float) -> list[str]:
    """Human-readable lines about a QC table: counts, then one line per flagged row (for the job log)."""
    flagged = table[table["flagged"]]
    missing = int(table["published_pct"].isna().sum())
    lines = [
        f"{len(table)} (model, dataset) top-1 values compared; {len(flagged)} deviate by more than "
        f"{tolerance_pp} pp from the published number; {missing} have no published number"
    ]
    for row in flagged.itertuples(index=False):
        lines.append(
            f"FLAGGED {row.model} on {row.dataset}: ours {row.ours_pct:.2f}% vs published "
            f"{row.published_pct:.2f}% ({row.diff_pp:+.2f} pp; {row.source})"
        )
    return lines
