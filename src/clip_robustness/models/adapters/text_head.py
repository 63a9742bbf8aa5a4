"""The final layer of a zero-shot model: its image tower's features against a zero-shot text head.

Zero-shot logits are ``logit_scale * normalize(image_features) @ W``, computed in float32 with autocast
disabled (the image tower may run in reduced precision). The head itself (``W``, ``logit_scale``) is built and
saved by :mod:`clip_robustness.models.zero_shot`; this module only applies it. It imports torch, so adapters
import it in their methods (the adapter table itself stays torch-free).
"""

from __future__ import annotations

from typing import Any

import torch


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

    ``head``: a :class:`~clip_robustness.models.zero_shot.ZeroShotHead` (its ``weights`` and ``logit_scale``)."""

    def __init__(self, clip_model: torch.nn.Module, head: Any):
        super().__init__()
        self.clip_model = clip_model
        self.logit_scale = float(head.logit_scale)
        self.register_buffer("head_weights", head.weights.detach().float().clone(), persistent=False)
        self.head_weights = self.head_weights.to(next(clip_model.parameters()).device)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return zero_shot_logits(self.clip_model.encode_image(images), self.head_weights, self.logit_scale)
