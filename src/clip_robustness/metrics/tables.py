"""Tidy metric tables: one model's metrics from its cached logits, and the aggregate over models.

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
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from clip_robustness.datasets.label_spaces import LabelSpace
from clip_robustness.metrics.accuracy import check_logits_and_labels
from clip_robustness.metrics.calibration import (
    POOLINGS,
    calibration_split,
    expected_calibration_error,
    fit_temperature,
    predict,
)
from clip_robustness.metrics.imagenet_x import (
    ALL_ANNOTATED,
    IMAGENET_X_FACTORS,
    effective_robustness,
    error_ratios,
    factor_accuracies,
    label_disagreements,
)
from clip_robustness.metrics.ood import OOD_SCORES, auroc, fpr_at_tpr, ood_scores
from clip_robustness.models.registry import paper_rows
from clip_robustness.names import IMAGENET_C_DATASET, IMAGENET_C_PATTERN, REFERENCE_GROUP, id_test_dataset
from clip_robustness.workflow.io import atomic_path

log = logging.getLogger(__name__)

METRIC_COLUMNS: tuple[str, ...] = ("model", "dataset", "metric", "value", "factor", "score")
#: Dataset name of the ImageNet-X rows (annotated, prototype-filtered subset of ImageNet val).
IMAGENET_X_DATASET = "imagenet_x"
#: Metrics averaged into the ImageNet-C condition (accuracy, calibration before and after TS).
IMAGENET_C_METRICS: tuple[str, ...] = ("top1", "ece", "nll", "temperature", "ece_ts", "nll_ts")
#: Schema metadata key of the per-model parquet files (JSON: model id and settings).
METADATA_KEY = "clip_robustness_metrics"
#: True-positive rate of the FPR@TPR metric (``fpr95``).
FPR_TPR = 0.95


def imagenet_c_mean_rows(metrics: pd.DataFrame) -> pd.DataFrame:
    """Tidy rows of the ImageNet-C condition (dataset :data:`IMAGENET_C_DATASET`): per model and metric of
    :data:`IMAGENET_C_METRICS`, the mean over every ImageNet-C (corruption, severity) dataset in ``metrics``.

    A model that lacks some of the ImageNet-C datasets the table holds gets no row for that metric (a mean
    over fewer corruptions would not be comparable). No rows when the table has no ImageNet-C dataset.
    """
    rows = metrics[metrics["dataset"].astype(str).str.match(IMAGENET_C_PATTERN.pattern) & metrics["factor"].isna()
                   & metrics["score"].isna() & metrics["metric"].isin(IMAGENET_C_METRICS)]
    if rows.empty:
        return tidy_frame([])
    expected = rows["dataset"].nunique()
    grouped = rows.groupby(["model", "metric"])["value"].agg(["mean", "count"]).reset_index()
    incomplete = grouped[grouped["count"] < expected]
    if not incomplete.empty:
        log.warning("ImageNet-C mean: %d (model, metric) pairs lack some of the %d ImageNet-C datasets, e.g. %s: no mean for them",
                    len(incomplete), expected, incomplete.head(3)[["model", "metric"]].to_dict("records"))
    complete = grouped[grouped["count"] == expected]
    return tidy_frame([_row(str(m), IMAGENET_C_DATASET, str(k), v) for m, k, v in complete[["model", "metric", "mean"]].itertuples(index=False)])


class MetricsInputError(ValueError):
    """An input of the metric stage cannot be used; the message names the file, model or key."""


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
            raise MetricsInputError(f"config metrics.ood_score: {metrics_config['ood_score']!r} is not one of {list(OOD_SCORES)}")
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


@dataclass(frozen=True)
class DatasetLogits:
    """One model's cached logits on one dataset, joined to the dataset's manifest.

    ``logits``: float32 [n, 1000]. ``labels``: ImageNet-1k index per image ([n], -1 for OOD).
    ``label_space``: the classes the dataset is scored on (``None`` for OOD sets).
    ``file_names``: image file names (basenames) in row order; needed for ImageNet val (split and
    ImageNet-X join). ``logit_scale``: zero-shot CLIP's multiplier of the cosine similarities.
    """

    dataset: str
    logits: np.ndarray
    labels: np.ndarray
    label_space: LabelSpace | None = None
    file_names: np.ndarray | None = None
    logit_scale: float | None = None


def load_dataset_logits(
    dataset: str,
    logits_path: str | os.PathLike,
    manifest_path: str | os.PathLike,
    registry_row: Mapping[str, Any] | None = None,
    prompt_set: str | None = None,
) -> DatasetLogits:
    """Read one logits cache and join it to its manifest (label space, file names).

    The cache's metadata must name ``dataset`` and the manifest's hash and, given the model's
    ``registry_row`` (and the config's zero-shot ``prompt_set``), that model
    (``clip_robustness.logits.cache.expected_metadata``); otherwise ``StaleCacheError``. Raises
    :class:`MetricsInputError` naming the file when the cache indexes rows the manifest lacks or
    disagrees with the manifest's labels.
    """
    from clip_robustness.datasets.manifest import read_manifest
    from clip_robustness.logits.cache import expected_metadata, read_logits

    manifest = read_manifest(manifest_path)
    manifest_hash = manifest.metadata.get("manifest_hash")
    if registry_row is not None:
        expect = expected_metadata(registry_row, dataset, manifest_hash, prompt_set)
    else:
        expect = {"dataset": dataset, "manifest_hash": manifest_hash}
    cached = read_logits(logits_path, expect=expect)
    n_manifest = len(manifest.table)
    index = cached.index.astype(np.int64)
    if len(index) and (index.min() < 0 or index.max() >= n_manifest):
        raise MetricsInputError(
            f"{logits_path}: rows index up to {int(index.max())} but manifest {manifest_path} has {n_manifest} rows; "
            "the cache is stale: delete it and rerun snakemake"
        )
    manifest_labels = manifest.table["label"].to_numpy().astype(np.int64)[index]
    labels = cached.labels.astype(np.int64)
    if not np.array_equal(manifest_labels, labels):
        n_bad = int((manifest_labels != labels).sum())
        raise MetricsInputError(
            f"{logits_path}: {n_bad} labels differ from manifest {manifest_path}; the cache is stale: delete it and rerun snakemake"
        )
    file_names = np.asarray(manifest.file_names, dtype=object)[index]
    scale = cached.metadata.get("logit_scale")
    label_space = manifest.label_space
    if np.all(labels < 0):
        label_space = None  # an OOD set: scored over all 1000 classes, no label space
    return DatasetLogits(
        dataset=dataset,
        logits=cached.logits,
        labels=labels,
        label_space=label_space,
        file_names=file_names,
        logit_scale=None if scale is None else float(scale),
    )


def model_metrics_from_files(
    model: str,
    logits_paths: Mapping[str, str | os.PathLike],
    manifest_paths: Mapping[str, str | os.PathLike],
    in_distribution: str,
    test_conditions: Sequence[str],
    ood_sets: Sequence[str],
    settings: MetricSettings,
    zero_shot: bool,
    registry_row: Mapping[str, Any] | None = None,
    prompt_set: str | None = None,
    annotations: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """:func:`model_metrics_table` from cache and manifest files (dataset id -> path), one file in memory at a time.

    Raises :class:`MetricsInputError` naming the dataset when a role's dataset has no file.
    """
    for dataset in (in_distribution, *test_conditions, *ood_sets):
        for kind, paths in (("logits", logits_paths), ("manifest", manifest_paths)):
            if dataset not in paths:
                raise MetricsInputError(f"model {model!r}: no {kind} file given for dataset {dataset!r}")

    def load(dataset: str) -> DatasetLogits:
        log.info("%s: reading %s", model, logits_paths[dataset])
        return load_dataset_logits(dataset, logits_paths[dataset], manifest_paths[dataset], registry_row, prompt_set)

    return model_metrics_table(
        model,
        load(in_distribution),
        (load(d) for d in test_conditions),
        (load(d) for d in ood_sets),
        settings,
        zero_shot,
        annotations,
    )


def _row(model: str, dataset: str, metric: str, value: float, factor: str | None = None, score: str | None = None) -> dict:
    return {"model": model, "dataset": dataset, "metric": metric, "value": float(value), "factor": factor, "score": score}


def tidy_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """A tidy metrics frame with the canonical columns and dtypes (strings; ``value`` float64)."""
    frame = pd.DataFrame(list(rows), columns=list(METRIC_COLUMNS))
    for column in ("model", "dataset", "metric", "factor", "score"):
        frame[column] = frame[column].astype("string")
    frame["value"] = frame["value"].astype(np.float64)
    return frame


def calibration_rows(
    model: str,
    dataset: str,
    logits: np.ndarray,
    labels: np.ndarray,
    label_space: LabelSpace | None,
    temperature: float,
    ece_bins: int,
    pooling: str = POOLINGS[0],
) -> list[dict]:
    """Rows ``top1, ece, nll, temperature, ece_ts, nll_ts`` of one labelled dataset (``pooling``: of a grouped
    label space, for top-1 and calibration alike)."""
    before = predict(logits, labels, label_space, pooling=pooling)
    after = predict(logits, labels, label_space, temperature, pooling=pooling)
    return [
        _row(model, dataset, "top1", before.accuracy),
        _row(model, dataset, "ece", expected_calibration_error(before.confidence, before.correct, ece_bins)),
        _row(model, dataset, "nll", before.mean_nll),
        _row(model, dataset, "temperature", temperature),
        _row(model, dataset, "ece_ts", expected_calibration_error(after.confidence, after.correct, ece_bins)),
        _row(model, dataset, "nll_ts", after.mean_nll),
    ]


def imagenet_x_rows(
    model: str,
    file_names: Sequence[str],
    logits: np.ndarray,
    labels: np.ndarray,
    annotations: pd.DataFrame,
    factors: Sequence[str],
) -> list[dict]:
    """Rows of the ImageNet-X subset: ``top1`` (all annotated images), per factor ``factor_accuracy``, ``error_ratio``.

    Factors without images among ``file_names`` are left out (logged). No rows when no image is annotated.
    """
    predicted = np.argmax(logits, axis=1)
    accuracies = factor_accuracies(file_names, predicted, annotations, factors)
    n_all = int(accuracies.loc[ALL_ANNOTATED, "n_images"])
    if n_all == 0:
        log.warning("%s: no ImageNet val file name matches an ImageNet-X annotation: no ImageNet-X rows", model)
        return []
    disagreements = label_disagreements(file_names, labels, annotations)
    if disagreements:
        log.warning(
            "%s: %d of %d annotated images have a manifest label different from ImageNet-X's class; "
            "ImageNet-X rows score against ImageNet-X's class (as imagenet_x does)",
            model, disagreements, n_all,
        )
    ratios = error_ratios(accuracies["accuracy"])
    rows = [_row(model, IMAGENET_X_DATASET, "top1", accuracies.loc[ALL_ANNOTATED, "accuracy"])]
    for factor in factors:
        if accuracies.loc[factor, "n_images"] == 0:
            log.warning("%s: no annotated image has ImageNet-X factor %r: no rows for it", model, factor)
            continue
        rows.append(_row(model, IMAGENET_X_DATASET, "factor_accuracy", accuracies.loc[factor, "accuracy"], factor=factor))
        rows.append(_row(model, IMAGENET_X_DATASET, "error_ratio", ratios[factor], factor=factor))
    return rows


def ood_rows(model: str, dataset: str, id_scores: Mapping[str, np.ndarray], ood: Mapping[str, np.ndarray], tpr: float) -> list[dict]:
    """Rows ``auroc`` and ``fpr95`` per score present in both ``id_scores`` and ``ood`` (ID positive)."""
    rows = []
    for score in OOD_SCORES:
        if score in id_scores and score in ood:
            rows.append(_row(model, dataset, "auroc", auroc(id_scores[score], ood[score]), score=score))
            rows.append(_row(model, dataset, "fpr95", fpr_at_tpr(id_scores[score], ood[score], tpr), score=score))
    return rows


def _mcm_scale(model: str, data: DatasetLogits, zero_shot: bool) -> float | None:
    if not zero_shot:
        return None
    if data.logit_scale is None:
        raise MetricsInputError(
            f"model {model!r} is zero-shot CLIP but its logits on {data.dataset!r} record no logit_scale: "
            "MCM needs it; recompute that cache"
        )
    return data.logit_scale


def model_metrics_table(
    model: str,
    in_distribution: DatasetLogits,
    test_conditions: Iterable[DatasetLogits],
    ood_sets: Iterable[DatasetLogits],
    settings: MetricSettings,
    zero_shot: bool,
    annotations: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Every metric of one model as a tidy frame (see the module docstring for datasets and units).

    ``in_distribution``: ImageNet val with ``file_names``. ``test_conditions`` and ``ood_sets`` may be
    lazy iterables (each dataset is loaded, scored and dropped in turn). ``zero_shot``: add MCM rows
    (needs ``logit_scale``). ``annotations``: ImageNet-X annotations (``None``: no ImageNet-X rows).
    """
    rows: list[dict] = []
    idd = in_distribution
    check_logits_and_labels(idd.logits, idd.labels, f"model {model!r}, dataset {idd.dataset!r}")
    if idd.file_names is None:
        raise MetricsInputError(f"model {model!r}: the in-distribution set {idd.dataset!r} needs file names")
    if np.any(idd.labels < 0):
        raise MetricsInputError(f"model {model!r}: in-distribution set {idd.dataset!r} has unlabelled (-1) images")
    id_space = idd.label_space or LabelSpace.imagenet_1k()

    full = predict(idd.logits, idd.labels, id_space)
    rows.append(_row(model, idd.dataset, "top1", full.accuracy))

    is_calibration = calibration_split(idd.file_names, settings.calibration_split_seed)
    temperature = fit_temperature(idd.logits[is_calibration], idd.labels[is_calibration], settings.temperature_range, id_space)
    log.info("%s: temperature %.4f fitted on %d calibration images of %s", model, temperature, int(is_calibration.sum()), idd.dataset)
    is_test = ~is_calibration
    rows += calibration_rows(
        model, id_test_dataset(idd.dataset), idd.logits[is_test], idd.labels[is_test], id_space, temperature, settings.ece_bins
    )

    if annotations is not None:
        rows += imagenet_x_rows(model, idd.file_names, idd.logits, idd.labels, annotations, settings.imagenet_x_factors)

    # with the full 1000-class space at T = 1, the confidence of `predict` is the MSP
    id_msp = full.confidence if id_space.is_full else None
    id_scores = ood_scores(idd.logits, _mcm_scale(model, idd, zero_shot), msp=id_msp)

    for data in test_conditions:
        try:
            rows += calibration_rows(model, data.dataset, data.logits, data.labels, data.label_space, temperature,
                                     settings.ece_bins, settings.objectnet_pooling)
        except ValueError as exc:
            raise MetricsInputError(f"model {model!r}, dataset {data.dataset!r}: {exc}") from exc
        log.info("%s: scored test condition %s (%d images)", model, data.dataset, len(data.labels))

    for data in ood_sets:
        try:
            scores = ood_scores(data.logits, _mcm_scale(model, data, zero_shot))
            rows += ood_rows(model, data.dataset, id_scores, scores, settings.fpr_tpr)
        except ValueError as exc:
            raise MetricsInputError(f"model {model!r}, OOD set {data.dataset!r}: {exc}") from exc
        log.info("%s: scored OOD set %s (%d images)", model, data.dataset, len(data.logits))
    return tidy_frame(rows)


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


def effective_robustness_rows(metrics: pd.DataFrame, reference_models: Sequence[str]) -> pd.DataFrame:
    """Tidy ``effective_robustness`` rows (dataset ``imagenet_x``, per factor) for every model.

    The fit uses ``reference_models`` (normally the registry's "standard" group) that have ImageNet-X
    rows; with fewer than 2 of them no rows are returned (a warning is logged).
    """
    subset = metrics[metrics["dataset"] == IMAGENET_X_DATASET]
    factor_acc = subset[subset["metric"] == "factor_accuracy"].pivot_table(index="model", columns="factor", values="value", aggfunc="first")
    overall = subset[(subset["metric"] == "top1") & subset["factor"].isna()].set_index("model")["value"]
    if factor_acc.empty or overall.empty:
        log.warning("no ImageNet-X rows in the metrics table: no effective_robustness rows")
        return tidy_frame([])
    factor_acc = factor_acc.join(overall.rename(ALL_ANNOTATED), how="inner")
    factor_acc.columns = [str(c) for c in factor_acc.columns]
    usable = [m for m in reference_models if m in factor_acc.index]
    if len(usable) < 2:
        log.warning(
            "effective robustness needs at least 2 reference ('standard') models with ImageNet-X rows, found %d (%s): "
            "no effective_robustness rows", len(usable), usable,
        )
        return tidy_frame([])
    robustness = effective_robustness(factor_acc, usable)
    rows = [
        _row(str(model), IMAGENET_X_DATASET, "effective_robustness", value, factor=str(factor))
        for model, per_factor in robustness.iterrows()
        for factor, value in per_factor.items()
        if np.isfinite(value)
    ]
    return tidy_frame(rows)


def aggregate_metrics(
    tables: Sequence[pd.DataFrame],
    registry: pd.DataFrame,
    reference_group: str = REFERENCE_GROUP,
) -> pd.DataFrame:
    """All per-model tables in one tidy frame, plus the ``effective_robustness`` rows and the ImageNet-C condition
    (:func:`imagenet_c_mean_rows`).

    ``registry``: the model registry table (``model_id``, ``group``, optional ``study``); the reference models of the
    effective-robustness fit are the paper's models (:func:`~clip_robustness.models.registry.paper_rows`) whose
    ``group`` is ``reference_group``; every model gets rows against that fit. Raises
    :class:`MetricsInputError` when a model is missing from the registry or appears in two tables.
    """
    if not tables:
        raise MetricsInputError("aggregate_metrics: no per-model metric tables")
    combined = pd.concat([tidy_frame(t.to_dict("records")) for t in tables], ignore_index=True)
    per_model = combined.groupby("model")["dataset"].size()
    known = set(registry["model_id"].astype(str))
    unknown = sorted(set(per_model.index) - known)
    if unknown:
        raise MetricsInputError(f"metrics tables for model(s) {unknown[:10]} that the model registry does not list")
    key = ["model", "dataset", "metric", "factor", "score"]
    duplicated = combined[combined.duplicated(key, keep=False)]
    if not duplicated.empty:
        raise MetricsInputError(f"duplicate metric rows, e.g. {duplicated.head(3).to_dict('records')}: a model appears in two tables")
    paper = paper_rows(registry)  # a user's own models are measured against the paper's fit, never part of it
    reference = paper.loc[paper["group"].astype(str) == reference_group, "model_id"].astype(str).tolist()
    extra = [frame for frame in (effective_robustness_rows(combined, reference), imagenet_c_mean_rows(combined)) if len(frame)]
    return pd.concat([combined, *extra], ignore_index=True) if extra else combined


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


def settings_record(settings: MetricSettings, in_distribution: str, n_imagenet_x_annotated: int | None = None) -> dict[str, Any]:
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
            "top1": "fraction", "factor_accuracy": "fraction", "effective_robustness": "fraction",
            "auroc": "fraction", "fpr95": "fraction", "ece": "percent", "ece_ts": "percent",
            "nll": "nats", "nll_ts": "nats", "temperature": "divisor of the logits", "error_ratio": "ratio",
        },
        "library_versions": library_versions(),
    }


@dataclass(frozen=True)
class AggregateResult:
    """What the aggregate rule writes: the tidy table, the OOD correlations and ``settings.json``."""

    metrics: pd.DataFrame
    correlations: pd.DataFrame
    settings: dict[str, Any]


def aggregate_from_files(
    table_paths: Sequence[str | os.PathLike],
    registry: pd.DataFrame,
    settings: MetricSettings,
    in_distribution: str,
    reference_group: str = REFERENCE_GROUP,
    n_imagenet_x_annotated: int | None = None,
) -> AggregateResult:
    """Read every per-model table, check they share ``settings``, and aggregate them.

    A per-model table computed under other settings (its parquet metadata) raises
    :class:`MetricsInputError` naming the file: rerun its ``compute_model_metrics`` job.
    """
    from clip_robustness.metrics.correlation import accuracy_auroc_correlations

    tables = []
    expected = settings.to_dict()
    for path in table_paths:
        table, metadata = read_metrics_table(path)
        recorded = metadata.get("settings")
        if recorded is not None and recorded != expected:
            changed = sorted(k for k in set(recorded) | set(expected) if recorded.get(k) != expected.get(k))
            raise MetricsInputError(
                f"{path}: computed with other metric settings ({changed}); rerun snakemake so it is recomputed"
            )
        tables.append(table)
    metrics = aggregate_metrics(tables, registry, reference_group)
    correlations = accuracy_auroc_correlations(metrics, registry, in_distribution)
    record = settings_record(settings, in_distribution, n_imagenet_x_annotated)
    record["reference_group"] = reference_group
    return AggregateResult(metrics=metrics, correlations=correlations, settings=record)
