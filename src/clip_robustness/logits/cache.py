"""The logits cache: one parquet file per (model, dataset), the contract in docs/architecture.md ("Logits cache").

Columns: ``index`` (int32, row position in the dataset's manifest), ``label`` (int16, ImageNet-1k index,
-1 for OOD images), ``logits`` (``fixed_size_list<float32>[1000]``: the model's 1000 ImageNet-1k class
logits, in the library's class order). zstd compression, byte-stream-split encoding on the floats. The
schema metadata key ``clip_robustness`` holds a JSON object describing how the logits were made
(:func:`cache_metadata`). Rows are in manifest order.

Writes are atomic (temp file in the same folder, then :func:`os.replace`): a killed job never leaves a
plausible file. Reads check the metadata against what the caller expects (:class:`StaleCacheError`) and
turn an unreadable file into a :class:`CorruptCacheError` that says what to do.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clip_robustness import PIPELINE_VERSION
from clip_robustness.models.adapters import is_zero_shot
from clip_robustness.models.adapters.final_layer import HEAD_PRECISION, N_CLASSES
from clip_robustness.models.adapters.rows import row_text
from clip_robustness.names import weights_record_path
from clip_robustness.workflow.io import atomic_path

#: Schema metadata key holding the JSON metadata.
METADATA_KEY = "clip_robustness"

#: The Arrow schema of a cache file (without its metadata).
LOGITS_SCHEMA = pa.schema(
    [
        pa.field("index", pa.int32(), nullable=False),
        pa.field("label", pa.int16(), nullable=False),
        pa.field("logits", pa.list_(pa.field("element", pa.float32(), nullable=False), N_CLASSES), nullable=False),
    ]
)


class CacheError(RuntimeError):
    """Base class of logits-cache errors; ``path`` is the cache file at fault (``None`` when unknown)."""

    def __init__(self, message: str, path: str | os.PathLike | None = None):
        super().__init__(message)
        self.path = None if path is None else Path(path)


class StaleCacheError(CacheError):
    """A cache file was written for a different model, dataset, manifest, prompt set or preprocessing."""


class CorruptCacheError(CacheError):
    """A cache file cannot be read as a logits cache (truncated, not parquet, wrong schema)."""


@dataclass(frozen=True)
class CachedLogits:
    """The contents of one cache file.

    ``index``: int32 ``[n]``, manifest row of each cached row (rows are in manifest order).
    ``labels``: int16 ``[n]``, ImageNet-1k class index, -1 for OOD images.
    ``logits``: float32 ``[n, 1000]``, the model's unnormalised ImageNet-1k class scores (zero-shot CLIP:
    already multiplied by the model's logit scale, recorded as ``metadata["logit_scale"]``).
    ``metadata``: the JSON metadata (see :func:`cache_metadata`).
    """

    index: np.ndarray
    labels: np.ndarray
    logits: np.ndarray
    metadata: dict


def cache_metadata(
    *,
    row: Mapping[str, Any],
    library_version: str,
    preprocessing: Mapping[str, Any],
    logit_scale: float | None,
    prompt_set: str | None,
    amp_dtype: str,
    allow_tf32: bool,
    gpu_name: str,
    dataset: str,
    manifest_hash: str,
    n_images: int,
) -> dict:
    """The metadata dict written with a cache file.

    ``row``: the model-registry row. ``logit_scale``: the multiplier applied to the cosine similarities of
    a zero-shot CLIP model (``exp`` of the model's learnt log-scale, about 100), ``None`` for classifiers.
    ``prompt_set``: zero-shot template set id (``openai`` | ``simple``), ``None`` for classifiers.
    ``amp_dtype``: the autocast dtype the forward ran in (``bfloat16``, ``float16``, ``float32``);
    ``allow_tf32``: whether TF32 matmuls were allowed. ``gpu_name``: the GPU's name, or ``"cpu"``.
    ``dataset``/``manifest_hash``: the manifest the rows index into.
    """
    import torch

    text = partial(row_text, row)
    return {
        "model_id": text("model_id"),
        "library": text("library"),
        "library_version": library_version,
        "architecture": text("architecture"),
        "pretrained": text("pretrained"),
        "weights_file": text("weights_file"),
        "preprocessing": dict(preprocessing),
        "logit_scale": None if logit_scale is None else float(logit_scale),
        "prompt_set": prompt_set,
        "precision": {"amp_dtype": amp_dtype, "allow_tf32": bool(allow_tf32)},
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,  # the CUDA torch was built for (None for CPU-only builds)
        "gpu_name": gpu_name,
        "python_version": platform.python_version(),
        "dataset": dataset,
        "manifest_hash": manifest_hash,
        "n_images": int(n_images),
        "n_classes": N_CLASSES,
        "pipeline_version": PIPELINE_VERSION,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "weights_sha256": weights_identity(text("model_id")),
    }


def weights_identity(model_id: str, workdir: str | os.PathLike = ".") -> list[str] | None:
    """The sha256 of each weights file of ``model_id`` (sorted), from its weights record
    (``data/weights/{model}.json``, :mod:`clip_robustness.models.weights`); ``[]`` for random weights; ``None`` when
    there is no readable record (a job run outside the workflow). Written into each cache file's metadata as
    ``weights_sha256``, so a moved or shared cache is judged by the weights it was computed with, not by timestamps
    (:func:`clip_robustness.logits.check.check_logits_files`)."""
    try:
        record = json.loads((Path(workdir) / weights_record_path(model_id)).read_text())
        return sorted(str(f["sha256"]) for f in record.get("files", []))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def expected_metadata(row: Mapping[str, Any], dataset: str, manifest_hash: str, prompt_set: str | None) -> dict:
    """What a reader expects of the cache of ``row`` on ``dataset`` (the ``expect`` of :func:`read_logits`).

    Covers the model (id, library, architecture, pretrained tag: together they fix the preprocessing; a
    changed local weights file is caught by Snakemake, which has it as an input), the manifest (dataset id and hash)
    and, for zero-shot models (:func:`~clip_robustness.models.adapters.is_zero_shot`), the prompt set; classifiers
    expect ``prompt_set`` ``None``.
    """
    text = partial(row_text, row)
    return {
        "model_id": text("model_id"),
        "library": text("library"),
        "architecture": text("architecture"),
        "pretrained": text("pretrained"),
        "dataset": dataset,
        "manifest_hash": manifest_hash,
        "prompt_set": prompt_set if is_zero_shot(row) else None,
    }


def current_metadata(
    row: Mapping[str, Any],
    manifest_metadata: Mapping[str, Any],
    prompt_set: str | None,
    precision: Mapping[str, Any] | None = None,
) -> dict:
    """What a *current* cache file of ``row`` on a manifest records: the one definition shared by the check every run
    does before planning (:func:`clip_robustness.logits.check.check_logits_files`) and the group job deciding which
    outputs to keep (:func:`clip_robustness.logits.job.cache_group_logits`).

    ``manifest_metadata``: the manifest's ``clip_robustness`` footer (``dataset``, ``manifest_hash``, and ``subset``
    for an ImageNet-C subset). Covers :func:`expected_metadata` (model, dataset, manifest hash, prompt set of a zero-shot
    model), the final layer's precision (``head_precision``: files from a reduced-precision final layer are recomputed)
    and the subset a subset manifest was cut with. ``precision`` (``{"amp_dtype": ..., "allow_tf32": ...}``) is
    compared only when given: it depends on the device the job runs on, known in the job, not when planning (a
    changed ``inference.precision`` is a changed job parameter, which Snakemake reruns anyway).
    """
    expect = expected_metadata(
        row, str(manifest_metadata["dataset"]), str(manifest_metadata["manifest_hash"]), prompt_set
    )
    expect["head_precision"] = HEAD_PRECISION
    if manifest_metadata.get("subset") is not None:  # a subset manifest also has its own hash; this names why
        expect["manifest_subset"] = manifest_metadata["subset"]
    if precision is not None:
        expect["precision"] = {"amp_dtype": precision["amp_dtype"], "allow_tf32": bool(precision["allow_tf32"])}
    return expect


def logits_table(index: np.ndarray, labels: np.ndarray, logits: np.ndarray, metadata: Mapping[str, Any]) -> pa.Table:
    """The Arrow table of a cache file; validates shapes and dtypes (``ValueError`` naming the problem)."""
    index = np.asarray(index)
    labels = np.asarray(labels)
    logits = np.asarray(logits)
    n = len(index)
    if logits.ndim != 2 or logits.shape[1] != N_CLASSES:
        raise ValueError(f"logits must have shape [n, {N_CLASSES}], got {list(logits.shape)}")
    if index.ndim != 1 or labels.shape != (n,) or logits.shape[0] != n:
        raise ValueError(f"index ({index.shape}), labels ({labels.shape}) and logits ({logits.shape}) disagree in rows")
    for name, values, dtype in (("index", index, np.int32), ("label", labels, np.int16)):
        if not np.issubdtype(values.dtype, np.integer) or (
            n and (values.min() < np.iinfo(dtype).min or values.max() > np.iinfo(dtype).max)
        ):
            raise ValueError(f"{name} must be integers that fit {np.dtype(dtype).name}")
    flat = pa.array(np.ascontiguousarray(logits, dtype=np.float32).reshape(-1), type=pa.float32())
    return rows_table(index, labels, flat, LOGITS_SCHEMA, metadata)


def rows_table(
    index: np.ndarray, labels: np.ndarray, flat: pa.Array, schema: pa.Schema, metadata: Mapping[str, Any]
) -> pa.Table:
    """The table of a per-image cache file (logits, embeddings): ``index`` (int32), ``label`` (int16) and the schema's
    third field, a fixed-size list column of ``flat`` values, row-major; ``metadata`` under :data:`METADATA_KEY`."""
    columns = [
        pa.array(index.astype(np.int32, copy=False), type=pa.int32()),
        pa.array(labels.astype(np.int16, copy=False), type=pa.int16()),
        pa.FixedSizeListArray.from_arrays(flat, type=schema.field(2).type),
    ]
    metadata_json = json.dumps(dict(metadata), sort_keys=True)
    return pa.Table.from_arrays(columns, schema=schema.with_metadata({METADATA_KEY: metadata_json}))


def write_rows_table(path: Path, table: pa.Table) -> Path:
    """Write a :func:`rows_table` atomically (temp file in the same folder, then rename): zstd, dictionary-encoded
    index and label, byte-stream-split values of the list column."""
    values = f"{table.schema.field(2).name}.list.element"
    with atomic_path(path) as tmp:
        pq.write_table(
            table,
            tmp,
            compression="zstd",
            use_dictionary=["index", "label"],
            column_encoding={values: "BYTE_STREAM_SPLIT"},
        )
    return path


def write_logits(
    path: str | os.PathLike,
    index: np.ndarray,
    labels: np.ndarray,
    logits: np.ndarray,
    metadata: Mapping[str, Any],
) -> Path:
    """Write one cache file atomically (temp file in the same folder, then rename); returns the path.

    ``index``/``labels``/``logits``: see :class:`CachedLogits`; ``metadata``: JSON-serialisable dict,
    normally from :func:`cache_metadata`. If writing fails, no file (and no temp file) is left at ``path``;
    temp files of an earlier job killed mid-write are removed.
    """
    return write_rows_table(Path(path), logits_table(index, labels, logits, metadata))


#: What a reader's error tells the user to do (the file is moved aside first, see :func:`reject_cache_file`).
RECOVERY_ADVICE = (
    "Run the same snakemake command again: it recomputes this file (and only what depends on it); "
    "or `snakemake {path}` to recompute this file alone."
)


def _corrupt(path: Path, reason: str) -> CorruptCacheError:
    return CorruptCacheError(
        f"{path}: not a readable logits cache ({reason}). Delete this file and rerun the same snakemake command "
        f"to recompute it (or run `snakemake --force {path}`).",
        path,
    )


def rejected_path(path: str | os.PathLike, when: datetime | None = None) -> Path:
    """Where :func:`reject_cache_file` moves ``path``: ``<path>.rejected-<UTC time>``."""
    when = when or datetime.now(timezone.utc)
    return Path(f"{path}.rejected-{when.strftime('%Y%m%dT%H%M%S%fZ')}")


def reject_cache_file(path: str | os.PathLike) -> Path:
    """Move a stale or corrupt cache file aside (never deleted, never read again) and return where it went.

    The file's path is then free, so Snakemake, for which every cache file is a target of the run,
    recomputes it on the next run of the same command.
    """
    target = rejected_path(path)
    os.replace(path, target)
    return target


def rejection_message(error: CacheError, moved_to: Path) -> str:
    """``error``'s message, with what was done to the file and the targeted command that recomputes it."""
    path = error.path if error.path is not None else str(moved_to).rsplit(".rejected-", 1)[0]
    reason = str(error).split(" Delete", 1)[0]
    return f"{reason} It was moved aside to {moved_to}. " + RECOVERY_ADVICE.format(path=path)


def read_metadata(path: str | os.PathLike) -> dict:
    """The JSON metadata of a cache file, reading only the parquet footer."""
    path = Path(path)
    try:
        schema = pq.read_schema(path)
    except FileNotFoundError:
        raise
    except (pa.ArrowException, OSError) as exc:
        raise _corrupt(path, str(exc)) from exc
    raw = (schema.metadata or {}).get(METADATA_KEY.encode())
    if raw is None:
        raise _corrupt(path, f"no {METADATA_KEY!r} schema metadata")
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise _corrupt(path, f"metadata is not JSON: {exc}") from exc


def check_expected(path: str | os.PathLike, metadata: Mapping[str, Any], expect: Mapping[str, Any]) -> None:
    """Raise :class:`StaleCacheError` naming every key of ``expect`` whose value differs in ``metadata``."""
    missing = object()
    mismatches = []
    for key, expected in expect.items():
        found = metadata.get(key, missing)
        if found is missing or found != expected:
            shown = "<absent>" if found is missing else repr(found)
            mismatches.append(f"{key}: expected {expected!r}, found {shown}")
    if mismatches:
        raise StaleCacheError(
            f"{path}: stale logits cache, written for something else ({'; '.join(mismatches)}). "
            f"Delete it and rerun the same snakemake command to recompute it (or run `snakemake --force {path}`).",
            path,
        )


def read_logits(path: str | os.PathLike, expect: Mapping[str, Any] | None = None) -> CachedLogits:
    """Read one cache file; with ``expect``, first check its metadata (:class:`StaleCacheError` on mismatch).

    ``expect`` maps metadata keys to required values, typically
    ``{"model_id": ..., "dataset": ..., "manifest_hash": ..., "prompt_set": ...}``.
    A truncated, non-parquet or wrongly shaped file raises :class:`CorruptCacheError`.
    ``logits`` is a zero-copy view of the Arrow buffer when the file has one row group.
    """
    path = Path(path)
    metadata = read_metadata(path)
    if expect:
        check_expected(path, metadata, expect)
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise _corrupt(path, str(exc)) from exc
    if not table.schema.remove_metadata().equals(LOGITS_SCHEMA, check_metadata=False):
        # nullable flags are not round-tripped by every writer: compare names and types only
        got = [(f.name, f.type) for f in table.schema]
        want = [(f.name, f.type) for f in LOGITS_SCHEMA]
        if got != want:
            raise _corrupt(path, f"schema {got} is not {want}")
    logits_column = table.column("logits").combine_chunks()
    if logits_column.null_count or logits_column.values.null_count:
        raise _corrupt(path, "null logits")
    logits = logits_column.flatten().to_numpy(zero_copy_only=True).reshape(-1, N_CLASSES)
    return CachedLogits(
        index=table.column("index").to_numpy(),
        labels=table.column("label").to_numpy(),
        logits=logits,
        metadata=metadata,
    )
