"""A toy model library and its adapter, a plug-in of the adapter table (``CLIP_ROBUSTNESS_ADAPTERS=toy_adapter:ToyAdapter``
with this folder on ``PYTHONPATH``). No dependency beyond torch and torchvision: the "library" is :data:`ARCHITECTURES`
(tiny torch modules), its "download" writes a checkpoint made from the tag into its cache folder (``TOY_CACHE``).

Used by tests/test_toy_adapter.py to show that a new model library needs its adapter and nothing else of the package.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Any, Callable, Mapping

from clip_robustness.models.adapters.base import ModelAdapter
from clip_robustness.models.adapters.errors import ModelBuildError, RowProblem
from clip_robustness.models.adapters.final_layer import N_CLASSES, float32_final_layer
from clip_robustness.models.adapters.rows import row_text
from clip_robustness.models.adapters.sources import WeightsLocation, hub_offline, load_state_dict, missing_weights

#: The library's architectures: name -> (input size, resize before the centre crop).
ARCHITECTURES = {"tinynet": (32, 40)}
#: The library's pretrained tags.
TAGS = ("seed1", "seed2")
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
CACHE_VARIABLE = "TOY_CACHE"


def toy_model(architecture: str) -> Any:
    import torch

    class TinyNet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pool = torch.nn.AdaptiveAvgPool2d(4)
            self.fc = torch.nn.Linear(3 * 4 * 4, N_CLASSES)

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return self.fc(self.pool(images).flatten(1))

    return TinyNet()


def toy_transform(size: int, resize: int) -> Callable:
    from torchvision import transforms

    return transforms.Compose(
        [
            transforms.Resize(resize, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize(MEAN, STD),
        ]
    )


class ToyAdapter(ModelAdapter):
    name = "toy"
    distribution = "torch"
    id_prefix = "toy"
    cli_separator = "@"

    def _architecture(self, architecture: str) -> tuple[int, int]:
        if architecture not in ARCHITECTURES:
            raise ModelBuildError(f"architecture {architecture!r}: the toy library has no such model")
        return ARCHITECTURES[architecture]

    def has_architecture(self, architecture: str) -> bool:
        return architecture in ARCHITECTURES

    def library_input_size(self, architecture: str, tag: str) -> int:
        return self._architecture(architecture)[0]

    def registry_input_size(self, row: Mapping[str, Any]) -> int | None:
        try:
            size = self._architecture(row_text(row, "architecture"))[0]
        except ModelBuildError as error:
            raise RowProblem(str(error)) from error
        if not row_text(row, "weights_file") and row_text(row, "pretrained") not in TAGS:
            raise RowProblem(f"tag {row_text(row, 'pretrained')!r} is not one of the toy library's {TAGS}")
        return size

    def tag_weights_location(self, row: Mapping[str, Any]) -> WeightsLocation:
        return WeightsLocation("url", f"toy://{row_text(row, 'architecture')}/{row_text(row, 'pretrained')}")

    def download_weights(self, row: Mapping[str, Any], location: WeightsLocation) -> str | None:
        import torch
        from safetensors.torch import save_file

        path = (
            Path(os.environ[CACHE_VARIABLE])
            / f"{row_text(row, 'architecture')}-{row_text(row, 'pretrained')}.safetensors"
        )
        if path.is_file():
            return str(path)
        if hub_offline():
            raise missing_weights(row_text(row, "model_id"), f"toy url {location.where!r} in {path.parent}")
        torch.manual_seed(zlib.crc32(row_text(row, "pretrained").encode()))
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(toy_model(row_text(row, "architecture")).state_dict(), str(path))
        return str(path)

    def build(self, row: Mapping[str, Any], device: Any, weights: str | None) -> tuple[Any, Callable, dict]:
        size, resize = self._architecture(row_text(row, "architecture"))
        model = toy_model(row_text(row, "architecture"))
        if weights:
            model.load_state_dict(load_state_dict(weights), strict=True)
        transform = toy_transform(size, resize)
        info = {
            "library": self.name,
            "input_size": [3, size, size],
            "resize_mode": "shortest",
            "crop_pct": size / resize,
            "crop_mode": "center",
            "interpolation": "bicubic",
            "mean": list(MEAN),
            "std": list(STD),
            "transform": repr(transform),
        }
        return model.to(device).eval(), transform, info

    def classifier(self, model: Any, head: Any = None) -> Any:
        return float32_final_layer(model)

    def decode_recipe(self, row: Mapping[str, Any]) -> dict:
        size, resize = self._architecture(row_text(row, "architecture"))
        return {"size": size, "resize": resize}

    def transform_from_recipe(self, recipe: Mapping[str, Any]) -> Callable:
        return toy_transform(int(recipe["size"]), int(recipe["resize"]))
