"""A model's preprocessing geometry: the :class:`DecodeSpec` record and its derivation from a model-registry row.

A model's evaluation transform (timm's ``create_transform``, open_clip's ``image_transform_v2``) is a
*geometry* (resize, crop: PIL image -> PIL image of the model's input size) followed by ``ToTensor`` and
``Normalize(mean, std)``. Many models share the geometry and differ only in mean/std; the decoded-image cache
(:mod:`clip_robustness.logits.decoded`) stores each dataset once per geometry.

The key (:func:`geometry_key`, e.g. ``224x224-bicubic-1f0e9c2d3b``) is a digest of the geometric steps'
class names and parameters; it is derived from a model-registry row without building the model
(:func:`decode_spec_for_row`: the adapter's ``decode_recipe``, e.g. timm's pretrained config, open_clip's
preprocess config), so the workflow knows it when the DAG is built. The logits job checks that the model it built
has the same key. Importing this module imports no torch (the libraries load when a transform is built).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from functools import lru_cache
from typing import Any, Callable, Mapping, Sequence

from clip_robustness.models.adapters import adapter_for, row_adapter
from clip_robustness.models.adapters.errors import UnsupportedPreprocessingError
from clip_robustness.models.adapters.rows import plain_json, row_text


@dataclasses.dataclass(frozen=True)
class DecodeSpec:
    """The preprocessing geometry of a model, as the decoded cache needs it.

    ``key``: filesystem-safe id of the geometry (``{H}x{W}-{interpolation}-{digest}``);
    ``input_size``: ``(H, W)`` pixels of the decoded images; ``steps``: JSON description of each geometric
    step (class and parameters); ``mean``/``std``: per-channel normalisation on [0, 1] pixel values (not
    part of the key: applied on the device); ``library``/``recipe``: the library transform's keyword
    arguments, enough to rebuild the geometry (:func:`geometry_from_recipe`).
    """

    key: str
    input_size: tuple[int, int]
    steps: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    library: str
    recipe: Mapping[str, Any]

    def recipe_params(self) -> dict:
        """``{"library": ..., "recipe": ...}``: plain JSON-able values for a rule's ``params``."""
        return {"library": self.library, "recipe": json.loads(json.dumps(dict(self.recipe)))}

    def to_json(self) -> dict:
        """The spec as plain JSON values (:meth:`from_json` reads it back)."""
        return {
            "key": self.key,
            "input_size": list(self.input_size),
            "steps": list(self.steps),
            "mean": list(self.mean),
            "std": list(self.std),
            **self.recipe_params(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "DecodeSpec":
        return cls(
            key=str(data["key"]),
            input_size=tuple(int(v) for v in data["input_size"]),  # type: ignore[arg-type]
            steps=tuple(str(s) for s in data["steps"]),
            mean=tuple(float(v) for v in data["mean"]),
            std=tuple(float(v) for v in data["std"]),
            library=str(data["library"]),
            recipe=dict(data["recipe"]),
        )


# ----------------------------------------------------------------------------- the geometry of a transform


def describe_step(step: Any) -> str:
    """JSON text naming a transform step's class and every public parameter (``fill`` included, which
    some transforms leave out of their repr)."""
    params = {k: plain_json(v) for k, v in sorted(vars(step).items()) if not k.startswith("_") and k != "training"}
    return json.dumps({"type": f"{type(step).__module__}.{type(step).__qualname__}", "params": params}, sort_keys=True)


def _is_rgb_conversion(step: Any) -> bool:
    name = getattr(step, "__name__", type(step).__name__)
    return name in ("_convert_to_rgb", "MaybeConvertMode", "convert_to_rgb")


def _is_to_tensor(step: Any) -> bool:
    return type(step).__name__ in ("ToTensor", "MaybeToTensor")


def split_transform(transform: Any, model_id: str = "") -> tuple[list[Callable], tuple[float, ...], tuple[float, ...]]:
    """Split an evaluation transform into ``(geometry steps, mean, std)``.

    ``transform``: a torchvision ``Compose`` of geometric PIL steps, optional RGB conversion, ``ToTensor`` (or
    timm's/open_clip's ``MaybeToTensor``) and ``Normalize``, as timm and open_clip build them for evaluation.
    Raises :class:`UnsupportedPreprocessingError` naming ``model_id`` for anything else.
    """
    steps = list(getattr(transform, "transforms", []))
    who = f"model {model_id!r}: " if model_id else ""
    hint = "; set inference.decoded_cache: false to run it through the reference path"
    if len(steps) < 2 or not _is_to_tensor(steps[-2]) or type(steps[-1]).__name__ != "Normalize":
        raise UnsupportedPreprocessingError(
            f"{who}transform {transform!r} does not end in ToTensor, Normalize: the decoded cache cannot hold it{hint}"
        )
    geometry = [s for s in steps[:-2] if not _is_rgb_conversion(s)]
    for step in geometry:
        if _is_to_tensor(step) or type(step).__name__ == "Normalize":
            raise UnsupportedPreprocessingError(
                f"{who}transform {transform!r} has {step!r} before its geometry ends{hint}"
            )
    import torch  # here, not at import time: the spec table (logits.specs) reads DecodeSpec without torch

    normalize = steps[-1]
    mean = tuple(float(v) for v in torch.as_tensor(normalize.mean).flatten().tolist())
    std = tuple(float(v) for v in torch.as_tensor(normalize.std).flatten().tolist())
    return geometry, mean, std


def _input_size(geometry: Sequence[Any]) -> tuple[int, int]:
    """``(H, W)`` of a geometry's output: the size of its last crop (or resize to an explicit (h, w))."""
    for step in reversed(geometry):
        size = getattr(step, "size", None)
        if isinstance(size, (tuple, list)) and len(size) == 2:
            return int(size[0]), int(size[1])
        if isinstance(size, (tuple, list)) and len(size) == 1:
            return int(size[0]), int(size[0])
    raise UnsupportedPreprocessingError(f"geometry {geometry!r} fixes no output size (no crop or (h, w) resize)")


def geometry_key(geometry: Sequence[Any]) -> str:
    """The filesystem-safe key of a geometry: ``{H}x{W}-{interpolation}-{first 10 hex of sha256}``.

    Two geometries have the same key exactly when their steps have the same classes and parameters.
    """
    h, w = _input_size(geometry)
    description = [describe_step(s) for s in geometry]
    digest = hashlib.sha256("\n".join(description).encode()).hexdigest()[:10]
    interpolations = {str(plain_json(getattr(s, "interpolation"))) for s in geometry if hasattr(s, "interpolation")}
    interp = "-".join(sorted(i.replace(" ", "") for i in interpolations)) or "none"
    return f"{h}x{w}-{interp}-{digest}"


def spec_from_transform(transform: Any, library: str, recipe: Mapping[str, Any], model_id: str = "") -> DecodeSpec:
    """The :class:`DecodeSpec` of an evaluation transform built by ``library`` from ``recipe``."""
    geometry, mean, std = split_transform(transform, model_id)
    return DecodeSpec(
        key=geometry_key(geometry),
        input_size=_input_size(geometry),
        steps=tuple(describe_step(s) for s in geometry),
        mean=mean,
        std=std,
        library=library,
        recipe=dict(recipe),
    )


# ----------------------------------------------------------------------------- specs without building models


def transform_from_recipe(library: str, recipe: Mapping[str, Any]) -> Any:
    """The library's own evaluation transform for ``recipe`` (its adapter's :meth:`transform_from_recipe`)."""
    return adapter_for(library).transform_from_recipe(recipe)


def geometry_from_recipe(library: str, recipe: Mapping[str, Any]) -> list[Callable]:
    """The geometric steps (PIL -> PIL) of the library transform built from ``recipe``."""
    return split_transform(transform_from_recipe(library, recipe))[0]


@lru_cache(maxsize=None)
def _spec_cached(library: str, architecture: str, tag: str, weights_file: str, model_id: str) -> DecodeSpec:
    row = {
        "model_id": model_id,
        "library": library,
        "architecture": architecture,
        "pretrained": tag,
        "weights_file": weights_file,
    }
    adapter = row_adapter(row)
    adapter.prepare()
    recipe = adapter.decode_recipe(row)
    return spec_from_transform(adapter.transform_from_recipe(recipe), library, recipe, model_id)


def decode_spec_for_row(row: Mapping[str, Any]) -> DecodeSpec:
    """The preprocessing geometry of a model-registry row, from the libraries' configs, without building it.

    Cached per process (the workflow asks once per model while building the DAG). Raises :class:`UnsupportedPreprocessingError` naming the model when its
    transform is not "geometry, ToTensor, Normalize".
    """
    return _spec_cached(
        *(row_text(row, key) for key in ("library", "architecture", "pretrained", "weights_file", "model_id"))
    )
