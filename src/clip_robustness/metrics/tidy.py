"""The tidy metrics table: its columns, dataset names and units, and its parquet files.

Tidy table columns (:data:`METRIC_COLUMNS`): ``model, dataset, metric, value, factor, score``;
``factor`` is set on ImageNet-X rows, ``score`` on OOD rows (``msp``, ``mcm``, ``max_logit``), both
are null elsewhere. Units of ``value``: ``top1``, ``factor_accuracy``, ``auroc``, ``fpr95``,
``effective_robustness`` are fractions (accuracy / rate in [0, 1]); ``ece``, ``ece_ts`` percent
(0..100); ``nll``, ``nll_ts`` nats per image; ``temperature`` the divisor of the logits (> 0);
``error_ratio`` a ratio (1 = as hard as the whole annotated set).

Dataset names used in the rows (``ID`` = the in-distribution dataset id, normally ``imagenet_val``):

- ``ID``: the whole ImageNet val set (50,000 images): ``top1``. It is also the ID side of every
  OOD row, but those rows name the OOD set as ``dataset``.
- ``ID_id_test``: the in-distribution test half (:func:`~clip_robustness.metrics.calibration.calibration_split`):
  ``top1, ece, nll, temperature, ece_ts, nll_ts``. The calibration half only fits the temperature.
- every test condition id: ``top1, ece, nll, temperature, ece_ts, nll_ts`` (``temperature`` repeats
  the model's one temperature, fitted on the calibration half, so each dataset's rows are complete).
- ``imagenet_x``: the ImageNet-X annotated, prototype-filtered subset of ImageNet val: ``top1``
  (accuracy over the whole subset, imagenet-x's "average"), and per factor ``factor_accuracy``,
  ``error_ratio`` and (aggregate table only) ``effective_robustness``.
- every OOD set id: ``auroc`` and ``fpr95`` per ``score``, ImageNet val (whole) as the ID side.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from clip_robustness.workflow.io import atomic_path

METRIC_COLUMNS: tuple[str, ...] = ("model", "dataset", "metric", "value", "factor", "score")
#: Dataset name of the ImageNet-X rows (annotated, prototype-filtered subset of ImageNet val).
IMAGENET_X_DATASET = "imagenet_x"
#: Schema metadata key of the per-model parquet files (JSON: model id and settings).
METADATA_KEY = "clip_robustness_metrics"


class MetricsInputError(ValueError):
    """An input of the metric stage cannot be used; the message names the file, model or key."""


def tidy_row(model: str, dataset: str, metric: str, value: float, factor: str | None = None, score: str | None = None) -> dict:
    """One tidy row (:data:`METRIC_COLUMNS`)."""
    return {"model": model, "dataset": dataset, "metric": metric, "value": float(value), "factor": factor, "score": score}


def tidy_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """A tidy metrics frame with the canonical columns and dtypes (strings; ``value`` float64)."""
    frame = pd.DataFrame(list(rows), columns=list(METRIC_COLUMNS))
    for column in ("model", "dataset", "metric", "factor", "score"):
        frame[column] = frame[column].astype("string")
    frame["value"] = frame["value"].astype(np.float64)
    return frame


def write_metrics_table(frame: pd.DataFrame, path: str | os.PathLike, metadata: Mapping[str, Any]) -> Path:
    """Write a tidy frame as parquet atomically (temp file, then rename), with JSON ``metadata``."""
    path = Path(path)
    table = pa.Table.from_pandas(tidy_frame(frame.to_dict("records")), preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), METADATA_KEY.encode(): json.dumps(dict(metadata), sort_keys=True).encode()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return path


def read_metrics_table(path: str | os.PathLike) -> tuple[pd.DataFrame, dict]:
    """A tidy per-model table and its JSON metadata; :class:`MetricsInputError` names a malformed file."""
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise MetricsInputError(f"{path}: not a readable metrics table ({exc}); delete it and rerun snakemake") from exc
    missing = [c for c in METRIC_COLUMNS if c not in table.column_names]
    if missing:
        raise MetricsInputError(f"{path}: metrics table lacks column(s) {missing}; delete it and rerun snakemake")
    raw = (table.schema.metadata or {}).get(METADATA_KEY.encode())
    metadata = json.loads(raw) if raw else {}
    return tidy_frame(table.select(list(METRIC_COLUMNS)).to_pandas().to_dict("records")), metadata
