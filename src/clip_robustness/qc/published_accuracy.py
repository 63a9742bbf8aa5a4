"""Published-accuracy QC: our top-1 against the numbers open_clip and timm publish for the same weights.

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


def _open_clip_row(table: pd.DataFrame, architecture: str, pretrained: str) -> pd.Series | None:
    """The published row of an open_clip (config, tag) pair.

    Exact match first; a ``-quickgelu`` config falls back to its base name's row, since open_clip's
    table lists the OpenAI weights (always loaded with QuickGELU) under the base name only.
    """
    candidates = [architecture]
    if architecture.endswith("-quickgelu"):
        candidates.append(architecture.removesuffix("-quickgelu"))
    for name in candidates:
        rows = table[(table["name"] == name) & (table["pretrained"] == pretrained)]
        if len(rows):
            return rows.iloc[0]
    return None


def published_top1(registry_table: pd.DataFrame, references: ReferenceTables) -> pd.DataFrame:
    """Published top-1 (percent) of each registry model on each QC dataset.

    ``registry_table``: the model registry (``model_id, library, architecture, pretrained, resolution``).
    Returns one row per (model, QC dataset) with columns ``model, dataset, published_pct, source``;
    ``published_pct`` is NaN where nothing is published, and ``source`` then says what was looked for.
    """
    records = []
    for model in registry_table.to_dict("records"):
        model_id, arch, tag = model["model_id"], model["architecture"], model["pretrained"]
        if model["library"] == "open_clip":
            row = _open_clip_row(references.open_clip, arch, tag)
            for qc in QC_DATASETS:
                if row is None:
                    value, source = np.nan, f"missing: no ({arch}, {tag}) row in {OPEN_CLIP_FILE}"
                else:
                    value = 100.0 * float(row[qc.open_clip_column])
                    source = f"{OPEN_CLIP_FILE}: ({row['name']}, {tag}) [{qc.open_clip_column}]"
                records.append((model_id, qc.dataset, value, source))
        else:
            name, size = f"{arch}.{tag}", int(model["resolution"])
            for qc in QC_DATASETS:
                if qc.timm_file is None:
                    records.append((model_id, qc.dataset, np.nan, f"missing: timm publishes no {qc.dataset} results"))
                    continue
                table = references.timm[qc.timm_file]
                rows = table[table["model"] == name]
                at_size = rows[rows["img_size"] == size]
                if len(at_size):
                    value, source = float(at_size["top1"].iloc[0]), f"{qc.timm_file}: {name} @ {size}px"
                elif len(rows):
                    sizes = ", ".join(str(s) for s in sorted(rows["img_size"].unique()))
                    value, source = np.nan, f"missing: {qc.timm_file} has {name} only at img_size {sizes}, not {size}"
                else:
                    value, source = np.nan, f"missing: no {name} row in {qc.timm_file}"
                records.append((model_id, qc.dataset, value, source))
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
