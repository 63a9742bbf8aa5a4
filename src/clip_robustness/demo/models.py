"""A demo model of one's own, for the ``python`` model adapter (registry ``library`` = ``python``).

:func:`tiny_convnet` is what a user's ``pkg.module:function`` looks like: called with no arguments, it
returns ``(model, transform)``, the model mapping ``[b, 3, 32, 32]`` images to 1000 ImageNet logits and
the transform a torchvision ``Compose`` (geometry, ``ToTensor``, ``Normalize``) so the decoded cache can
hold it. The demo generator trains it for a few seconds and saves its state dict as the registry's
``weights_file``; the pipeline builds it through :mod:`clip_robustness.models.adapters.python`.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

#: Input side in pixels, and the side the image is resized to before the centre crop.
INPUT_SIZE = 32
RESIZE_SIZE = 40

#: ImageNet channel mean and std (the torchvision convention), on [0, 1] pixel values.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class TinyConvNet(nn.Module):
    """Three conv blocks, global average pooling and a linear 1000-class head, split like a timm model into
    ``forward_features`` (pooled features) and ``forward_head`` (the final layer)."""

    def __init__(self, width: int = 16, num_classes: int = 1000):
        super().__init__()

        def block(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2))

        self.features = nn.Sequential(block(3, width), block(width, 2 * width), block(2 * width, 2 * width))
        self.head = nn.Linear(2 * width, num_classes)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images).mean(dim=(2, 3))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(images))


def tiny_convnet() -> tuple[nn.Module, Callable]:
    """A randomly initialised :class:`TinyConvNet` and its evaluation transform (resize to 40 px, bilinear; centre
    crop 32 px; ToTensor; ImageNet Normalize)."""
    from torchvision import transforms

    transform = transforms.Compose(
        [
            transforms.Resize(RESIZE_SIZE, interpolation=transforms.InterpolationMode.BILINEAR),
            transforms.CenterCrop(INPUT_SIZE),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    return TinyConvNet(), transform
