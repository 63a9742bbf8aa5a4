"""The final layer of a zero-shot model: its image tower's features against a zero-shot text head.

Zero-shot logits are ``logit_scale * normalize(image_features) @ W``, computed in float32 with autocast
disabled (the image tower may run in reduced precision). The head itself (:class:`ZeroShotHead`: ``W``,
``logit_scale``) is built by the library's adapter (``build_text_head``) and saved by
:mod:`clip_robustness.models.zero_shot`; this module holds it and applies it. It imports torch, so adapters
import it in their methods (the adapter table itself stays torch-free).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


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


def zero_shot_logits(image_features: torch.Tensor, weights: torch.Tensor, logit_scale: float) -> torch.Tensor:
    """``logit_scale * normalize(image_features) @ weights``: float32 ``[n, 1000]`` logits.

    ``image_features``: ``[n, embed_dim]`` image embeddings; ``weights``: a head's ``[embed_dim, 1000]``
    matrix; ``logit_scale``: the head's multiplier.

    Computed in float32 even inside an autocast region (the image tower may run in bf16).
    """
    with torch.autocast(device_type=image_features.device.type, enabled=False):
        features = torch.nn.functional.normalize(image_features.float(), dim=-1)
        return logit_scale * (features @ weights.to(device=features.device, dtype=torch.float32))


class ZeroShotClassifier(torch.nn.Module):
    """An open_clip model's image tower plus a zero-shot head: images ``[n, 3, H, W]`` -> logits ``[n, 1000]``.

    ``head``: its :class:`ZeroShotHead` (the ``weights`` and ``logit_scale``)."""

    def __init__(self, clip_model: torch.nn.Module, head: ZeroShotHead):
        super().__init__()
        self.clip_model = clip_model
        self.logit_scale = float(head.logit_scale)
        self.register_buffer("head_weights", head.weights.detach().float().clone(), persistent=False)
        self.head_weights = self.head_weights.to(next(clip_model.parameters()).device)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return zero_shot_logits(self.clip_model.encode_image(images), self.head_weights, self.logit_scale)

    def with_embeddings(self) -> "LogitsAndEmbeddings":
        """The same final layer, also returning the L2-normalised image embeddings (the embeddings cache)."""
        return LogitsAndEmbeddings(self).eval()


class LogitsAndEmbeddings(torch.nn.Module):
    """A :class:`ZeroShotClassifier` that returns ``[logits | normalize(features)]``: float32 ``[n, 1000 + embed_dim]``.

    The logits are exactly the classifier's (:func:`zero_shot_logits` of the same features); the embeddings are the
    float32 unit vectors they are computed from, so ``logits == logit_scale * embeddings @ W``."""

    def __init__(self, classifier: ZeroShotClassifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        classifier = self.classifier
        features = classifier.clip_model.encode_image(images)
        logits = zero_shot_logits(features, classifier.head_weights, classifier.logit_scale)
        with torch.autocast(device_type=features.device.type, enabled=False):
            embeddings = torch.nn.functional.normalize(features.float(), dim=-1)
        return torch.cat([logits, embeddings], dim=1)
