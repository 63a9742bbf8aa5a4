"""The tidy metrics table: its columns, dataset names and units, its parquet files, and the settings it is computed
with (:class:`MetricSettings`; :func:`settings_record`: what ``settings.json`` records).

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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from clip_robustness.metrics.calibration import POOLINGS
from clip_robustness.metrics.imagenet_x import IMAGENET_X_FACTORS
from clip_robustness.metrics.ood import OOD_SCORES
from clip_robustness.names import IMAGENET_C_DATASET, id_test_dataset
from clip_robustness.workflow.io import atomic_path

METRIC_COLUMNS: tuple[str, ...] = ("model", "dataset", "metric", "value", "factor", "score")
#: Dataset name of the ImageNet-X rows (annotated, prototype-filtered subset of ImageNet val).
IMAGENET_X_DATASET = "imagenet_x"
#: Schema metadata key of the per-model parquet files (JSON: model id and settings).
METADATA_KEY = "clip_robustness_metrics"


class MetricsInputError(ValueError):
    """An input of the metric stage cannot be used; the message names the file, model or key."""


def tidy_row(
    model: str, dataset: str, metric: str, value: float, factor: str | None = None, score: str | None = None
) -> dict:
    """One tidy row (:data:`METRIC_COLUMNS`)."""
    return {
        "model": model,
        "dataset": dataset,
        "metric": metric,
        "value": float(value),
        "factor": factor,
        "score": score,
    }


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
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}), METADATA_KEY.encode(): json.dumps(dict(metadata), sort_keys=True).encode()}
    )
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


# ----------------------------------------------------------------------------- settings

#: True-positive rate of the FPR@TPR metric (``fpr95``).
FPR_TPR = 0.95


@dataclass(frozen=True)
class MetricSettings:
    """The conventions the metrics are computed with (config ``metrics`` plus pinned choices).

    ``ece_bins``: equal-width ECE bins over confidence. ``calibration_split_seed``: seed of the
    50/50 split of ImageNet val. ``temperature_range``: search interval of the temperature.
    ``ood_score``: the primary OOD score (all scores are always computed). ``objectnet_pooling``: how a
    grouped label space (ObjectNet) pools its classes, for top-1 and calibration alike
    (:data:`~clip_robustness.metrics.calibration.POOLINGS`). The ImageNet-X fields
    are the ``imagenet_x.load_annotations`` options and the factors reported.
    """

    ece_bins: int = 15
    calibration_split_seed: int = 0
    temperature_range: tuple[float, float] = (0.01, 10.0)
    ood_score: str = "msp"
    objectnet_pooling: str = POOLINGS[0]
    fpr_tpr: float = FPR_TPR
    imagenet_x_which_factor: str = "top"
    imagenet_x_filter_prototypes: bool = True
    imagenet_x_factors: tuple[str, ...] = field(default=IMAGENET_X_FACTORS)

    @classmethod
    def from_config(cls, metrics_config: Mapping[str, Any]) -> "MetricSettings":
        """Settings from the config's ``metrics`` block; raises :class:`MetricsInputError` naming a missing key."""
        required = ("ece_bins", "calibration_split_seed", "temperature_range", "ood_score")
        missing = [key for key in required if key not in metrics_config]
        if missing:
            raise MetricsInputError(f"config metrics: missing key(s) {missing}")
        if metrics_config["ood_score"] not in OOD_SCORES:
            raise MetricsInputError(
                f"config metrics.ood_score: {metrics_config['ood_score']!r} is not one of {list(OOD_SCORES)}"
            )
        low, high = metrics_config["temperature_range"]
        pooling = str(metrics_config.get("objectnet_pooling", cls.objectnet_pooling))
        if pooling not in POOLINGS:
            raise MetricsInputError(f"config metrics.objectnet_pooling: {pooling!r} is not one of {list(POOLINGS)}")
        return cls(
            ece_bins=int(metrics_config["ece_bins"]),
            calibration_split_seed=int(metrics_config["calibration_split_seed"]),
            temperature_range=(float(low), float(high)),
            ood_score=str(metrics_config["ood_score"]),
            objectnet_pooling=pooling,
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["temperature_range"] = list(self.temperature_range)
        out["imagenet_x_factors"] = list(self.imagenet_x_factors)
        return out


def library_versions() -> dict[str, str]:
    """Versions of the libraries the metric values depend on."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("clip-robustness", "numpy", "pandas", "pyarrow", "scipy", "scikit-learn", "imagenet-x"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def settings_record(
    settings: MetricSettings, in_distribution: str, n_imagenet_x_annotated: int | None = None
) -> dict[str, Any]:
    """What ``settings.json`` records: the settings, dataset naming, units and library versions."""
    return {
        "settings": settings.to_dict(),
        "conventions": {
            "ece": f"{settings.ece_bins} equal-width bins (lo, hi] over top-label confidence, weighted |acc - conf|, percent",
            "nll": "mean -log p(true class), natural log, float64",
            "temperature": f"one T per model minimising NLL on the calibration half of {in_distribution}, searched in {list(settings.temperature_range)}",
            "calibration_split": f"{in_distribution} file names sorted, shuffled with numpy default_rng({settings.calibration_split_seed}); first n//2 = calibration half",
            "ood": "ID = whole in-distribution set, positive; score >= threshold means ID",
            "fpr95": f"fraction of OOD images scored >= the threshold keeping {settings.fpr_tpr:.0%} of ID images (ties kept)",
            "primary_ood_score": settings.ood_score,
            "label_spaces": "top1/ece/nll use the dataset's label space from its manifest; OOD scores use all 1000 classes",
            "objectnet_pooling": f"grouped label spaces (ObjectNet) pool the 1000-way output onto their groups by "
            f"{settings.objectnet_pooling}, for top1 and calibration alike",
        },
        "datasets": {
            in_distribution: "whole in-distribution set: top1; ID side of OOD metrics",
            id_test_dataset(in_distribution): "in-distribution test half: top1 and calibration",
            IMAGENET_C_DATASET: "ImageNet-C as one test condition: mean over its corruptions and severities",
            IMAGENET_X_DATASET: "ImageNet-X annotated, prototype-filtered subset of ImageNet val",
        },
        "n_imagenet_x_annotated": n_imagenet_x_annotated,
        "units": {
            "top1": "fraction",
            "factor_accuracy": "fraction",
            "effective_robustness": "fraction",
            "auroc": "fraction",
            "fpr95": "fraction",
            "ece": "percent",
            "ece_ts": "percent",
            "nll": "nats",
            "nll_ts": "nats",
            "temperature": "divisor of the logits",
            "error_ratio": "ratio",
            "shape_bias": "fraction",
            "shape_fraction": "fraction",
            "texture_fraction": "fraction",
            "n_cue_conflict": "images",
        },
        "library_versions": library_versions(),
    }
