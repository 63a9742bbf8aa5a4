"""Published-accuracy QC: our top-1 against the numbers open_clip and timm publish for the same weights.

Each model's adapter says where its library publishes it (:meth:`ModelAdapter.qc_reference_key`); models of
a library that publishes nothing (``python``) are reported missing, never flagged.

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

import numpy as np
import pandas as pd

from clip_robustness.models.adapters import adapter_for
from clip_robustness.models.adapters.open_clip import OPEN_CLIP_RESULTS
from clip_robustness.models.adapters.published import ReferenceKey
from clip_robustness.models.adapters.timm import TIMM_RESULTS


@dataclass(frozen=True)
class QcDataset:
    """Where one of our dataset ids is found in the published tables (``None``: not published there)."""

    dataset: str
    open_clip_column: str | None
    timm_file: str | None


QC_DATASETS: tuple[QcDataset, ...] = (
    QcDataset("imagenet_val", "ImageNet 1k", "timm-results-imagenet.csv"),
    QcDataset("imagenet_v2_matched_frequency", "ImageNet v2", "timm-results-imagenetv2-matched-frequency.csv"),
    QcDataset("imagenet_sketch", "ImageNet Sketch", "timm-results-sketch.csv"),
    QcDataset("imagenet_r", "ImageNet-R", "timm-results-imagenet-r.csv"),
    QcDataset("imagenet_a", "ImageNet-A", "timm-results-imagenet-a.csv"),
    QcDataset("objectnet", "ObjectNet", None),
)
QC_DATASET_IDS: tuple[str, ...] = tuple(d.dataset for d in QC_DATASETS)
OPEN_CLIP_FILE = "openclip_results.csv"
OPEN_CLIP_KEY = ("name", "pretrained")
TIMM_COLUMNS = ("model", "img_size", "top1")
QC_COLUMNS = ("model", "dataset", "ours_pct", "published_pct", "diff_pp", "flagged", "source")
PUBLISHED_COLUMNS = ("model", "dataset", "published_pct", "source")


class ReferenceTableError(ValueError):
    """A reference table is missing or lacks a needed column; the message names the file and column."""


class MetricsTableError(ValueError):
    """The metrics table lacks a column or holds duplicate top-1 rows; the message names them."""


@dataclass(frozen=True)
class ReferenceTables:
    """The published tables: ``open_clip`` (fractions) and ``timm`` (percent, one frame per timm file)."""

    open_clip: pd.DataFrame
    timm: dict[str, pd.DataFrame]
    directory: Path


def _read_csv(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    if not path.is_file():
        raise ReferenceTableError(f"reference table {path} does not exist (see config/reference/README.md)")
    table = pd.read_csv(path, thousands=",")
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ReferenceTableError(f"reference table {path}: missing column(s) {', '.join(map(repr, missing))}")
    return table


def reference_table_files(directory: str | Path) -> list[Path]:
    """The published tables the QC reads from ``directory``: open_clip's, then timm's in QC dataset order."""
    directory = Path(directory)
    return [directory / OPEN_CLIP_FILE] + [directory / d.timm_file for d in QC_DATASETS if d.timm_file]


def load_reference_tables(directory: str | Path) -> ReferenceTables:
    """Read the shipped published tables from ``directory`` (``config/reference``)."""
    directory = Path(directory)
    open_clip_columns = OPEN_CLIP_KEY + tuple(d.open_clip_column for d in QC_DATASETS if d.open_clip_column)
    open_clip = _read_csv(directory / OPEN_CLIP_FILE, open_clip_columns)
    timm = {d.timm_file: _read_csv(directory / d.timm_file, TIMM_COLUMNS) for d in QC_DATASETS if d.timm_file}
    return ReferenceTables(open_clip=open_clip, timm=timm, directory=directory)


def _open_clip_published(key: ReferenceKey, references: ReferenceTables) -> list[tuple[float, str]]:
    """Published top-1 (percent) and source of ``key`` on each QC dataset, from open_clip's table (fractions).

    The first of ``key.names`` with a (``name``, ``pretrained``) row wins (the adapter lists a ``-quickgelu``
    config's base name after it, since open_clip's table lists the OpenAI weights under the base name only).
    """
    table = references.open_clip
    for name in key.names:
        rows = table[(table["name"] == name) & (table["pretrained"] == key.pretrained)]
        if len(rows):
            row = rows.iloc[0]
            return [(100.0 * float(row[qc.open_clip_column]), f"{OPEN_CLIP_FILE}: ({row['name']}, {key.pretrained}) "
                     f"[{qc.open_clip_column}]") for qc in QC_DATASETS]
    return [(np.nan, f"missing: no ({key.names[0]}, {key.pretrained}) row in {OPEN_CLIP_FILE}")] * len(QC_DATASETS)


def _timm_published(key: ReferenceKey, references: ReferenceTables) -> list[tuple[float, str]]:
    """Published top-1 (percent) and source of ``key`` on each QC dataset, from timm's tables at ``key.img_size``."""
    name, size = key.names[0], key.img_size
    out = []
    for qc in QC_DATASETS:
        if qc.timm_file is None:
            out.append((np.nan, f"missing: timm publishes no {qc.dataset} results"))
            continue
        table = references.timm[qc.timm_file]
        rows = table[table["model"] == name]
        at_size = rows[rows["img_size"] == size]
        if len(at_size):
            out.append((float(at_size["top1"].iloc[0]), f"{qc.timm_file}: {name} @ {size}px"))
        elif len(rows):
            sizes = ", ".join(str(s) for s in sorted(rows["img_size"].unique()))
            out.append((np.nan, f"missing: {qc.timm_file} has {name} only at img_size {sizes}, not {size}"))
        else:
            out.append((np.nan, f"missing: no {name} row in {qc.timm_file}"))
    return out


#: Reference-table family (an adapter's ``qc_reference_key().table``) -> its lookup.
_PUBLISHED_LOOKUPS = {OPEN_CLIP_RESULTS: _open_clip_published, TIMM_RESULTS: _timm_published}


def published_top1(registry_table: pd.DataFrame, references: ReferenceTables) -> pd.DataFrame:
    """Published top-1 (percent) of each registry model on each QC dataset.

    ``registry_table``: the model registry (``model_id, library, architecture, pretrained, resolution``); each
    row's adapter says where its library publishes it (``qc_reference_key``).
    Returns one row per (model, QC dataset) with columns ``model, dataset, published_pct, source``;
    ``published_pct`` is NaN where nothing is published, and ``source`` then says what was looked for.
    """
    records = []
    for model in registry_table.to_dict("records"):
        key = adapter_for(model["library"], model["model_id"]).qc_reference_key(model)
        if key is None:
            found = [(np.nan, f"missing: the {model['library']} library publishes no results")] * len(QC_DATASETS)
        else:
            found = _PUBLISHED_LOOKUPS[key.table](key, references)
        records += [(model["model_id"], qc.dataset, value, source) for qc, (value, source) in zip(QC_DATASETS, found)]
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
        raise MetricsTableError(f"metrics table: {len(duplicated)} duplicate top1 rows, e.g. model "
                                f"{first['model']!r} on {first['dataset']!r}")
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


def published_accuracy_qc(metrics: pd.DataFrame, registry_table: pd.DataFrame, references: ReferenceTables,
                          tolerance_pp: float) -> pd.DataFrame:
    """The whole QC: our top-1 rows of ``metrics`` against the published rows of the registry's models."""
    return compare_with_published(our_top1(metrics), published_top1(registry_table, references), tolerance_pp)


def qc_summary(table: pd.DataFrame, tolerance_pp: float) -> list[str]:
    """Human-readable lines about a QC table: counts, then one line per flagged row (for the job log)."""
    flagged = table[table["flagged"]]
    missing = int(table["published_pct"].isna().sum())
    lines = [f"{len(table)} (model, dataset) top-1 values compared; {len(flagged)} deviate by more than "
             f"{tolerance_pp} pp from the published number; {missing} have no published number"]
    for row in flagged.itertuples(index=False):
        lines.append(f"FLAGGED {row.model} on {row.dataset}: ours {row.ours_pct:.2f}% vs published "
                     f"{row.published_pct:.2f}% ({row.diff_pp:+.2f} pp; {row.source})")
    return lines
