"""Every run checks the logits cache files it is about to trust, cheaply, before Snakemake plans any job.

Snakemake decides what to rerun from modification times, so a cache file replaced by a foreign one
(another model's file copied over it, or copied with its old timestamp by ``cp -p``) would be trusted
forever. Before the DAG is built, :func:`check_logits_files` reads the footer metadata of each existing
cache file whose (size, mtime, ctime, inode) or expected metadata changed since it was last found good,
and moves a stale or unreadable file aside (:func:`~clip_robustness.logits.cache.reject_cache_file`), so
the same run recomputes it. Unchanged files cost one ``stat``: the last good signatures are kept in
``.snakemake/clip_robustness/checked_logits.json``. ``cp -p`` keeps the mtime but not the ctime or inode,
so a copied file is always read again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from clip_robustness.logits.cache import (
    CacheError,
    StaleCacheError,
    check_expected,
    current_metadata,
    read_metadata,
    reject_cache_file,
    weights_identity,
)
from clip_robustness.names import cache_path, manifest_path, weights_record_path
from clip_robustness.workflow.io import atomic_path

#: Last good signature of each checked cache file (relative to the working directory).
STATE_PATH = Path(".snakemake/clip_robustness/checked_logits.json")


@dataclass(frozen=True)
class Rejection:
    """A cache file moved aside: where it was, where it went, and why (the reader's message)."""

    path: Path
    moved_to: Path
    reason: str

    @property
    def message(self) -> str:
        """The warning the run prints."""
        return f"{self.reason} Moved aside to {self.moved_to}; this run recomputes it."


def _signature(path: Path) -> list[int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def manifest_metadata_of(path: str | os.PathLike) -> dict | None:
    """The ``clip_robustness`` metadata of a manifest's footer (``dataset``, ``manifest_hash``, ``subset``, ...), or
    ``None`` when it does not exist or cannot be read (the manifest job then reruns, and with it every cache job of
    the dataset)."""
    try:
        raw = (pq.read_schema(path).metadata or {}).get(b"clip_robustness")
        metadata = json.loads(raw) if raw else None
    except (OSError, pa.ArrowException, ValueError):
        return None
    if not isinstance(metadata, dict) or "dataset" not in metadata or "manifest_hash" not in metadata:
        return None
    return metadata


def _load_state(state_path: Path) -> dict[str, Any]:
    try:
        state = json.loads(state_path.read_text())
        return state if isinstance(state, dict) else {}
    except (OSError, ValueError):
        return {}


def check_logits_files(
    files: Iterable[tuple[str | os.PathLike, Any]],
    expect_of: Callable[[Any], Mapping[str, Any] | None],
    state_path: str | os.PathLike = STATE_PATH,
) -> list[Rejection]:
    """Check each existing cache file of ``files`` (pairs of path and key) against ``expect_of(key)``.

    ``expect_of`` returns the metadata the file must have (:func:`current_metadata_of`),
    or ``None`` when it cannot be known yet (manifest missing: the file is then rebuilt anyway). A file that is
    stale or unreadable is moved aside; the rejections are returned (path, new place, reason). Files whose
    signature and expectation are those last found good are not opened.
    """
    state_path = Path(state_path)
    state = _load_state(state_path)
    fresh: dict[str, Any] = dict(state)
    rejected: list[Rejection] = []
    for path, key in files:
        path = Path(path)
        signature = _signature(path)
        expect = expect_of(key) if signature is not None else None
        if expect is None:
            fresh.pop(str(path), None)
            continue
        expect_text = json.dumps(dict(expect), sort_keys=True)
        record = {"signature": signature, "expect": expect_text}
        if state.get(str(path)) == record:
            continue
        fresh.pop(str(path), None)
        try:
            check_identity(path, read_metadata(path), expect)
        except CacheError as error:
            rejected.append(Rejection(path, reject_cache_file(path), str(error).split(" Delete", 1)[0]))
            continue
        fresh[str(path)] = record
    if fresh != state:
        with atomic_path(state_path) as tmp:
            tmp.write_text(json.dumps(fresh, indent=0, sort_keys=True))
    return rejected


#: Key of an expectation compared only when the file records it (files written before it was recorded are judged by
#: the rest): the sha256 of the model's weights files (:func:`~clip_robustness.logits.cache.weights_identity`).
WEIGHTS_KEY = "weights_sha256"


def check_identity(path: Path, metadata: Mapping[str, Any], expect: Mapping[str, Any]) -> None:
    """:func:`~clip_robustness.logits.cache.check_expected`, plus the weights the file was computed with: a file that
    records ``weights_sha256`` other than the model's current weights record is stale (:class:`StaleCacheError`)."""
    expect = dict(expect)
    weights = expect.pop(WEIGHTS_KEY, None)
    check_expected(path, metadata, expect)
    recorded = metadata.get(WEIGHTS_KEY)
    if weights is not None and recorded is not None and list(recorded) != list(weights):
        raise StaleCacheError(
            f"{path}: stale logits cache, computed with other weights (weights_sha256 {recorded}, the model's weights "
            f"record {weights_record_path(str(metadata.get('model_id')))} now gives {weights}). Delete it and rerun.",
            path,
        )


def current_metadata_of(
    row_of: Callable[[str], Mapping[str, Any]],
    prompt_set: str | None,
    manifest_of: Callable[[str], str] = manifest_path,
) -> Callable[[tuple[str, str]], dict | None]:
    """``expect_of`` for :func:`check_logits_files` over ``(model, dataset)`` keys: what a current file records
    (:func:`~clip_robustness.logits.cache.current_metadata`, the definition the group job uses, less the device-bound
    precision), or ``None`` while the dataset's manifest (``manifest_of(dataset)``) does not exist or cannot be read.

    ``row_of``: model id -> registry row. Manifest footers and rows are read once per dataset and model, not per file.
    """
    manifests: dict[str, dict | None] = {}
    rows: dict[str, Mapping[str, Any]] = {}
    weights: dict[str, list[str] | None] = {}

    def expect_of(key: tuple[str, str]) -> dict | None:
        model, dataset = key
        if dataset not in manifests:
            manifests[dataset] = manifest_metadata_of(manifest_of(dataset))
        if manifests[dataset] is None:
            return None
        if model not in rows:  # a registry lookup per model, not per file (docs/performance.md)
            rows[model] = row_of(model)
            weights[model] = weights_identity(model)
        expect = current_metadata(rows[model], manifests[dataset], prompt_set)
        if weights[model] is not None:
            expect[WEIGHTS_KEY] = weights[model]
        return expect

    return expect_of


def reject_stale_logits(
    model_ids: Iterable[str],
    dataset_ids: Iterable[str],
    row_of: Callable[[str], Mapping[str, Any]],
    prompt_set: str | None,
    *,
    state_path: str | os.PathLike = STATE_PATH,
    manifest_of: Callable[[str], str] = manifest_path,
    embedding_models: Iterable[str] = (),
) -> list[Rejection]:
    """The check before planning: every cache file of the study (``results/logits/{model}/{dataset}.parquet``, and
    the embeddings files ``results/embeddings/{model}/{dataset}.parquet`` of ``embedding_models``) that is stale or
    unreadable is moved aside, so this run recomputes it; returns the rejections. An embeddings file is judged by the
    same definition as its logits file."""
    from clip_robustness.names import embeddings_path

    dataset_ids = list(dataset_ids)
    files = [(cache_path(m, d), (m, d)) for m in model_ids for d in dataset_ids]
    files += [(embeddings_path(m, d), (m, d)) for m in embedding_models for d in dataset_ids]
    return check_logits_files(files, current_metadata_of(row_of, prompt_set, manifest_of), state_path)
