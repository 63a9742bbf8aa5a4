"""Opening the images a manifest lists, for both input paths of the logits stage (reference and decoded)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset

from clip_robustness.names import manifest_path


class UnreadableImageError(RuntimeError):
    """An image listed in the manifest cannot be opened or decoded."""


class ManifestImageDataset(Dataset):
    """The images of a manifest in manifest order, each as ``preprocess(PIL RGB image)``.

    ``root``: folder the manifest paths are relative to; ``paths``: one relative path per manifest row;
    ``border_crop_px``: pixels cropped from every side before ``preprocess`` (ObjectNet: 2, else 0).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        paths: Sequence[str],
        preprocess: Callable[[Image.Image], torch.Tensor],
        border_crop_px: int = 0,
    ):
        self.root = Path(root)
        self.paths = list(paths)
        self.preprocess = preprocess
        self.border_crop_px = int(border_crop_px)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, position: int) -> torch.Tensor:
        return self.preprocess(open_manifest_image(self.root / self.paths[position], position, self.border_crop_px))


def open_manifest_image(path: Path, position: int, border_crop_px: int = 0) -> Image.Image:
    """Manifest row ``position``'s image at ``path`` as RGB, with ``border_crop_px`` pixels cropped
    from each side (ObjectNet: 2 px for its 1-pixel red border); :class:`UnreadableImageError` names the file."""
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise UnreadableImageError(
            f"manifest row {position}: cannot read image {path}: {exc}. Every image was fully decoded when the "
            "manifest was built, so this file changed since: delete the dataset's manifest "
            f"({manifest_path('<dataset>')}) and run the same command again; the manifest step then names the "
            "file and downloads.skip_corrupt_images decides whether it is left out."
        ) from exc
    b = border_crop_px
    if b:
        image = image.crop((b, b, image.width - b, image.height - b))
    return image
