"""Where a model's weights come from, and the caches the libraries keep them in (the Hugging Face hub cache).

Nothing here imports a model library or torch at import time; the hub client is imported where it is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from clip_robustness.models.adapters.errors import MissingWeightsError
from clip_robustness.models.adapters.rows import row_text


@dataclass(frozen=True)
class WeightsLocation:
    """Where a model's weights come from, known without downloading anything.

    ``kind``: ``local`` (the registry's ``weights_file``), ``hub`` (a Hugging Face hub repo, read through
    the hub cache), ``url`` (a download URL of the library), ``factory`` (the model's own constructor
    provides them) or ``random`` (no weights). ``where``: the path, repo id or URL (``""`` for
    ``random``/``factory``); ``filenames``: the hub files tried in order.
    """

    kind: str
    where: str = ""
    filenames: tuple[str, ...] = ()


def hub_cache_dir() -> str:
    """The Hugging Face hub cache folder (``HF_HUB_CACHE``)."""
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set: nothing is downloaded."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def missing_weights(
    model_id: str, where: str, cause: BaseException | None = None, local: bool = False
) -> MissingWeightsError:
    """The :class:`MissingWeightsError` naming ``model_id``, the expected location and what to do."""
    offline = "" if local or not hub_offline() else " (HF_HUB_OFFLINE is set: nothing is downloaded)"
    hint = (
        "Put the file there, or correct the weights_file column of the model registry."
        if local
        else "Download them on a node with internet (building the model once there fills the cache), copy the "
        "hub cache to this node, or name a local file in the registry's weights_file column."
    )
    detail = f" Last error: {cause}" if cause is not None else ""
    return MissingWeightsError(f"model {model_id!r}: weights not available{offline}; expected {where}. {hint}{detail}")


def local_weights(row: Mapping[str, Any]) -> str | None:
    """The registry's ``weights_file`` when set (:class:`MissingWeightsError` if it does not exist), else ``None``."""
    weights_file = row_text(row, "weights_file")
    if not weights_file:
        return None
    path = Path(weights_file).expanduser()
    if not path.is_file():
        raise missing_weights(
            row_text(row, "model_id"),
            f"at the local weights_file {str(path)!r} named in the model registry",
            local=True,
        )
    return str(path)


def load_state_dict(path: str) -> dict:
    """A state dict from a ``.safetensors`` file or a ``torch.save`` file (loaded with ``weights_only``)."""
    import torch

    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def hub_source(cached_file: str) -> str:
    """The hub URL a file of the Hugging Face hub cache was downloaded from (endpoint, repo, commit, file name),
    read from its place in the cache (``models--{org}--{name}/snapshots/{commit}/{filename}``)."""
    from huggingface_hub import constants, hf_hub_url

    relative = Path(cached_file).absolute().relative_to(Path(constants.HF_HUB_CACHE).absolute())
    repo_folder, snapshots, commit, *filename = relative.parts
    if snapshots != "snapshots" or not repo_folder.startswith("models--") or not filename:
        return f"hub cache file {cached_file}"
    repo_id = repo_folder.removeprefix("models--").replace("--", "/")
    return hf_hub_url(repo_id, "/".join(filename), revision=commit)


def source_of(cached_file: str, url: str = "") -> str:
    """Where a fetched file came from: its hub URL for a file of the hub cache, else ``url`` (or the file itself)."""
    from huggingface_hub import constants

    if Path(cached_file).absolute().is_relative_to(Path(constants.HF_HUB_CACHE).absolute()):
        return hub_source(cached_file)
    return url or f"file {cached_file}"
