"""Fetching a model's weights on a node with internet, so that jobs on offline nodes find them.

Each library's weights are fetched the way the library itself fetches them when it builds the model
(open_clip's :func:`open_clip.download_pretrained`; timm's pretrained-source resolution and its
Hugging Face hub / URL download helpers), so the files land exactly where the library looks for them
later with ``HF_HUB_OFFLINE=1``: the Hugging Face hub cache (``HF_HOME`` / ``HF_HUB_CACHE``), or the
torch hub cache for the few weights only published at a URL. Nothing is loaded into memory.

The per-library fetchers are small functions in :data:`FETCHERS`, keyed by library name (the same
keys as the model registry's ``library`` column); a library without one (the ``python`` adapter: a user's
own factory) is fetched through its adapter's :meth:`~clip_robustness.models.adapters.base.ModelAdapter.fetch_weights`.

A *weights record* (JSON, written by the ``fetch_model_weights`` rule) says what was fetched::

    {"model_id": ..., "library": ..., "library_version": ..., "architecture": ..., "pretrained": ...,
     "files": [{"file": "/abs/path", "size": 123, "sha256": "...", "source": "https://.../resolve/<commit>/model.safetensors"}]}

``files`` is empty for random weights (no pretrained tag, no weights file). A local ``weights_file``
is recorded with ``source`` ``"local file"``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from clip_robustness.datasets.download import file_digests
from clip_robustness.models.adapters.base import row_text

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


def _hub_source(cached_file: str) -> str:
    """The hub URL a file of the Hugging Face hub cache was downloaded from (endpoint, repo, commit, file name),
    read from its place in the cache (``models--{org}--{name}/snapshots/{commit}/{filename}``)."""
    from huggingface_hub import constants, hf_hub_url

    relative = Path(cached_file).absolute().relative_to(Path(constants.HF_HUB_CACHE).absolute())
    repo_folder, snapshots, commit, *filename = relative.parts
    if snapshots != "snapshots" or not repo_folder.startswith("models--") or not filename:
        return f"hub cache file {cached_file}"
    repo_id = repo_folder.removeprefix("models--").replace("--", "/")
    return hf_hub_url(repo_id, "/".join(filename), revision=commit)


def _source_of(cached_file: str, url: str = "") -> str:
    from huggingface_hub import constants

    if Path(cached_file).absolute().is_relative_to(Path(constants.HF_HUB_CACHE).absolute()):
        return _hub_source(cached_file)
    return url or f"file {cached_file}"


def _fail(row: Mapping[str, Any], where: str, error: BaseException) -> WeightsFetchError:
    return WeightsFetchError(
        f"model {row_text(row, 'model_id')!r}: cannot fetch its weights from {where}: {type(error).__name__}: {error}. "
        "Run this on a node with internet (the login node); behind a mirror set HF_ENDPOINT."
    )


def fetch_open_clip(row: Mapping[str, Any]) -> list[FetchedFile]:
    """Fetch an open_clip ``(architecture, pretrained)`` checkpoint through ``open_clip.download_pretrained``
    (hub first, else the tag's URL), the function ``open_clip.create_model`` calls."""
    import open_clip

    architecture, tag = row_text(row, "architecture"), row_text(row, "pretrained")
    cfg = open_clip.get_pretrained_cfg(architecture, tag)
    if not cfg:
        raise WeightsFetchError(
            f"model {row_text(row, 'model_id')!r}: open_clip {package_version('open_clip_torch')} has no pretrained tag "
            f"{tag!r} for {architecture!r}; known: {open_clip.list_pretrained_tags_by_model(architecture)}"
        )
    where = f"hf hub repo {cfg['hf_hub']!r}" if cfg.get("hf_hub") else f"url {cfg.get('url')!r}"
    try:
        path = open_clip.download_pretrained(cfg)
    except Exception as error:  # the loader's own errors: offline, 404, checksum mismatch
        raise _fail(row, where, error) from error
    if not path:
        raise WeightsFetchError(f"model {row_text(row, 'model_id')!r}: open_clip names no download for {where}")
    return [describe_file(path, _source_of(path, cfg.get("url", "")))]


def _timm_hub_file(hub_id: str, filename: str | None, custom_load: bool) -> str:
    """The cached file timm's ``load_pretrained`` reads for a hub source: an explicit ``.safetensors`` or
    custom-load file as named; otherwise the safetensors alternative when the repo has it, else the file."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError
    from timm.models._hub import HF_WEIGHTS_NAME, _get_safe_alternatives, hf_split

    repo_id, revision = hf_split(hub_id)
    filename = filename or HF_WEIGHTS_NAME
    if not (custom_load or filename.endswith(".safetensors")):
        for safe_filename in _get_safe_alternatives(filename):
            try:
                return hf_hub_download(repo_id=repo_id, filename=safe_filename, revision=revision)
            except EntryNotFoundError:
                pass
    return hf_hub_download(repo_id=repo_id, filename=filename, revision=revision)


def fetch_timm(row: Mapping[str, Any]) -> list[FetchedFile]:
    """Fetch a timm ``architecture.pretrained`` checkpoint from the source timm's own resolution picks
    (``timm.models._builder._resolve_pretrained_source``): the hub (with timm's safetensors preference), or
    its URL into the torch hub cache (``timm.models._hub.download_cached_file``)."""
    import timm
    from timm.models._builder import _resolve_pretrained_source
    from timm.models._hub import download_cached_file

    name = f"{row_text(row, 'architecture')}.{row_text(row, 'pretrained')}"
    if name not in timm.list_pretrained(name):
        raise WeightsFetchError(
            f"model {row_text(row, 'model_id')!r}: timm {package_version('timm')} has no pretrained checkpoint {name!r}"
        )
    cfg = timm.models.get_pretrained_cfg(name).to_dict()
    load_from, location = _resolve_pretrained_source(cfg)
    try:
        if load_from == "hf-hub":
            hub_id, filename = location if isinstance(location, (tuple, list)) else (location, None)
            path = _timm_hub_file(hub_id, filename, bool(cfg.get("custom_load")))
            return [describe_file(path, _source_of(path))]
        if load_from == "url":
            path = download_cached_file(location, check_hash=False)
            return [describe_file(path, location)]
    except Exception as error:
        raise _fail(row, f"timm {load_from} {location!r}", error) from error
    raise WeightsFetchError(f"model {row_text(row, 'model_id')!r}: timm names no download source for {name!r}")


#: Per-library fetchers: registry ``library`` value -> function of a registry row returning the fetched files.
FETCHERS: dict[str, Callable[[Mapping[str, Any]], list[FetchedFile]]] = {
    "open_clip": fetch_open_clip,
    "timm": fetch_timm,
}


def fetch_weights(row: Mapping[str, Any]) -> dict:
    """Fetch ``row``'s weights (registry row) and return its weights record (see the module docstring).

    A local ``weights_file`` is checked and hashed, not copied; a row without pretrained tag and file has
    random weights (no files). Raises :class:`WeightsFetchError` naming the model when they cannot be had.
    """
    from clip_robustness.models.adapters import ADAPTERS

    library = row_text(row, "library")
    if library not in ADAPTERS:
        raise WeightsFetchError(
            f"model {row_text(row, 'model_id')!r}: unknown library {library!r}; expected one of {sorted(ADAPTERS)}"
        )
    adapter = ADAPTERS[library]
    weights_file = row_text(row, "weights_file")
    if weights_file:
        if not Path(weights_file).expanduser().is_file():
            raise WeightsFetchError(
                f"model {row_text(row, 'model_id')!r}: the weights_file {weights_file!r} named in the model registry "
                "does not exist"
            )
        files = [describe_file(Path(weights_file).expanduser(), LOCAL_SOURCE)]
    elif row_text(row, "pretrained") and library in FETCHERS:
        files = FETCHERS[library](row)
    elif row_text(row, "pretrained"):
        path = adapter.fetch_weights(row)
        files = [describe_file(path, adapter.weights_location(row).where)] if path else []
    else:
        files = []
    return {
        "model_id": row_text(row, "model_id"),
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
    if not rows:
        return {}
    from clip_robustness.models.adapters import row_adapter
    from clip_robustness.models.adapters.base import MissingWeightsError, hub_offline

    if not hub_offline():
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
