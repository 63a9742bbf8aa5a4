"""Fetching a model's weights on a node with internet, so that jobs on offline nodes find them.

Each model's weights are fetched by its library's adapter
(:meth:`~clip_robustness.models.adapters.base.ModelAdapter.fetch_weights`), the same call that checks them
before a model is built, and the way the library itself fetches them when it builds the model (open_clip's
``download_pretrained``; timm's pretrained-source resolution with its safetensors preference), so the
files land exactly where the library looks for them later with ``HF_HUB_OFFLINE=1``: the Hugging Face hub
cache (``HF_HOME`` / ``HF_HUB_CACHE``), or the torch hub cache for the few weights only published at a URL.
Nothing is loaded into memory.

A *weights record* (JSON, written by the ``fetch_model_weights`` rule) says what was fetched::

    {"model_id": ..., "library": ..., "library_version": ..., "architecture": ..., "pretrained": ...,
     "files": [{"file": "/abs/path", "size": 123, "sha256": "...", "source": "https://.../resolve/<commit>/model.safetensors"}]}

``files`` is empty for random weights (no pretrained tag, no weights file) and for weights the model's own
factory provides. A local ``weights_file`` is recorded with ``source`` ``"local file"``; any other file with
the adapter's :meth:`~clip_robustness.models.adapters.base.ModelAdapter.weights_source`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from clip_robustness.datasets.download import file_digests
from clip_robustness.models.adapters import ADAPTERS, row_adapter
from clip_robustness.models.adapters.errors import MissingWeightsError, ModelBuildError
from clip_robustness.models.adapters.rows import row_text
from clip_robustness.models.adapters.sources import hub_offline

#: ``source`` of a weights file the registry names (``weights_file`` column).
LOCAL_SOURCE = "local file"


class WeightsFetchError(RuntimeError):
    """A model's weights cannot be fetched; the message names the model and where they were looked for."""


@dataclass(frozen=True)
class FetchedFile:
    """One file a model's weights consist of: where it lies, its size in bytes, its sha256 and where it came
    from (a URL, or ``"local file"``)."""

    file: str
    size: int
    sha256: str
    source: str


def describe_file(path: str | Path, source: str) -> FetchedFile:
    """The record of one weights file on disk (absolute path, size, sha256) and its ``source``."""
    path = Path(path).resolve()
    digests = file_digests(path)
    return FetchedFile(file=str(path), size=digests.size_bytes, sha256=digests.sha256, source=source)


def fetch_weights(row: Mapping[str, Any]) -> dict:
    """Fetch ``row``'s weights (registry row) and return its weights record (see the module docstring).

    A local ``weights_file`` is checked and hashed, not copied; a row without pretrained tag and file has
    random weights (no files). Raises :class:`WeightsFetchError` naming the model when they cannot be had.
    """
    library, model_id = row_text(row, "library"), row_text(row, "model_id")
    if library not in ADAPTERS:
        raise WeightsFetchError(f"model {model_id!r}: unknown library {library!r}; expected one of {sorted(ADAPTERS)}")
    adapter = ADAPTERS[library]
    weights_file = row_text(row, "weights_file")
    if weights_file:
        if not Path(weights_file).expanduser().is_file():
            raise WeightsFetchError(
                f"model {model_id!r}: the weights_file {weights_file!r} named in the model registry does not exist"
            )
        files = [describe_file(Path(weights_file).expanduser(), LOCAL_SOURCE)]
    elif row_text(row, "pretrained"):
        try:
            path = adapter.fetch_weights(row)
        except (MissingWeightsError, ModelBuildError) as error:
            raise WeightsFetchError(
                f"{error} Run this on a node with internet (the login node); behind a mirror set HF_ENDPOINT."
            ) from error
        files = [describe_file(path, adapter.weights_source(row, path))] if path else []
    else:
        files = []
    return {
        "model_id": model_id,
        "library": library,
        "library_version": adapter.version(row),
        "architecture": row_text(row, "architecture"),
        "pretrained": row_text(row, "pretrained"),
        "files": [asdict(f) for f in files],
    }


def missing_weights_files(rows: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Model id -> the ``weights_file`` its registry row names but that does not exist (``rows``: model id -> row)."""
    return {
        model_id: row_text(row, "weights_file")
        for model_id, row in rows.items()
        if row_text(row, "weights_file") and not Path(row_text(row, "weights_file")).expanduser().exists()
    }


def missing_weights_message(missing: Mapping[str, str], scheduled_models: Iterable[str]) -> str | None:
    """Why the run stops before any job: the models of ``scheduled_models`` (those with a job to run) whose weights file
    is missing (``missing``, from :func:`missing_weights_files`), each with the file; ``None`` when there are none."""
    stopped = sorted(set(scheduled_models) & set(missing))
    if not stopped:
        return None
    return (
        "Before any job: missing weights file(s): "
        + "; ".join(f"model {m!r} expects {missing[m]}" for m in stopped)
        + ". Put the file(s) there (or correct weights_file in the model registry) and run the same command again, "
        "or add --keep-going to compute every other model now."
    )


def unfetchable_offline(rows: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Model id -> why its weights cannot be had, for the ``rows`` (model id -> registry row) whose weights come from
    the hub or a library URL, when ``HF_HUB_OFFLINE`` is set and they are not in the cache. Empty when online (the
    fetch job then downloads them). Looks in the caches only: nothing is downloaded, nothing hashed, no model built;
    the libraries are imported only when a row needs them."""
    if not rows or not hub_offline():
        return {}
    unfetchable = {}
    for model_id, row in rows.items():
        if row_text(row, "weights_file") or not row_text(row, "pretrained"):
            continue  # a local file (missing_weights_files) or random weights: nothing to fetch
        try:
            row_adapter(row).fetch_weights(row)
        except MissingWeightsError as error:
            unfetchable[model_id] = str(error)
    return unfetchable


def unfetchable_message(unfetchable: Mapping[str, str]) -> str | None:
    """Why the run stops before any job (and before any decode job): weights that cannot be fetched on this offline
    node (``unfetchable``, from :func:`unfetchable_offline`); ``None`` when there are none."""
    if not unfetchable:
        return None
    return (
        "Before any job: weights that cannot be fetched (HF_HUB_OFFLINE is set and they are not in the hub cache): "
        + " ".join(unfetchable[m] for m in sorted(unfetchable))
        + " Fetch them on a node with internet first (`snakemake ... --until fetch_model_weights`, docs/cluster.md) "
        "and run the same command again, or add --keep-going to compute every other model now."
    )


def write_weights_record(record: Mapping[str, Any], path: str | Path) -> None:
    """Write a weights record as JSON, atomically."""
    from clip_robustness.workflow.io import atomic_path

    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(record, indent=2) + "\n")


def read_weights_record(path: str | Path) -> dict:
    """A weights record written by :func:`write_weights_record`."""
    return json.loads(Path(path).read_text())
