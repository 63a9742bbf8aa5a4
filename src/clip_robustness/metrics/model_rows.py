"""One model's tidy metric rows: calibration, ImageNet-X and OOD rows of each dataset, from its cached logits, each
logits file read and joined to its dataset's manifest first (:func:`load_dataset_logits`).

Which rows each dataset gets, and their units: :mod:`clip_robustness.metrics.tidy`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from clip_robustness.datasets.cue_conflict import CategoryMapping
from clip_robustness.datasets.label_spaces import LabelSpace
from clip_robustness.datasets.manifest import read_manifest
from clip_robustness.metrics.accuracy import check_logits_and_labels
from clip_robustness.metrics.calibration import (
    POOLINGS,
    calibration_split,
    expected_calibration_error,
    fit_temperature,
    predict,
)
from clip_robustness.metrics.imagenet_x import ALL_ANNOTATED, error_ratios, factor_accuracies, label_disagreements
from clip_robustness.metrics.ood import OOD_SCORES, auroc, fpr_at_tpr, ood_scores
from clip_robustness.metrics.shape_bias import shape_bias_rows
from clip_robustness.metrics.tidy import IMAGENET_X_DATASET, MetricSettings, MetricsInputError, tidy_frame, tidy_row
from clip_robustness.names import id_test_dataset

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- inputs: a logits file and its manifest


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


# ----------------------------------------------------------------------------- rows


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
        tidy_row(model, dataset, "top1", before.accuracy),
        tidy_row(model, dataset, "ece", expected_calibration_error(before.confidence, before.correct, ece_bins)),
        tidy_row(model, dataset, "nll", before.mean_nll),
        tidy_row(model, dataset, "temperature", temperature),
        tidy_row(model, dataset, "ece_ts", expected_calibration_error(after.confidence, after.correct, ece_bins)),
        tidy_row(model, dataset, "nll_ts", after.mean_nll),
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
            model,
            disagreements,
            n_all,
        )
    ratios = error_ratios(accuracies["accuracy"])
    rows = [tidy_row(model, IMAGENET_X_DATASET, "top1", accuracies.loc[ALL_ANNOTATED, "accuracy"])]
    for factor in factors:
        if accuracies.loc[factor, "n_images"] == 0:
            log.warning("%s: no annotated image has ImageNet-X factor %r: no rows for it", model, factor)
            continue
        rows.append(
            tidy_row(model, IMAGENET_X_DATASET, "factor_accuracy", accuracies.loc[factor, "accuracy"], factor=factor)
        )
        rows.append(tidy_row(model, IMAGENET_X_DATASET, "error_ratio", ratios[factor], factor=factor))
    return rows


def ood_rows(
    model: str, dataset: str, id_scores: Mapping[str, np.ndarray], ood: Mapping[str, np.ndarray], tpr: float
) -> list[dict]:
    """Rows ``auroc`` and ``fpr95`` per score present in both ``id_scores`` and ``ood`` (ID positive)."""
    rows = []
    for score in OOD_SCORES:
        if score in id_scores and score in ood:
            rows.append(tidy_row(model, dataset, "auroc", auroc(id_scores[score], ood[score]), score=score))
            rows.append(tidy_row(model, dataset, "fpr95", fpr_at_tpr(id_scores[score], ood[score], tpr), score=score))
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
    _check_in_distribution(model, idd)
    id_space = idd.label_space or LabelSpace.imagenet_1k()

    full = predict(idd.logits, idd.labels, id_space)
    rows.append(tidy_row(model, idd.dataset, "top1", full.accuracy))

    is_calibration = calibration_split(idd.file_names, settings.calibration_split_seed)
    temperature = _fitted_temperature(model, idd, is_calibration, id_space, settings)
    is_test = ~is_calibration
    rows += calibration_rows(
        model,
        id_test_dataset(idd.dataset),
        idd.logits[is_test],
        idd.labels[is_test],
        id_space,
        temperature,
        settings.ece_bins,
    )

    if annotations is not None:
        rows += imagenet_x_rows(model, idd.file_names, idd.logits, idd.labels, annotations, settings.imagenet_x_factors)

    # with the full 1000-class space at T = 1, the confidence of `predict` is the MSP
    id_msp = full.confidence if id_space.is_full else None
    id_scores = ood_scores(idd.logits, _mcm_scale(model, idd, zero_shot), msp=id_msp)

    rows += _test_condition_rows(model, test_conditions, temperature, settings)
    rows += _ood_set_rows(model, ood_sets, id_scores, zero_shot, settings)
    return tidy_frame(rows)


def _check_in_distribution(model: str, idd: DatasetLogits) -> None:
    """Raise :class:`MetricsInputError` unless the in-distribution set has valid logits, file names and labels."""
    check_logits_and_labels(idd.logits, idd.labels, f"model {model!r}, dataset {idd.dataset!r}")
    if idd.file_names is None:
        raise MetricsInputError(f"model {model!r}: the in-distribution set {idd.dataset!r} needs file names")
    if np.any(idd.labels < 0):
        raise MetricsInputError(f"model {model!r}: in-distribution set {idd.dataset!r} has unlabelled (-1) images")


def _fitted_temperature(
    model: str, idd: DatasetLogits, is_calibration: np.ndarray, id_space: LabelSpace, settings: MetricSettings
) -> float:
    """The temperature fitted on the in-distribution set's calibration split (logged)."""
    temperature = fit_temperature(
        idd.logits[is_calibration], idd.labels[is_calibration], settings.temperature_range, id_space
    )
    log.info(
        "%s: temperature %.4f fitted on %d calibration images of %s",
        model,
        temperature,
        int(is_calibration.sum()),
        idd.dataset,
    )
    return temperature


def _test_condition_rows(
    model: str, test_conditions: Iterable[DatasetLogits], temperature: float, settings: MetricSettings
) -> list[dict]:
    """Calibration rows of each test condition at the ID temperature (each dataset loaded and dropped in turn)."""
    rows: list[dict] = []
    for data in test_conditions:
        try:
            rows += calibration_rows(
                model,
                data.dataset,
                data.logits,
                data.labels,
                data.label_space,
                temperature,
                settings.ece_bins,
                settings.objectnet_pooling,
            )
        except ValueError as exc:
            raise MetricsInputError(f"model {model!r}, dataset {data.dataset!r}: {exc}") from exc
        log.info("%s: scored test condition %s (%d images)", model, data.dataset, len(data.labels))
    return rows


def _ood_set_rows(
    model: str,
    ood_sets: Iterable[DatasetLogits],
    id_scores: Mapping[str, np.ndarray],
    zero_shot: bool,
    settings: MetricSettings,
) -> list[dict]:
    """OOD detection rows of each OOD set against the in-distribution scores (each set loaded and dropped in turn)."""
    rows: list[dict] = []
    for data in ood_sets:
        try:
            scores = ood_scores(data.logits, _mcm_scale(model, data, zero_shot))
            rows += ood_rows(model, data.dataset, id_scores, scores, settings.fpr_tpr)
        except ValueError as exc:
            raise MetricsInputError(f"model {model!r}, OOD set {data.dataset!r}: {exc}") from exc
        log.info("%s: scored OOD set %s (%d images)", model, data.dataset, len(data.logits))
    return rows


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
    cue_conflict: Sequence[str] = (),
) -> pd.DataFrame:
    """:func:`model_metrics_table` from cache and manifest files (dataset id -> path), one file in memory at a time,
    and the shape-bias rows of each ``cue_conflict`` dataset (:mod:`clip_robustness.metrics.shape_bias`).

    Raises :class:`MetricsInputError` naming the dataset when a role's dataset has no file.
    """
    for dataset in (in_distribution, *test_conditions, *ood_sets, *cue_conflict):
        for kind, paths in (("logits", logits_paths), ("manifest", manifest_paths)):
            if dataset not in paths:
                raise MetricsInputError(f"model {model!r}: no {kind} file given for dataset {dataset!r}")

    def load(dataset: str) -> DatasetLogits:
        log.info("%s: reading %s", model, logits_paths[dataset])
        return load_dataset_logits(dataset, logits_paths[dataset], manifest_paths[dataset], registry_row, prompt_set)

    table = model_metrics_table(
        model,
        load(in_distribution),
        (load(d) for d in test_conditions),
        (load(d) for d in ood_sets),
        settings,
        zero_shot,
        annotations,
    )
    if not cue_conflict:
        return table
    rows = [
        row
        for d in cue_conflict
        for row in shape_bias_rows_from_files(model, d, logits_paths[d], manifest_paths[d], registry_row, prompt_set)
    ]
    return tidy_frame([*table.to_dict("records"), *rows])


def shape_bias_rows_from_files(
    model: str,
    dataset: str,
    logits_path: str | os.PathLike,
    manifest_path: str | os.PathLike,
    registry_row: Mapping[str, Any] | None = None,
    prompt_set: str | None = None,
) -> list[dict]:
    """:func:`~clip_robustness.metrics.shape_bias.shape_bias_rows` from a logits cache and its manifest (whose metadata ``categories`` holds the mapping)."""
    categories = read_manifest(manifest_path).metadata.get("categories")
    if not categories:
        raise MetricsInputError(
            f"manifest {manifest_path} of {dataset!r} has no 'categories' (not layout cue_conflict?)"
        )
    data = load_dataset_logits(dataset, logits_path, manifest_path, registry_row, prompt_set)
    mapping = CategoryMapping.from_json_dict(categories, f"manifest {manifest_path}")
    return shape_bias_rows(model, dataset, data.logits, list(data.file_names), data.labels, mapping)
