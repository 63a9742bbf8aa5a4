"""What every model's final layer gives: ImageNet-1k logits, computed in float32 whatever autocast is active.

Imports no torch at import time (the Snakefile reads the adapter table at every invocation).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clip_robustness.names import NUM_CLASSES

if TYPE_CHECKING:
    import torch

#: Number of ImageNet-1k classes every model must output (:data:`clip_robustness.names.NUM_CLASSES`).
N_CLASSES = NUM_CLASSES

#: The dtype every model's final layer runs in (recorded as ``head_precision`` in the cache metadata).
HEAD_PRECISION = "float32"


def float32_final_layer(model: "torch.nn.Module") -> "torch.nn.Module":
    """``model`` with a float32 final layer, whatever autocast is active around it.

    A model with timm's ``forward_features``/``forward_head`` pair runs its features under the ambient autocast
    (reduced precision allowed) and its head with autocast disabled on float32 features; any other model runs
    whole with autocast disabled, float32 from input to logits.
    """
    import torch

    split = callable(getattr(model, "forward_features", None)) and callable(getattr(model, "forward_head", None))

    class Float32FinalLayer(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module):
            super().__init__()
            self.model = inner

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            features = self.model.forward_features(images) if split else images
            with torch.autocast(device_type=images.device.type, enabled=False):
                return (self.model.forward_head if split else self.model)(features.float())

    return Float32FinalLayer(model).eval()
