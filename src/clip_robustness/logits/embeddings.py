"""The image-embeddings cache of zero-shot models: one parquet per (model, dataset), written by the logits job beside
the logits file (docs/architecture.md, "Embeddings cache"; docs/methods.md, "Embeddings cache and prompt-set ablation").

A zero-shot model's logits are ``logit_scale * normalize(f) @ W`` (:mod:`clip_robustness.models.adapters.text_head`).
The cache holds ``e = normalize(f)`` (float16), so the logits of any other text head ``W'`` are one matrix product
away (:func:`logits_from_embeddings`), with no image model run. Columns: ``index`` (int32, into the manifest),
``label`` (int16), ``embedding`` (``fixed_size_list<float16>[embed_dim]``). The ``clip_robustness`` schema metadata is
the logits file's (model, manifest hash, weights sha256, precision, prompt set of the saved head, ...) plus
:data:`EMBEDDING_KEYS`; a file is current by the same definition as the logits
(:func:`clip_robustness.logits.cache.current_metadata`), judged by the same checks.

Pure numpy/pyarrow: no torch import.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clip_robustness.logits.cache import _corrupt, check_expected, read_metadata, rows_table, write_rows_table
from clip_robustness.workflow.io import atomic_path

#: The stored dtype of the embeddings (docs/methods.md states the logits error it costs, measured on the demo).
EMBEDDING_DTYPE = "float16"
#: What the embeddings metadata adds to the logits metadata.
EMBEDDING_KEYS = ("content", "embedding_dim", "embedding_dtype", "embedding_normalization")
#: ``content`` of an embeddings file (a logits file records none).
EMBEDDINGS_CONTENT = "image_embeddings"


@dataclass(frozen=True)
class CachedEmbeddings:
    """The contents of one embeddings file: ``index`` int32 ``[n]``, ``labels`` int16 ``[n]``, ``embeddings``
    float16 ``[n, embed_dim]`` (unit L2 norm up to float16 rounding), ``metadata`` (the JSON metadata)."""

    index: np.ndarray
    labels: np.ndarray
    embeddings: np.ndarray
    metadata: dict


def embeddings_schema(dim: int) -> pa.Schema:
    """The Arrow schema of an embeddings file of ``dim``-dimensional embeddings (without metadata)."""
    element = pa.field("element", pa.float16(), nullable=False)
    return pa.schema(
        [
            pa.field("index", pa.int32(), nullable=False),
            pa.field("label", pa.int16(), nullable=False),
            pa.field("embedding", pa.list_(element, dim), nullable=False),
        ]
    )


def embeddings_metadata(logits_metadata: Mapping[str, Any], dim: int) -> dict:
    """The metadata of the embeddings file written beside a logits file with ``logits_metadata``."""
    return {
        **dict(logits_metadata),
        "content": EMBEDDINGS_CONTENT,
        "embedding_dim": int(dim),
        "embedding_dtype": EMBEDDING_DTYPE,
        "embedding_normalization": "l2",
    }


def write_embeddings(
    path: str | os.PathLike,
    index: np.ndarray,
    labels: np.ndarray,
    embeddings: np.ndarray,
    metadata: Mapping[str, Any],
) -> Path:
    """Write one embeddings file atomically; ``embeddings``: ``[n, dim]`` L2-normalised (stored as float16).

    ``ValueError`` when the rows disagree, an embedding is not finite or not of unit norm (tolerance 1e-3).
    """
    path = Path(path)
    embeddings = np.asarray(embeddings)
    index, labels = np.asarray(index), np.asarray(labels)
    if embeddings.ndim != 2 or embeddings.shape[0] != len(index) or labels.shape != index.shape:
        raise ValueError(
            f"{path}: index ({index.shape}), labels ({labels.shape}) and embeddings "
            f"({embeddings.shape}) disagree in rows"
        )
    norms = np.linalg.norm(embeddings.astype(np.float32), axis=1)
    if not np.all(np.isfinite(norms)) or (len(norms) and np.max(np.abs(norms - 1.0)) > 1e-3):
        raise ValueError(f"{path}: embeddings must be finite and L2-normalised")
    dim = int(embeddings.shape[1])
    flat = pa.array(np.ascontiguousarray(embeddings, dtype=np.float16).reshape(-1), type=pa.float16())
    return write_rows_table(path, rows_table(index, labels, flat, embeddings_schema(dim), metadata))


def read_embeddings(path: str | os.PathLike, expect: Mapping[str, Any] | None = None) -> CachedEmbeddings:
    """Read one embeddings file; with ``expect``, first check its metadata (``StaleCacheError`` naming the file and
    every mismatch). A file that is not an embeddings file raises ``CorruptCacheError`` naming it."""
    path = Path(path)
    metadata = read_metadata(path)
    if metadata.get("content") != EMBEDDINGS_CONTENT:
        raise _corrupt(path, f"metadata content is {metadata.get('content')!r}, not {EMBEDDINGS_CONTENT!r}")
    if expect:
        check_expected(path, metadata, expect)
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise _corrupt(path, str(exc)) from exc
    dim = int(metadata.get("embedding_dim", -1))
    want = [(f.name, f.type) for f in embeddings_schema(max(dim, 1))]
    got = [(f.name, f.type) for f in table.schema]
    if dim < 1 or got != want:
        raise _corrupt(path, f"schema {got} is not {want}")
    column = table.column("embedding").combine_chunks()
    if column.null_count or column.values.null_count:
        raise _corrupt(path, "null embeddings")
    return CachedEmbeddings(
        index=table.column("index").to_numpy(),
        labels=table.column("label").to_numpy(),
        embeddings=column.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim),
        metadata=metadata,
    )


def logits_from_embeddings(
    embeddings: np.ndarray, weights: np.ndarray, logit_scale: float, chunk: int = 8192
) -> np.ndarray:
    """``logit_scale * normalize(e) @ W``: float32 ``[n, n_classes]`` zero-shot logits of cached embeddings ``e``
    (``[n, dim]``, any float dtype; re-normalised in float32 after the float16 rounding) under head ``W``
    (``[dim, n_classes]``), computed ``chunk`` rows at a time."""
    embeddings = np.asarray(embeddings)
    weights = np.asarray(weights, dtype=np.float32)
    if embeddings.ndim != 2 or weights.ndim != 2 or embeddings.shape[1] != weights.shape[0]:
        raise ValueError(
            f"embeddings {list(embeddings.shape)} and head weights {list(weights.shape)} do not "
            "multiply: the head was built for another model"
        )
    out = np.empty((embeddings.shape[0], weights.shape[1]), dtype=np.float32)
    for start in range(0, embeddings.shape[0], chunk):
        block = embeddings[start : start + chunk].astype(np.float32)
        block /= np.maximum(np.linalg.norm(block, axis=1, keepdims=True), np.float32(1e-12))
        out[start : start + chunk] = np.float32(logit_scale) * (block @ weights)
    return out


def embeddings_bytes_per_image(dim: int) -> int:
    """Bytes one image takes in an embeddings file before compression (float16 embedding, index and label)."""
    return 2 * int(dim) + 4 + 2


#: Keys of an ablation head file (``results/ablation/heads/{model}/{prompt_set}.npz``).
HEAD_ARRAY_KEYS = ("weights", "logit_scale", "prompt_set", "n_templates", "model_id")


def save_head_arrays(
    path: str | os.PathLike, weights: np.ndarray, logit_scale: float, prompt_set: str, n_templates: int, model_id: str
) -> Path:
    """Write a text head as numpy arrays (read without torch by the CPU metrics job), atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(
                handle,
                weights=np.asarray(weights, dtype=np.float32),
                logit_scale=np.float64(logit_scale),
                prompt_set=np.str_(prompt_set),
                n_templates=np.int64(n_templates),
                model_id=np.str_(model_id),
            )
    return path


def load_head_arrays(path: str | os.PathLike, model_id: str, prompt_set: str) -> tuple[np.ndarray, float]:
    """``(weights [dim, 1000] float32, logit_scale)`` of an ablation head file; ``ValueError`` naming the file when
    it is another model's or prompt set's."""
    with np.load(Path(path), allow_pickle=False) as data:
        found = {key: str(data[key]) for key in ("model_id", "prompt_set")}
        if found != {"model_id": model_id, "prompt_set": prompt_set}:
            raise ValueError(
                f"{path}: head of {found}, expected model_id {model_id!r} and prompt_set {prompt_set!r}; "
                "delete it and rerun to rebuild it"
            )
        return np.asarray(data["weights"], dtype=np.float32), float(data["logit_scale"])
