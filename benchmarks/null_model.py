"""A null model for the benchmarks, built by the pipeline's ``python`` adapter: logits from a fixed projection.

Registry row (``benchmarks/`` on ``sys.path``): ``library`` = ``python``, ``architecture`` = ``null_model:null_64``
(64 px) or ``null_model:null_224`` (224 px, ViT-B-32's input size). The model maps a ``[b, 3, H, W]`` batch to
``[b, 1000]`` logits: the per-channel means of the image through a fixed, seeded ``3 -> 1000`` linear map, so the
job's every other step (read, copy, normalise, gather, write) runs on real shapes while the forward costs almost
nothing. The transform is a torchvision ``Compose`` (resize, centre crop, ``ToTensor``, ``Normalize``), so the
decoded cache holds it.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

#: ImageNet channel mean and std (the torchvision convention).
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)

#: Logits per image, as every model of the study.
N_CLASSES = 1000


class NullProjection(nn.Module):
    """Per-channel means through a fixed linear map to 1000 logits (seeded weights, so every build is the same)."""

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.projection = nn.Linear(3, N_CLASSES)
        if self.projection.weight.device.type != "meta":
            with torch.no_grad():
                self.projection.weight.copy_(torch.randn(N_CLASSES, 3, generator=generator))
                self.projection.bias.zero_()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.projection(images.mean(dim=(2, 3)))


def _null(size: int) -> tuple[nn.Module, Callable]:
    from torchvision import transforms

    transform = transforms.Compose(
        [transforms.Resize(size), transforms.CenterCrop(size), transforms.ToTensor(), transforms.Normalize(MEAN, STD)]
    )
    return NullProjection().eval(), transform


def null_64() -> tuple[nn.Module, Callable]:
    """The null model at 64 px (small datasets: per-dataset costs dominate)."""
    return _null(64)


def null_224() -> tuple[nn.Module, Callable]:
    """The null model at 224 px (the per-image costs of a ViT-B-32-sized input)."""
    return _null(224)
