"""open_clip's zero-shot ImageNet heads, built with open_clip's own metadata and builder.

The head is ``W`` (``[embed_dim, 1000]`` float32, unit-norm columns): for each ImageNet-1k class (open_clip's
``IMAGENET_CLASSNAMES``, OpenAI's names, in ImageNet index order) the normalised mean of the normalised
text embeddings of its prompts (``OPENAI_IMAGENET_TEMPLATES``: 80 templates, prompt set ``"openai"``; or
``SIMPLE_IMAGENET_TEMPLATES``: prompt set ``"simple"``), as ``open_clip.build_zero_shot_classifier`` makes it.
It imports torch, so the open_clip adapter imports it in :meth:`OpenClipAdapter.build_text_head`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

import torch

from clip_robustness.models.adapters.text_head import ZeroShotHead

if TYPE_CHECKING:
    from clip_robustness.models.prompt_sets import PromptSet

#: Prompt-set ids (config ``zero_shot.prompt_set``): the 80 OpenAI templates, or open_clip's simple set.
PROMPT_SETS = ("openai", "simple")


def templates_for(prompt_set: str) -> Sequence[Callable[[str], str]]:
    """open_clip's ImageNet templates for ``prompt_set`` (``"openai"``: 80, ``"simple"``: open_clip's short set)."""
    import open_clip

    if prompt_set == "openai":
        return open_clip.OPENAI_IMAGENET_TEMPLATES
    if prompt_set == "simple":
        return open_clip.SIMPLE_IMAGENET_TEMPLATES
    raise ValueError(f"unknown prompt set {prompt_set!r}; expected one of {list(PROMPT_SETS)}")


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

    options = {"device": device, "num_classes_per_batch": num_classes_per_batch, "progress": progress}
    return _head(
        model, tokenizer, model_id, prompt_set, open_clip.IMAGENET_CLASSNAMES, templates_for(prompt_set), **options
    )


def build_zero_shot_head_from(
    model: torch.nn.Module,
    tokenizer: Callable,
    model_id: str,
    prompts: "PromptSet",
    device: str | torch.device = "cpu",
    num_classes_per_batch: int = 10,
    progress: bool = False,
) -> ZeroShotHead:
    """The head of a prompt set of the ablation (:class:`~clip_robustness.models.prompt_sets.PromptSet`): its own
    templates (format strings) or open_clip's list it names, its own class names or open_clip's
    ``IMAGENET_CLASSNAMES``; built like :func:`build_zero_shot_head` (``open_clip.build_zero_shot_classifier``, float32,
    no_grad; only the text tower runs). ``prompt_set`` of the head is the set's name."""
    import open_clip

    templates = templates_for(prompts.builtin) if prompts.templates is None else [t.format for t in prompts.templates]
    classnames = open_clip.IMAGENET_CLASSNAMES if prompts.classnames is None else list(prompts.classnames)
    options = {"device": device, "num_classes_per_batch": num_classes_per_batch, "progress": progress}
    return _head(model, tokenizer, model_id, prompts.name, classnames, templates, **options)


def _head(
    model: torch.nn.Module,
    tokenizer: Callable,
    model_id: str,
    name: str,
    classnames: Sequence[str],
    templates: Sequence[Callable[[str], str]],
    *,
    device: str | torch.device,
    num_classes_per_batch: int,
    progress: bool,
) -> ZeroShotHead:
    """``open_clip.build_zero_shot_classifier`` over ``classnames`` x ``templates`` (float32, no_grad), as a head
    named ``name``."""
    import open_clip

    with torch.no_grad():
        weights = open_clip.build_zero_shot_classifier(
            model,
            tokenizer,
            classnames,
            templates,
            num_classes_per_batch=num_classes_per_batch,
            device=device,
            use_tqdm=progress,
        )
    return ZeroShotHead(
        weights=weights.detach().float().cpu().contiguous(),
        logit_scale=model_logit_scale(model),
        prompt_set=name,
        n_templates=len(templates),
        model_id=model_id,
    )
