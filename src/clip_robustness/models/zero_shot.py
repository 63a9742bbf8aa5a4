"""Zero-shot ImageNet heads for open_clip models, built with open_clip's own metadata and builder.

The head is ``W`` (``[embed_dim, 1000]`` float32, unit-norm columns): for each ImageNet-1k class (open_clip's
``IMAGENET_CLASSNAMES``, OpenAI's names, in ImageNet index order) the normalised mean of the normalised
text embeddings of its prompts (``OPENAI_IMAGENET_TEMPLATES``: 80 templates, prompt set ``"openai"``; or
``SIMPLE_IMAGENET_TEMPLATES``: prompt set ``"simple"``), as ``open_clip.build_zero_shot_classifier`` makes it.

Zero-shot logits are ``logit_scale * normalize(image_features) @ W`` where ``logit_scale`` is the
model's multiplier ``exp(model.logit_scale)`` (about 100 for trained CLIP models), computed by the open_clip
adapter's final layer (:mod:`clip_robustness.models.adapters.text_head`). A head is built once
per model and saved (:func:`save_head`) for every dataset's cache job.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from clip_robustness.models.adapters import row_adapter
from clip_robustness.models.adapters.text_head import ZeroShotClassifier, zero_shot_logits
from clip_robustness.models.build import build_model
from clip_robustness.workflow.io import atomic_path

#: What the logits jobs and the demo import from here: applying a head is the adapters' final layer
#: (:mod:`clip_robustness.models.adapters.text_head`); building and saving one is this module's.
__all__ = [
    "PROMPT_SETS", "HeadMismatchError", "ZeroShotClassifier", "ZeroShotHead", "build_head_for_row",
    "build_zero_shot_head", "load_head", "model_logit_scale", "save_head", "templates_for", "zero_shot_logits",
]

#: Prompt-set ids (config ``zero_shot.prompt_set``): the 80 OpenAI templates, or open_clip's simple set.
PROMPT_SETS = ("openai", "simple")


class HeadMismatchError(ValueError):
    """A saved zero-shot head belongs to another model or prompt set than the one asked for."""


def templates_for(prompt_set: str) -> Sequence[Callable[[str], str]]:
    """open_clip's ImageNet templates for ``prompt_set`` (``"openai"``: 80, ``"simple"``: open_clip's short set)."""
    import open_clip

    if prompt_set == "openai":
        return open_clip.OPENAI_IMAGENET_TEMPLATES
    if prompt_set == "simple":
        return open_clip.SIMPLE_IMAGENET_TEMPLATES
    raise ValueError(f"unknown prompt set {prompt_set!r}; expected one of {list(PROMPT_SETS)}")


@dataclass(frozen=True)
class ZeroShotHead:
    """A model's zero-shot ImageNet-1k head.

    ``weights``: float32 ``[embed_dim, 1000]``, unit-norm columns in ImageNet-1k index order.
    ``logit_scale``: the multiplier applied to cosine similarities (``exp`` of the model's log-scale).
    ``prompt_set``: template set id; ``n_templates``: prompts averaged per class; ``model_id``: registry id.
    """

    weights: torch.Tensor
    logit_scale: float
    prompt_set: str
    n_templates: int
    model_id: str

    def to_dict(self) -> dict:
        return {
            "weights": self.weights.detach().cpu().float().contiguous(),
            "logit_scale": float(self.logit_scale),
            "prompt_set": self.prompt_set,
            "n_templates": int(self.n_templates),
            "model_id": self.model_id,
        }


def model_logit_scale(model: torch.nn.Module) -> float:
    """The multiplier ``exp(model.logit_scale)`` an open_clip model applies to cosine similarities."""
    return float(model.logit_scale.detach().float().exp().reshape(-1)[0])


def build_zero_shot_head(
    model: torch.nn.Module,
    tokenizer: Callable,
    model_id: str,
    prompt_set: str = "openai",
    device: str | torch.device = "cpu",
    num_classes_per_batch: int = 10,
    progress: bool = False,
) -> ZeroShotHead:
    """Build ``model``'s head over open_clip's ImageNet class names with ``prompt_set``'s templates.

    ``tokenizer``: ``open_clip.get_tokenizer(architecture)``. Runs in float32 (no autocast) under no_grad.
    """
    import open_clip

    templates = templates_for(prompt_set)
    with torch.no_grad():
        weights = open_clip.build_zero_shot_classifier(
            model,
            tokenizer,
            open_clip.IMAGENET_CLASSNAMES,
            templates,
            num_classes_per_batch=num_classes_per_batch,
            device=device,
            use_tqdm=progress,
        )
    return ZeroShotHead(
        weights=weights.detach().float().cpu().contiguous(),
        logit_scale=model_logit_scale(model),
        prompt_set=prompt_set,
        n_templates=len(templates),
        model_id=model_id,
    )


def save_head(head: ZeroShotHead, path: str | os.PathLike) -> Path:
    """``torch.save`` the head's dict (:meth:`ZeroShotHead.to_dict`) atomically to ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(head.to_dict(), tmp)
    return path


def load_head(
    path: str | os.PathLike, model_id: str | None = None, prompt_set: str | None = None
) -> ZeroShotHead:
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
    tokenizer = adapter.tokenizer(row)  # refuses classifiers before anything is built
    model, _, _ = build_model(row, device)
    return build_zero_shot_head(model, tokenizer, str(row["model_id"]), prompt_set, device=device, progress=progress)
