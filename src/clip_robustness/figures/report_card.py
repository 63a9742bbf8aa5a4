"""The report card of a user's own model (registry ``study`` ``own``): one standalone HTML page in the report.

What it shows, each from the file the pipeline already writes:

- the model's metrics (top-1 per dataset, ImageNet-X error ratio per factor, ECE before and after temperature
  scaling, OOD AUROC per set and score) beside the median, range (min-max) and size of each paper group, and the
  model's percentile within each group (:func:`group_comparison`; tidy metrics table and model registry). Only the
  paper's models make up a group (:func:`clip_robustness.models.registry.paper_rows`);
- its place on each figure: the figure it is highlighted in, and its percentile within each paper group on that
  figure's y-axis metric, the median over the figure's panels (:func:`figure_places`);
- its published-accuracy QC rows (``results/qc/published_accuracy.csv``), when its library publishes a number;
- the provenance of its logits: the cache metadata of every logits file (library versions, preprocessing, prompt
  set, precision, head precision; :func:`logits_provenance`) and the weights record with each file's sha256.

Values are in the units of the metrics table: accuracies and AUROC fractions, ECE percent, error ratio a ratio
(1 = as good as on the whole annotated set). A percentile is the share of a group's models with a lower value,
ties counted half (0-100; for ECE and error ratio, lower values are better).
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from clip_robustness.figures import FIGURES, FigureSpec
from clip_robustness.figures.data import check_metrics, check_models_known
from clip_robustness.figures.style import GROUP_ORDER, dataset_title, group_label
from clip_robustness.models.registry import paper_rows
from clip_robustness.names import QC_TABLE, cache_path, figure_path, weights_record_path

#: The metrics of the card's first table, in order, with their description and unit.
CARD_METRICS: dict[str, str] = {
    "top1": "Top-1 accuracy (fraction)",
    "error_ratio": "ImageNet-X error ratio (lower is better; 1 = as on all annotated images)",
    "ece": "ECE before temperature scaling (%, lower is better)",
    "ece_ts": "ECE after temperature scaling on ImageNet (%, lower is better)",
    "auroc": "OOD AUROC (fraction, ImageNet val positive)",
}
#: Columns of :func:`group_comparison`.
COMPARISON_COLUMNS: tuple[str, ...] = (
    "metric",
    "dataset",
    "factor",
    "score",
    "value",
    "group",
    "n",
    "median",
    "min",
    "max",
    "percentile",
)
#: Cache-metadata fields shown as the logits' provenance (those equal in every file once; the others per dataset).
PROVENANCE_FIELDS: tuple[str, ...] = (
    "library",
    "library_version",
    "architecture",
    "pretrained",
    "weights_file",
    "preprocessing",
    "input_pipeline",
    "prompt_set",
    "logit_scale",
    "precision",
    "head_precision",
    "torch_version",
    "cuda_version",
    "gpu_name",
    "python_version",
    "pipeline_version",
)
#: Per-dataset cache-metadata fields, always shown per file.
PER_FILE_FIELDS: tuple[str, ...] = ("dataset", "manifest_hash", "n_images", "created_utc")
_KEYS = ["metric", "dataset", "factor", "score"]


def group_comparison(metrics: pd.DataFrame, registry: pd.DataFrame, model: str) -> pd.DataFrame:
    """One row per metric row of ``model`` (``metric, dataset, factor, score``) and paper group with that row:
    the model's ``value``, the group's ``n`` models, ``median``, ``min``, ``max``, and the model's ``percentile``
    within the group (columns :data:`COMPARISON_COLUMNS`), in the metrics table's row order, groups in legend order.
    Only the paper's models make up a group; a row no paper model has keeps ``group`` NaN."""
    metrics = check_metrics(metrics)
    check_models_known(metrics, registry)
    keyed = metrics.assign(**{k: metrics[k].fillna("") for k in ("factor", "score")})
    mine = keyed[keyed["model"] == model][[*_KEYS, "value"]]
    if mine.empty:
        raise ValueError(f"report card: the metrics table has no rows for model {model!r}")
    paper = paper_rows(registry)[["model_id", "group"]].rename(columns={"model_id": "model"})
    peers = keyed.merge(paper, on="model").merge(mine.rename(columns={"value": "own"}), on=_KEYS)
    peers = peers[peers["model"] != model]
    grouped = peers.groupby([*_KEYS, "group"], sort=False)
    summary = grouped["value"].agg(n="count", median="median", min="min", max="max")
    # No paper model shares any of the model's rows: every row keeps ``group`` NaN (apply on no group gives a frame).
    summary["percentile"] = (
        grouped.apply(
            lambda part: stats.percentileofscore(part["value"], part["own"].iloc[0], kind="mean"), include_groups=False
        )
        if len(summary)
        else np.nan
    )
    out = mine.assign(_position=range(len(mine))).merge(summary.reset_index(), on=_KEYS, how="left")
    rank = {g: i for i, g in enumerate(GROUP_ORDER)}
    out = out.assign(_rank=out["group"].map(lambda g: rank.get(g, len(rank))))
    out = out.sort_values(
        ["_position", "_rank"], kind="stable"
    )  # the metrics table's row order, groups in legend order
    for column in ("factor", "score"):
        out[column] = out[column].replace("", None)
    return out[list(COMPARISON_COLUMNS)].reset_index(drop=True)


def figure_places(comparison: pd.DataFrame, figures: Sequence[FigureSpec] = FIGURES) -> pd.DataFrame:
    """Where the model lies on each figure: one row per figure (``figure``, ``y_metric``, ``score``) and paper group
    with ``panels`` (the model's rows of that metric) and ``percentile``, the median over those panels of its
    percentile within the group. A figure on whose metric the model has no rows gets one row with ``group`` NaN."""
    rows = []
    for spec in figures:
        score = spec.fixed_options.get("score")
        part = comparison[comparison["metric"] == spec.y_metric]
        part = part[part["score"] == score] if score is not None else part[part["score"].isna()]
        base = {"figure": figure_path(spec.name), "y_metric": spec.y_metric, "score": score}
        per_group = part.dropna(subset=["group"]).groupby("group", sort=False)
        if not len(per_group):
            rows.append({**base, "group": None, "panels": 0, "percentile": np.nan})
        for group, members in per_group:
            rows.append(
                {**base, "group": group, "panels": len(members), "percentile": float(members["percentile"].median())}
            )
    return pd.DataFrame(rows, columns=["figure", "y_metric", "score", "group", "panels", "percentile"])


def _shown(value: Any) -> str:
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)


def logits_provenance(metadata: Mapping[str, Mapping[str, Any]]) -> tuple[dict[str, str], pd.DataFrame]:
    """The provenance of a model's logits from each file's cache metadata (``dataset -> metadata``, as
    :func:`clip_robustness.logits.cache.read_metadata` returns it): the :data:`PROVENANCE_FIELDS` equal in every file
    (``field -> value``, dicts as JSON), and a per-file table of :data:`PER_FILE_FIELDS` plus the fields that differ."""
    frame = pd.DataFrame(
        [
            {
                "dataset": dataset,
                **{f: _shown(m.get(f)) for f in PROVENANCE_FIELDS},
                **{f: _shown(m.get(f)) for f in PER_FILE_FIELDS[1:]},
            }
            for dataset, m in metadata.items()
        ],
        columns=[*PER_FILE_FIELDS, *PROVENANCE_FIELDS],
    )
    shared = [f for f in PROVENANCE_FIELDS if frame[f].nunique() == 1]
    common = {f: frame[f].iloc[0] for f in shared}
    return common, frame.drop(columns=shared)


@dataclass(frozen=True)
class ReportCard:
    """Everything a report card shows (see the module docstring); :func:`render_html` writes it as a page."""

    model: str
    registry_row: dict[str, Any]
    comparison: pd.DataFrame
    places: pd.DataFrame
    qc: pd.DataFrame
    provenance: dict[str, str]
    provenance_per_file: pd.DataFrame
    weights: dict[str, Any]


def report_card(
    model: str,
    metrics: pd.DataFrame,
    registry: pd.DataFrame,
    qc: pd.DataFrame,
    logits_metadata: Mapping[str, Mapping[str, Any]],
    weights_record: Mapping[str, Any],
) -> ReportCard:
    """The report card of ``model`` from the tidy ``metrics`` table, the model ``registry`` table, the published-accuracy
    ``qc`` table, its logits files' cache metadata (``dataset -> metadata``) and its weights record."""
    row = registry[registry["model_id"] == model]
    if row.empty:
        raise ValueError(f"report card: model {model!r} is not in the model registry")
    comparison = group_comparison(metrics, registry, model)
    common, per_file = logits_provenance(logits_metadata)
    return ReportCard(
        model=model,
        registry_row=row.iloc[0].to_dict(),
        comparison=comparison,
        places=figure_places(comparison),
        qc=qc[qc["model"] == model].drop(columns="model").reset_index(drop=True),
        provenance=common,
        provenance_per_file=per_file,
        weights=dict(weights_record),
    )


# ---------------------------------------------------------------------------------------------- HTML

_CSS = """
body { font-family: system-ui, sans-serif; font-size: 14px; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0; } th, td { border: 1px solid #ddd; padding: 2px 6px; }
th { background: #f3f3f3; text-align: left; } td { font-variant-numeric: tabular-nums; }
code { font-size: 0.95em; } .note { color: #555; }
"""


def _number(value: Any, digits: int = 4) -> str:
    return "—" if value is None or (isinstance(value, float) and not np.isfinite(value)) else f"{value:.{digits}f}"


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, na_rep="—", border=0, escape=True)


def metrics_display(comparison: pd.DataFrame, dataset_titles: Mapping[str, str] | None = None) -> pd.DataFrame:
    """The card's metrics table: one row per metric row of the model (:data:`CARD_METRICS` only), its value, and per
    paper group one column ``median [min, max] (n) · percentile``. ``dataset_titles``: the names the datasets are
    shown by (the dataset registry's; default: their ids)."""
    titles = dict(dataset_titles or {})
    shown = comparison[comparison["metric"].isin(CARD_METRICS)]
    order = {m: i for i, m in enumerate(CARD_METRICS)}
    shown = shown.assign(_order=shown["metric"].map(order)).sort_values(
        "_order", kind="stable"
    )  # datasets: table order
    cell = [
        "—"
        if pd.isna(r.group)
        else f"{_number(r.median)} [{_number(r.min)}, {_number(r.max)}] (n={int(r.n)}) · p{r.percentile:.0f}"
        for r in shown.itertuples()
    ]
    shown = shown.assign(
        Metric=shown["metric"].map(CARD_METRICS),
        Dataset=shown["dataset"].map(lambda dataset: dataset_title(dataset, titles)),
        Detail=[
            " / ".join(str(v) for v in (f, s) if v is not None and not pd.isna(v))
            for f, s in zip(shown["factor"], shown["score"])
        ],
        Value=shown["value"].map(_number),
        cell=cell,
        column=shown["group"].map(
            lambda g: "—" if pd.isna(g) else f"{group_label(g)}: median [min, max] (n) · percentile"
        ),
    )
    index = ["Metric", "Dataset", "Detail", "Value"]
    wide = shown.pivot_table(index=index, columns="column", values="cell", aggfunc="first", sort=False)
    wide = wide.drop(columns="—", errors="ignore")
    wide.columns.name = None
    return wide.reset_index()


def places_display(places: pd.DataFrame) -> pd.DataFrame:
    """The card's figure table: figure, y metric, and the model's median percentile within each paper group."""
    frame = places.assign(
        cell=[
            (
                "the model has no rows of this metric"
                if pd.isna(g)
                else "—"
                if pd.isna(p)
                else f"p{p:.0f} over {int(n)} panel(s)"
            )
            for g, p, n in zip(places["group"], places["percentile"], places["panels"])
        ],
        column=places["group"].map(lambda g: "Note" if pd.isna(g) else group_label(g)),
        y=[m if s is None or pd.isna(s) else f"{m} ({s})" for m, s in zip(places["y_metric"], places["score"])],
    )
    wide = frame.pivot_table(index=["figure", "y"], columns="column", values="cell", aggfunc="first", sort=False)
    wide.columns.name = None
    return wide.reset_index().rename(columns={"figure": "Figure (the model is the labelled ring)", "y": "y axis"})


def card_data(card: ReportCard) -> dict[str, Any]:
    """The card's machine-readable summary, embedded in the page as JSON (``<script id="report-card-data">``):
    model id, registry row, the model's metric rows, its weights record and the shared logits provenance."""
    rows = card.comparison[_KEYS + ["value"]].drop_duplicates(_KEYS)
    return {
        "model": card.model,
        "registry_row": {k: (None if pd.isna(v) else v) for k, v in card.registry_row.items()},
        "metrics": rows.astype(object).where(rows.notna(), None).to_dict("records"),  # floats exact (JSON repr)
        "weights": card.weights,
        "logits_provenance": card.provenance,
    }


def render_html(card: ReportCard, dataset_titles: Mapping[str, str] | None = None) -> str:
    """The report card as one standalone HTML page (inline CSS, no external resources); ``dataset_titles``: the names
    the datasets are shown by (:func:`metrics_display`)."""
    e = html.escape
    row = card.registry_row
    files = pd.DataFrame(card.weights.get("files", []), columns=["file", "size", "sha256", "source"])
    data = json.dumps(card_data(card), sort_keys=True, default=str).replace("</", "<\\/")
    registry_items = "".join(f"<tr><th>{e(str(k))}</th><td>{e(str(v))}</td></tr>" for k, v in row.items())
    provenance_items = "".join(
        f"<tr><th>{e(k)}</th><td><code>{e(v)}</code></td></tr>" for k, v in card.provenance.items()
    )
    qc = _table(card.qc) if len(card.qc) else "<p class='note'>No QC rows for this model.</p>"
    weights = _table(files) if len(files) else "<p class='note'>No weights files: the model has random weights.</p>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Report card: {e(card.model)}</title><style>{_CSS}</style></head>
<body>
<h1>Report card: <code>{e(card.model)}</code></h1>
<p class="note">A model of your own (registry study <code>{e(str(row.get("study", "")))}</code>), measured like the paper's
models and compared with them; it is never part of the paper's groups, medians, trend lines or findings.
Percentile: share of the group's models with a lower value (ties half), 0-100.</p>
<h2>Registry row</h2>
<table>{registry_items}</table>
<h2>Metrics beside the paper's groups</h2>
{_table(metrics_display(card.comparison, dataset_titles))}
<h2>Place on the figures</h2>
<p class="note">In every figure the model is drawn as a hollow black ring labelled <code>{e(card.model)}</code>.
The percentile is on the figure's y-axis metric, median over the figure's panels.</p>
{_table(places_display(card.places))}
<h2>QC against published accuracy</h2>
<p class="note">Top-1 in percent; diff_pp = ours minus published ({QC_TABLE}).</p>
{qc}
<h2>Provenance of the logits</h2>
<p class="note">From the cache metadata of each logits file ({e(cache_path(card.model, "*"))}): fields equal
in every file, then the per-file ones.</p>
<table>{provenance_items}</table>
{_table(card.provenance_per_file)}
<h2>Weights</h2>
<p>Library {e(str(card.weights.get("library", "")))} {e(str(card.weights.get("library_version", "")))}
({e(weights_record_path(card.model))})</p>
{weights}
<script type="application/json" id="report-card-data">{data}</script>
</body></html>
"""
