"""One model's tidy metric rows: calibration, ImageNet-X and OOD rows of each dataset, from its cached logits.

Which rows each dataset gets, and their units: :mod:`clip_robustness.metrics.tidy`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from clip_robustness.datasets.label_spaces import LabelSpace
from clip_robustness.metrics.accuracy import check_logits_and_labels
from clip_robustness.metrics.calibration import (
    POOLINGS,
    calibration_split,
    expected_calibration_error,
    fit_temperature,
    predict,
)
from clip_robustness.metrics.imagenet_x import ALL_ANNOTATED, error_ratios, factor_accuracies, label_disagreements
from clip_robustness.metrics.inputs import DatasetLogits, load_dataset_logits
from clip_robustness.metrics.ood import OOD_SCORES, auroc, fpr_at_tpr, ood_scores
from clip_robustness.metrics.settings import MetricSettings
from clip_robustness.metrics.tidy import IMAGENET_X_DATASET, MetricsInputError, tidy_frame, tidy_row
from clip_robustness.names import id_test_dataset

log = logging.getLogger(__name__)


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
            model, disagreements, n_all,
        )
    ratios = error_ratios(accuracies["accuracy"])
    rows = [tidy_row(model, IMAGENET_X_DATASET, "top1", accuracies.loc[ALL_ANNOTATED, "accuracy"])]
    for factor in factors:
        if accuracies.loc[factor, "n_images"] == 0:
            log.warning("%s: no annotated image has ImageNet-X factor %r: no rows for it", model, factor)
            continue
        rows.append(tidy_row(model, IMAGENET_X_DATASET, "factor_accuracy", accuracies.loc[factor, "accuracy"], factor=factor))
        rows.append(tidy_row(model, IMAGENET_X_DATASET, "error_ratio", ratios[factor], factor=factor))
    return rows


def ood_rows(model: str, dataset: str, id_scores: Mapping[str, np.ndarray], ood: Mapping[str, np.ndarray], tpr: float) -> list[dict]:
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
    check_logits_and_labels(idd.logits, idd.labels, f"model {model!r}, dataset {idd.dataset!r}")
    if idd.file_names is None:
        raise MetricsInputError(f"model {model!r}: the in-distribution set {idd.dataset!r} needs file names")
    if np.any(idd.labels < 0):
        raise MetricsInputError(f"model {model!r}: in-distribution set {idd.dataset!r} has unlabelled (-1) images")
    id_space = idd.label_space or LabelSpace.imagenet_1k()

    full = predict(idd.logits, idd.labels, id_space)
    rows.append(tidy_row(model, idd.dataset, "top1", full.accuracy))

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
    from clip_robustness.metrics.shape_bias import shape_bias_rows_from_files

    rows = [row for d in cue_conflict for row in shape_bias_rows_from_files(
        model, d, logits_paths[d], manifest_paths[d], registry_row, prompt_set)]
    return tidy_frame([*table.to_dict("records"), *rows])
