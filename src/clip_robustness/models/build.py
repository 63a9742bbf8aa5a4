"""Model and transform construction from a model-registry row, through open_clip's and timm's own loaders.

A registry row (see ``config/models.tsv`` and :mod:`clip_robustness.models.registry`) is a dict with at
least ``model_id``, ``library`` (``open_clip`` | ``timm``), ``architecture`` (the library's model name),
``pretrained`` (the library's pretrained tag; empty for random weights) and ``weights_file`` (a local
weight file, empty unless the registry names one).

Weights always come through the libraries' own loaders: the Hugging Face hub cache (open_clip's and
timm's default source), open_clip's checksummed URL downloads, or the local ``weights_file``. Before a
model is built, :func:`resolve_weights` checks that its weights can be had (on an offline node: that
they are in the cache) and raises :class:`MissingWeightsError` naming the model and where the weights
are expected, so no GPU time is spent on a job that cannot finish.

Importing this module registers the tiny open_clip configs shipped in
``clip_robustness/resources/open_clip_configs/`` (used by the demo and the tests).
"""

from __future__ import annotations

import logging
import math
import os
from importlib.metadata import version as package_version
from importlib.resources import files
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

log = logging.getLogger(__name__)

#: Folder of the tiny open_clip model configs shipped with the package (``{name}.json``).
OPEN_CLIP_CONFIG_DIR = Path(str(files("clip_robustness") / "resources" / "open_clip_configs"))

#: The distribution name of each supported library (for version records).
LIBRARY_DISTRIBUTIONS = {"open_clip": "open_clip_torch", "timm": "timm"}

#: Number of ImageNet-1k classes every model must output.
N_CLASSES = 1000


class ModelBuildError(ValueError):
    """A registry row names a library, architecture or pretrained tag that the pinned library lacks."""


class MissingWeightsError(RuntimeError):
    """A model's weights are neither in the local cache nor downloadable (for example on an offline node)."""


def register_open_clip_configs(config_dir: Path = OPEN_CLIP_CONFIG_DIR) -> list[str]:
    """Register the shipped tiny open_clip configs with ``open_clip.add_model_config``.

    Returns the architecture names now available (the JSON file stems). Idempotent.
    """
    import open_clip

    names = sorted(p.stem for p in config_dir.glob("*.json"))
    if names and not set(names) <= set(open_clip.list_models()):
        open_clip.add_model_config(config_dir)
    return names


register_open_clip_configs()


def select_device() -> str:
    """``"cuda"`` when a GPU is visible, else ``"cpu"`` (the CPU fallback)."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def library_version(library: str) -> str:
    """Installed version of ``library`` (``open_clip`` or ``timm``), for the cache metadata."""
    if library not in LIBRARY_DISTRIBUTIONS:
        raise ModelBuildError(f"unknown library {library!r}; expected one of {sorted(LIBRARY_DISTRIBUTIONS)}")
    return package_version(LIBRARY_DISTRIBUTIONS[library])


def _text(row: Mapping[str, Any], key: str) -> str:
    """A registry field as a stripped string; missing, None and NaN read as ``""``."""
    value = row.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def _hub_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _open_clip_tag_cfg(architecture: str, tag: str) -> dict:
    """open_clip's pretrained config for ``(architecture, tag)``; ``{}`` when the tag is unknown."""
    import open_clip

    return dict(open_clip.get_pretrained_cfg(architecture, tag) or {})


def _timm_tag_known(architecture: str, tag: str) -> bool:
    import timm

    return f"{architecture}.{tag}" in timm.list_pretrained(f"{architecture}.*")


def _check_architecture(row: Mapping[str, Any]) -> None:
    model_id, library, architecture = _text(row, "model_id"), _text(row, "library"), _text(row, "architecture")
    if library == "open_clip":
        import open_clip

        if architecture not in open_clip.list_models():
            raise ModelBuildError(
                f"model {model_id!r}: open_clip {library_version(library)} has no architecture {architecture!r} "
                "(see open_clip.list_models())"
            )
    elif library == "timm":
        import timm

        if not timm.is_model(architecture):
            raise ModelBuildError(
                f"model {model_id!r}: timm {library_version(library)} has no architecture {architecture!r} "
                "(see timm.list_models())"
            )
    else:
        raise ModelBuildError(
            f"model {model_id!r}: unknown library {library!r}; expected one of {sorted(LIBRARY_DISTRIBUTIONS)}"
        )


def _missing(model_id: str, where: str, cause: BaseException | None = None, local: bool = False) -> MissingWeightsError:
    offline = "" if local or not _hub_offline() else " (HF_HUB_OFFLINE is set: nothing is downloaded)"
    hint = (
        "Put the file there, or correct the weights_file column of the model registry."
        if local
        else "Download them on a node with internet (building the model once there fills the cache), copy the "
        "hub cache to this node, or name a local file in the registry's weights_file column."
    )
    detail = f" Last error: {cause}" if cause is not None else ""
    return MissingWeightsError(f"model {model_id!r}: weights not available{offline}; expected {where}. {hint}{detail}")


def resolve_weights(row: Mapping[str, Any]) -> str | None:
    """Check, before any model is built, that ``row``'s weights can be had; return where they are.

    Returns the local weights file (the registry's ``weights_file``, or the file in the hub cache that
    the library will load), or ``None`` for random weights (empty ``pretrained`` and ``weights_file``).
    Downloads only where the library itself would (online, not ``HF_HUB_OFFLINE``).
    Raises :class:`ModelBuildError` for an unknown architecture or tag, :class:`MissingWeightsError`
    naming the model and the expected location when the weights cannot be had.
    """
    model_id, library = _text(row, "model_id"), _text(row, "library")
    architecture, tag, weights_file = _text(row, "architecture"), _text(row, "pretrained"), _text(row, "weights_file")
    _check_architecture(row)

    if weights_file:
        path = Path(weights_file).expanduser()
        if not path.is_file():
            raise _missing(model_id, f"at the local weights_file {str(path)!r} named in the model registry", local=True)
        return str(path)
    if not tag:
        return None

    if library == "open_clip":
        import open_clip

        cfg = _open_clip_tag_cfg(architecture, tag)
        if not cfg:
            raise ModelBuildError(
                f"model {model_id!r}: open_clip has no pretrained tag {tag!r} for {architecture!r}; known tags: "
                f"{open_clip.list_pretrained_tags_by_model(architecture)}"
            )
        source = f"hf hub repo {cfg['hf_hub']!r}" if cfg.get("hf_hub") else f"url {cfg.get('url')!r}"
        try:
            return str(open_clip.download_pretrained(cfg))
        except Exception as exc:  # the loader's own errors: offline, 404, checksum mismatch
            raise _missing(model_id, f"open_clip {source} in the cache {_hub_cache_dir()!r}", exc) from exc

    # timm
    import timm

    if not _timm_tag_known(architecture, tag):
        raise ModelBuildError(
            f"model {model_id!r}: timm has no pretrained tag {tag!r} for {architecture!r}; known: "
            f"{timm.list_pretrained(f'{architecture}.*')}"
        )
    cfg = timm.models.get_pretrained_cfg(f"{architecture}.{tag}").to_dict()
    hub_id = cfg.get("hf_hub_id")
    if not hub_id:
        if _hub_offline():
            raise _missing(model_id, f"timm url {cfg.get('url')!r} in the torch hub cache")
        return None  # timm downloads it from its url when building
    from huggingface_hub import hf_hub_download

    candidates = [cfg["hf_hub_filename"]] if cfg.get("hf_hub_filename") else ["model.safetensors", "pytorch_model.bin"]
    last_error: BaseException | None = None
    for filename in candidates:
        try:
            return str(hf_hub_download(repo_id=hub_id, filename=filename))
        except Exception as exc:
            last_error = exc
    raise _missing(model_id, f"timm hf hub repo {hub_id!r} ({' or '.join(candidates)}) in the cache {_hub_cache_dir()!r}", last_error)


def _open_clip_preprocessing(model: torch.nn.Module, preprocess: Callable, quick_gelu: bool) -> dict:
    cfg = dict(model.visual.preprocess_cfg)
    size = cfg["size"]
    size = [int(size), int(size)] if isinstance(size, int) else [int(s) for s in size]
    return {
        "library": "open_clip",
        "input_size": [3, *size],
        "resize_mode": cfg.get("resize_mode", "shortest"),
        # open_clip's eval transform resizes the shortest side to the input size, then centre-crops.
        "crop_pct": 1.0,
        "crop_mode": "center",
        "interpolation": str(cfg["interpolation"]),
        "mean": [float(v) for v in cfg["mean"]],
        "std": [float(v) for v in cfg["std"]],
        "quick_gelu": bool(quick_gelu),
        "transform": repr(preprocess),
    }


def _timm_preprocessing(data_config: Mapping[str, Any], preprocess: Callable) -> dict:
    return {
        "library": "timm",
        "input_size": [int(v) for v in data_config["input_size"]],
        "resize_mode": "shortest",
        "crop_pct": float(data_config["crop_pct"]),
        "crop_mode": str(data_config.get("crop_mode", "center")),
        "interpolation": str(data_config["interpolation"]),
        "mean": [float(v) for v in data_config["mean"]],
        "std": [float(v) for v in data_config["std"]],
        "transform": repr(preprocess),
    }


def build_model(row: Mapping[str, Any], device: str | torch.device) -> tuple[torch.nn.Module, Callable, dict]:
    """Build ``row``'s model in eval mode on ``device`` with its own evaluation transform.

    Returns ``(model, preprocess, preprocessing_info)``: ``preprocess`` maps a PIL RGB image to a
    normalised ``[3, H, W]`` float tensor; ``preprocessing_info`` records ``input_size`` ([C, H, W] pixels),
    ``resize_mode``, ``crop_pct`` (centre-crop fraction), ``crop_mode``, ``interpolation``, ``mean`` and
    ``std`` (per-channel, on [0, 1] pixel values), ``quick_gelu`` (open_clip) and the transform's repr.
    open_clip models return the full CLIP model (heads are applied by :mod:`clip_robustness.models.zero_shot`);
    timm models output 1000 ImageNet logits. Weights are checked first (:func:`resolve_weights`).
    """
    model_id, library = _text(row, "model_id"), _text(row, "library")
    architecture, tag, weights_file = _text(row, "architecture"), _text(row, "pretrained"), _text(row, "weights_file")
    weights = resolve_weights(row)
    device = torch.device(device)
    log.info("building %s (%s %s, pretrained=%r, weights=%r) on %s", model_id, library, architecture, tag, weights, device)

    if library == "open_clip":
        import open_clip

        tag_cfg = _open_clip_tag_cfg(architecture, tag) if tag else {}
        quick_gelu = bool(tag_cfg.get("quick_gelu", False)) or architecture.endswith("-quickgelu")
        kwargs: dict[str, Any] = {"force_quick_gelu": quick_gelu}
        if weights_file:
            pretrained: str | None = weights
            # A local file of a known tag keeps that tag's preprocessing (mean/std, interpolation, resize).
            overrides = {k: tag_cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in tag_cfg}
            if overrides:
                kwargs["force_preprocess_cfg"] = overrides
        else:
            pretrained = tag or None
        model, _, preprocess = open_clip.create_model_and_transforms(
            architecture, pretrained=pretrained, device=device, **kwargs
        )
        info = _open_clip_preprocessing(model, preprocess, quick_gelu)
    else:
        import timm

        known_tag = bool(tag) and _timm_tag_known(architecture, tag)
        name = f"{architecture}.{tag}" if known_tag else architecture
        if weights_file:
            model = timm.create_model(
                name, pretrained=True, pretrained_cfg_overlay={"file": weights}, num_classes=N_CLASSES
            )
        else:
            model = timm.create_model(name, pretrained=bool(tag), num_classes=N_CLASSES)
        data_config = timm.data.resolve_model_data_config(model)
        preprocess = timm.data.create_transform(**data_config, is_training=False)
        info = _timm_preprocessing(data_config, preprocess)
        model = model.to(device)
    model.eval()
    return model, preprocess, info


def offline_hint() -> str:
    """A one-line description of where weights are looked up, for job logs."""
    return f"HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '')!r}, hub cache {_hub_cache_dir()!r}"
