"""Model and transform construction from a model-registry row, through the row's library adapter.

A registry row (see ``config/models.tsv`` and :mod:`clip_robustness.models.registry`) is a dict with at
least ``model_id``, ``library`` (a key of :data:`clip_robustness.models.adapters.ADAPTERS`), ``architecture``
(the library's model name), ``pretrained`` (the library's pretrained tag; empty for random weights) and
``weights_file`` (a local weight file, empty unless the registry names one).

Weights always come through the libraries' own loaders: the Hugging Face hub cache (open_clip's and
timm's default source), open_clip's checksummed URL downloads, or the local ``weights_file``. Before a
model is built, :func:`resolve_weights` checks that its weights can be had (on an offline node: that
they are in the cache) and raises :class:`MissingWeightsError` naming the model and where the weights
are expected, so no GPU time is spent on a job that cannot finish.

Importing this module prepares every adapter's library (open_clip: registers the tiny configs shipped in
``clip_robustness/resources/open_clip_configs/``, used by the demo and the tests).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping

import torch

from clip_robustness.models.adapters import ADAPTERS, row_adapter
from clip_robustness.models.adapters.errors import MissingWeightsError, ModelBuildError
from clip_robustness.models.adapters.rows import row_text

#: The errors are the adapters'; callers that build models catch them from here.
__all__ = [
    "MissingWeightsError",
    "ModelBuildError",
    "build_model",
    "library_version",
    "resolve_weights",
    "select_device",
]

log = logging.getLogger(__name__)

for _adapter in ADAPTERS.values():
    _adapter.prepare()


def select_device() -> str:
    """``"cuda"`` when a GPU is visible, else ``"cpu"`` (the CPU fallback)."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def library_version(row: Mapping[str, Any]) -> str:
    """Installed version of the library that builds ``row``'s model, for the cache metadata."""
    return row_adapter(row).version(row)


def resolve_weights(row: Mapping[str, Any]) -> str | None:
    """Check, before any model is built, that ``row``'s weights can be had; return where they are.

    Returns the local weights file (the registry's ``weights_file``, or the file in the hub cache that
    the library will load), or ``None`` for random weights (empty ``pretrained`` and ``weights_file``) and
    weights the library fetches itself. Downloads only where the library itself would (online, not
    ``HF_HUB_OFFLINE``). Raises :class:`ModelBuildError` for an unknown library, architecture or tag,
    :class:`MissingWeightsError` naming the model and the expected location when the weights cannot be had.
    """
    adapter = row_adapter(row)
    adapter.check_architecture(row)
    return adapter.fetch_weights(row)


def build_model(row: Mapping[str, Any], device: str | torch.device) -> tuple[torch.nn.Module, Callable, dict]:
    """Build ``row``'s model in eval mode on ``device`` with its own evaluation transform.

    Returns ``(model, preprocess, preprocessing_info)``: ``preprocess`` maps a PIL RGB image to a
    normalised ``[3, H, W]`` float tensor; ``preprocessing_info`` is the adapter's record (timm, open_clip:
    ``input_size`` ([C, H, W] pixels), ``resize_mode``, ``crop_pct``, ``crop_mode``, ``interpolation``,
    ``mean``, ``std``, ``quick_gelu`` (open_clip) and the transform's repr). The model is the library's
    (open_clip: the full CLIP model, whose logits need its zero-shot head); ImageNet logits come from
    ``row_adapter(row).classifier(model, head)``. Weights are checked first (:func:`resolve_weights`).
    """
    weights = resolve_weights(row)
    device = torch.device(device)
    log.info(
        "building %s (%s %s, pretrained=%r, weights=%r) on %s",
        row_text(row, "model_id"),
        row_text(row, "library"),
        row_text(row, "architecture"),
        row_text(row, "pretrained"),
        weights,
        device,
    )
    return row_adapter(row).build(row, device, weights)
