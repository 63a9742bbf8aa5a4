"""The ``python`` adapter: a model from one's own ``module:function``.

Registry rows: ``library`` = ``python``, ``architecture`` = ``pkg.module:function`` (importable where the
pipeline runs), ``pretrained`` = a tag of one's own naming the weights, ``weights_file`` = an optional
state dict (``.safetensors``, else a ``torch.save`` file) loaded into the model with ``strict=True``;
without it the function provides the weights itself. Model ids are ``python__{pkg.module.function}__{tag}``.

The function is called with no arguments and returns ``(model, transform)``: ``model`` maps a
``[b, 3, H, W]`` float batch to ``[b, 1000]`` ImageNet-1k logits (in ImageNet index order); ``transform``
maps a PIL RGB image to that ``[3, H, W]`` tensor. To use the decoded cache the transform must be a
torchvision ``Compose`` of geometric PIL steps, ``ToTensor`` and ``Normalize`` (as timm's and open_clip's
are), and the function must be callable under ``torch.device("meta")``: the recipe of the decoded cache
is the factory itself, and the workflow calls it there (no weights allocated) to read the transform
while it builds the DAG. Otherwise set ``inference.decoded_cache: false`` (the model then decodes its own
images).

The final layer: a model with timm's ``forward_features``/``forward_head`` pair runs its features under
the job's autocast and its head in float32 on float32 features (as timm models do); any other model runs
whole in float32 with autocast disabled, so its logits always come out of a float32 final layer.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, packages_distributions
from importlib.metadata import version as package_version
from typing import Any, Callable, Mapping

from clip_robustness.models.adapters.base import ModelAdapter
from clip_robustness.models.adapters.errors import ModelBuildError, RowProblem, UnsupportedPreprocessingError
from clip_robustness.models.adapters.final_layer import float32_final_layer
from clip_robustness.models.adapters.rows import row_text
from clip_robustness.models.adapters.sources import WeightsLocation, load_state_dict


def resolve_factory(architecture: str, model_id: str = "") -> Callable[[], tuple[Any, Callable]]:
    """The function named by ``pkg.module:function``; :class:`ModelBuildError` naming the model otherwise."""
    who = f"model {model_id!r}: " if model_id else ""
    module_name, sep, function_name = architecture.partition(":")
    if not sep or not module_name or not function_name.isidentifier():
        raise ModelBuildError(f"{who}architecture {architecture!r} is not 'pkg.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelBuildError(f"{who}cannot import module {module_name!r} ({exc})") from exc
    factory = getattr(module, function_name, None)
    if not callable(factory):
        raise ModelBuildError(f"{who}module {module_name!r} has no function {function_name!r}")
    return factory


class PythonAdapter(ModelAdapter):
    name = "python"
    distribution = ""  # the factory's own distribution, see version()
    id_prefix = "python"
    needs_text_head = False

    def version(self, row: Mapping[str, Any] | None = None) -> str:
        """Version of the distribution that installs the factory's top-level package (``unknown`` when none does)."""
        top = row_text(row or {}, "architecture").partition(":")[0].partition(".")[0]
        for distribution in packages_distributions().get(top, []):
            try:
                return package_version(distribution)
            except PackageNotFoundError:
                continue
        return "unknown"

    def model_id(self, architecture: str, pretrained: str) -> str:
        module_name, _, function_name = architecture.partition(":")
        return f"{self.id_prefix}__{module_name}.{function_name}__{pretrained}"

    def parse_model_id(self, rest: str) -> tuple[str, str] | None:
        dotted, sep, pretrained = rest.partition("__")
        module_name, dot, function_name = dotted.rpartition(".")
        if not sep or not dot:
            return None
        return f"{module_name}:{function_name}", pretrained

    def registry_input_size(self, row: Mapping[str, Any]) -> int | None:
        try:
            resolve_factory(row_text(row, "architecture"))
        except ModelBuildError as exc:
            raise RowProblem(str(exc)) from exc
        return None  # known only once the factory has built its transform

    def check_architecture(self, row: Mapping[str, Any]) -> None:
        resolve_factory(row_text(row, "architecture"), row_text(row, "model_id"))

    def weights_location(self, row: Mapping[str, Any]) -> WeightsLocation:
        if row_text(row, "weights_file"):
            return WeightsLocation("local", row_text(row, "weights_file"))
        return self.tag_weights_location(row)

    def tag_weights_location(self, row: Mapping[str, Any]) -> WeightsLocation:
        return WeightsLocation("factory", row_text(row, "architecture"))

    def build(self, row: Mapping[str, Any], device: Any, weights: str | None) -> tuple[Any, Callable, dict]:
        architecture, model_id = row_text(row, "architecture"), row_text(row, "model_id")
        model, transform = resolve_factory(architecture, model_id)()
        if weights:
            try:
                model.load_state_dict(load_state_dict(weights), strict=True)
            except RuntimeError as exc:
                raise ModelBuildError(
                    f"model {model_id!r}: {weights} does not fit {architecture}'s model: {exc}"
                ) from exc
        info = {"library": self.name, "factory": architecture, "transform": repr(transform)}
        return model.to(device).eval(), transform, info

    def classifier(self, model: Any, head: Any = None) -> Any:
        return float32_final_layer(model)

    def decode_recipe(self, row: Mapping[str, Any]) -> dict:
        return {"factory": row_text(row, "architecture")}

    def transform_from_recipe(self, recipe: Mapping[str, Any]) -> Callable:
        import torch

        architecture = str(recipe["factory"])
        try:
            factory = resolve_factory(architecture)
            with torch.device("meta"):  # the transform only: no weights are allocated
                _, transform = factory()
        except Exception as exc:
            raise UnsupportedPreprocessingError(
                f"{architecture}: its transform cannot be read without building the model ({exc})"
            ) from exc
        return transform
