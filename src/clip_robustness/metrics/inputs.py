"""The metric stage's inputs: one model's cached logits on one dataset, joined to the dataset's manifest."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from clip_robustness.datasets.label_spaces import LabelSpace
from clip_robustness.metrics.tidy import MetricsInputError


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
