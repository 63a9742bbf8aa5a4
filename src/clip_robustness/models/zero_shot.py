"""Zero-shot ImageNet heads of zero-shot models: built by the model's adapter (``build_text_head``; open_clip:
:mod:`clip_robustness.models.adapters.open_clip_head`), saved once per model and loaded by every dataset's job.

The head is ``W`` (``[embed_dim, 1000]`` float32, unit-norm columns in ImageNet-1k index order) and the model's
``logit_scale``.

Zero-shot logits are ``logit_scale * normalize(image_features) @ W`` where ``logit_scale`` is the
model's multiplier ``exp(model.logit_scale)`` (about 100 for trained CLIP models), computed by the open_clip
adapter's final layer (:mod:`clip_robustness.models.adapters.text_head`). A head is built once
per model and saved (:func:`save_head`) for every dataset's cache job.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch

from clip_robustness.models.adapters import row_adapter
from clip_robustness.models.adapters.text_head import ZeroShotHead
from clip_robustness.models.build import build_model
from clip_robustness.workflow.io import atomic_path


class HeadMismatchError(ValueError):
    """A saved zero-shot head belongs to another model or prompt set than the one asked for."""


def save_head(head: ZeroShotHead, path: str | os.PathLike) -> Path:
    """``torch.save`` the head's dict (:meth:`ZeroShotHead.to_dict`) atomically to ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(head.to_dict(), tmp)
    return path


def load_head(path: str | os.PathLike, model_id: str | None = None, prompt_set: str | None = None) -> ZeroShotHead:
    """Load a head saved by :func:`save_head`; :class:`HeadMismatchError` if it is not ``model_id``'s / ``prompt_set``'s."""
    data = torch.load(Path(path), map_location="cpu", weights_only=True)
    head = ZeroShotHead(
        weights=data["weights"],
        logit_scale=float(data["logit_scale"]),
        prompt_set=str(data["prompt_set"]),
        n_templates=int(data["n_templates"]),
        model_id=str(data["model_id"]),
    )
    for key, wanted, found in (("model_id", model_id, head.model_id), ("prompt_set", prompt_set, head.prompt_set)):
        if wanted is not None and wanted != found:
            raise HeadMismatchError(
                f"{path}: zero-shot head has {key} {found!r}, expected {wanted!r}; delete it and rerun to rebuild it"
            )
    return head


def build_head_for_row(
    row: Mapping[str, Any], prompt_set: str, device: str | torch.device, progress: bool = True
) -> ZeroShotHead:
    """Build the zero-shot head of registry ``row`` (a zero-shot model, whose adapter needs a text head) with
    ``prompt_set``'s templates. A classifier's row is refused (``ValueError`` naming the model and its library)."""
    adapter = row_adapter(row)
    adapter.tokenizer(row)  # refuses classifiers before anything is built
    model, _, _ = build_model(row, device)
    return adapter.build_text_head(model, row, prompt_set, device, progress)


def build_ablation_head(row: Mapping[str, Any], spec: str, progress: bool = False) -> ZeroShotHead:
    """The text head of ``row`` (a zero-shot model) for prompt-set ablation entry ``spec`` (a built-in id or a prompt
    file, :mod:`clip_robustness.models.prompt_sets`), built on CPU: the model is built on CPU, its image tower
    dropped before any prompt is encoded, and only the text tower runs."""
    from clip_robustness.models.prompt_sets import resolve_prompt_set

    prompts = resolve_prompt_set(spec)  # a bad file fails before a model is built
    adapter = row_adapter(row)
    adapter.tokenizer(row)  # refuses classifiers before anything is built
    model, _, _ = build_model(row, "cpu")
    if isinstance(getattr(model, "visual", None), torch.nn.Module):
        model.visual = torch.nn.Identity()  # the text tower only: free the image tower's memory
    return adapter.build_text_head(model, row, prompts.name, "cpu", progress, prompts=prompts)
