"""The interface every model library supplies: :class:`ModelAdapter`, and what the adapters share.

An adapter is what the pipeline knows about one model library (the registry's ``library`` column):
how to build a model and its evaluation transform, how to derive the decoded-cache preprocessing
recipe without building the model, its model-id format, whether the model needs a zero-shot text
head, where its weights are, the key of its published accuracy for the QC, and its final-layer call.

This module imports neither torch nor any model library at import time (the Snakefile reads the
registry, and so the adapter table, at every invocation); adapters import their library in methods.
"""

from __future__ import annotations

import enum
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from importlib.metadata import version as package_version
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping

if TYPE_CHECKING:
    import torch

#: Number of ImageNet-1k classes every model must output.
N_CLASSES = 1000

#: The dtype every model's final layer runs in (recorded as ``head_precision`` in the cache metadata).
HEAD_PRECISION = "float32"


class ModelBuildError(ValueError):
    """A registry row names a library, architecture or pretrained tag that the pinned library lacks."""


class MissingWeightsError(RuntimeError):
    """A model's weights are neither in the local cache nor downloadable (for example on an offline node)."""


class UnsupportedPreprocessingError(ValueError):
    """A model's transform is not "geometry, ToTensor, Normalize": it cannot use the decoded cache."""


class RowProblem(ValueError):
    """A registry row that the installed library cannot serve (raised by :meth:`ModelAdapter.registry_input_size`)."""


def row_text(row: Mapping[str, Any], key: str) -> str:
    """A registry field as a stripped string; missing, None and NaN (an empty TSV cell) read as ``""``."""
    value = row.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def plain_json(value: Any) -> Any:
    """A JSON-able form of a transform parameter (enums by value, tensors and tuples as lists)."""
    if isinstance(value, enum.Enum):
        return plain_json(value.value)
    if hasattr(value, "tolist") and hasattr(value, "dtype"):  # torch tensors, numpy arrays
        return value.tolist()
    if isinstance(value, (tuple, list)):
        return [plain_json(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): plain_json(v) for k, v in value.items()}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def tuples(recipe: Mapping[str, Any]) -> dict:
    """A JSON recipe's lists back as tuples, as the libraries' transform builders take them."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in recipe.items()}


# ----------------------------------------------------------------------------- weights


@dataclass(frozen=True)
class WeightsLocation:
    """Where a model's weights come from, known without downloading anything.

    ``kind``: ``local`` (the registry's ``weights_file``), ``hub`` (a Hugging Face hub repo, read through
    the hub cache), ``url`` (a download URL of the library), ``factory`` (the model's own constructor
    provides them) or ``random`` (no weights). ``where``: the path, repo id or URL (``""`` for
    ``random``/``factory``); ``filenames``: the hub files tried in order.
    """

    kind: str
    where: str = ""
    filenames: tuple[str, ...] = ()


def hub_cache_dir() -> str:
    """The Hugging Face hub cache folder (``HF_HUB_CACHE``)."""
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set: nothing is downloaded."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def missing_weights(model_id: str, where: str, cause: BaseException | None = None, local: bool = False) -> MissingWeightsError:
    """The :class:`MissingWeightsError` naming ``model_id``, the expected location and what to do."""
    offline = "" if local or not hub_offline() else " (HF_HUB_OFFLINE is set: nothing is downloaded)"
    hint = (
        "Put the file there, or correct the weights_file column of the model registry."
        if local
        else "Download them on a node with internet (building the model once there fills the cache), copy the "
        "hub cache to this node, or name a local file in the registry's weights_file column."
    )
    detail = f" Last error: {cause}" if cause is not None else ""
    return MissingWeightsError(f"model {model_id!r}: weights not available{offline}; expected {where}. {hint}{detail}")


def local_weights(row: Mapping[str, Any]) -> str | None:
    """The registry's ``weights_file`` when set (:class:`MissingWeightsError` if it does not exist), else ``None``."""
    weights_file = row_text(row, "weights_file")
    if not weights_file:
        return None
    path = Path(weights_file).expanduser()
    if not path.is_file():
        raise missing_weights(
            row_text(row, "model_id"), f"at the local weights_file {str(path)!r} named in the model registry", local=True
        )
    return str(path)


def load_state_dict(path: str) -> dict:
    """A state dict from a ``.safetensors`` file or a ``torch.save`` file (loaded with ``weights_only``)."""
    import torch

    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


# ----------------------------------------------------------------------------- the final layer


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


# ----------------------------------------------------------------------------- published accuracy (QC)


@dataclass(frozen=True)
class ReferenceKey:
    """Where a model's published top-1 is found: ``table`` (a reference-table family of
    :mod:`clip_robustness.qc.published_accuracy`), ``names`` (the model names to look up, first match wins),
    ``pretrained`` (the pretrained tag column, where the table has one) and ``img_size`` (where it has one)."""

    table: str
    names: tuple[str, ...]
    pretrained: str = ""
    img_size: int | None = None


#: Reference-table families (the QC reads one file of open_clip's, one per dataset of timm's).
OPEN_CLIP_RESULTS = "openclip_results"
TIMM_RESULTS = "timm_results"


# ----------------------------------------------------------------------------- the interface


class ModelAdapter(ABC):
    """What one model library supplies to the pipeline. One instance per library, in
    :data:`clip_robustness.models.adapters.ADAPTERS` under the registry's ``library`` value."""

    #: The registry's ``library`` value.
    name: ClassVar[str]
    #: The pip distribution whose version is recorded in the cache metadata.
    distribution: ClassVar[str]
    #: First part of this library's model ids (``{id_prefix}__...``).
    id_prefix: ClassVar[str]
    #: What separates the architecture from the pretrained tag in a model id (``{id_prefix}__{arch}{sep}{tag}``).
    id_separator: ClassVar[str] = "__"
    #: True for zero-shot models: they output image features and need a text head (the zero-shot head)
    #: to give ImageNet logits. This is the one place that decides "zero-shot".
    needs_text_head: ClassVar[bool] = False

    def version(self, row: Mapping[str, Any] | None = None) -> str:
        """Installed version of the library (that builds ``row``), for the cache metadata."""
        return package_version(self.distribution)

    def prepare(self) -> None:
        """Make the library ready to build this package's models (for example register shipped configs)."""

    # -- ids and registry rows

    def model_id(self, architecture: str, pretrained: str) -> str:
        """The conventional, filesystem-safe model id of ``(architecture, pretrained)``."""
        return f"{self.id_prefix}__{architecture}{self.id_separator}{pretrained}"

    def parse_model_id(self, rest: str) -> tuple[str, str] | None:
        """``(architecture, pretrained)`` of an id's part after ``{id_prefix}__``; ``None`` if it is not this format."""
        architecture, sep, pretrained = rest.partition(self.id_separator)
        return (architecture, pretrained) if sep else None

    @abstractmethod
    def registry_input_size(self, row: Mapping[str, Any]) -> int | None:
        """The library's input size (pixels) for ``row``, checked against the installed library without downloading;
        ``None`` when the library does not say. Raises :class:`RowProblem` when the library cannot serve the row."""

    def check_row(self, row: Mapping[str, Any]) -> list[str]:
        """Problems of one registry row against the installed library, as messages (empty: all good)."""
        try:
            size = self.registry_input_size(row)
        except RowProblem as problem:
            return [str(problem)]
        problems = []
        if size is not None and int(size) != int(row["resolution"]):
            problems.append(f"resolution {row['resolution']} but the library's input size is {size}")
        weights_file = row_text(row, "weights_file")
        if weights_file and not Path(weights_file).is_file():
            problems.append(f"weights_file {weights_file!r} does not exist")
        return problems

    # -- weights

    def has_architecture(self, architecture: str) -> bool:
        """Whether the installed library has ``architecture``."""
        return True

    def check_architecture(self, row: Mapping[str, Any]) -> None:
        """Raise :class:`ModelBuildError` naming the model when the library lacks ``row``'s architecture."""
        architecture = row_text(row, "architecture")
        if not self.has_architecture(architecture):
            raise ModelBuildError(
                f"model {row_text(row, 'model_id')!r}: {self.name} {self.version(row)} has no architecture "
                f"{architecture!r} (see {self.name}.list_models())"
            )

    def weights_location(self, row: Mapping[str, Any]) -> WeightsLocation:
        """Where ``row``'s weights come from, without downloading (:class:`ModelBuildError` for an unknown tag): the
        registry's ``weights_file``, no weights (empty ``pretrained``), else :meth:`tag_weights_location`."""
        if row_text(row, "weights_file"):
            return WeightsLocation("local", row_text(row, "weights_file"))
        if not row_text(row, "pretrained"):
            return WeightsLocation("random")
        return self.tag_weights_location(row)

    @abstractmethod
    def tag_weights_location(self, row: Mapping[str, Any]) -> WeightsLocation:
        """Where the library keeps the weights of ``row``'s pretrained tag (no local file named)."""

    def fetch_weights(self, row: Mapping[str, Any]) -> str | None:
        """The local weights file of ``row`` (downloaded into the cache where the library itself would, by
        :meth:`download_weights`), or ``None`` when the library or the factory loads them itself (or there are
        none). :class:`MissingWeightsError` naming the model and the expected location when they cannot be had."""
        location = self.weights_location(row)
        if location.kind == "local":
            return local_weights(row)
        if location.kind in ("hub", "url"):
            return self.download_weights(row, location)
        return None

    def download_weights(self, row: Mapping[str, Any], location: WeightsLocation) -> str | None:
        """Fetch hub or url weights into the library's cache; the local file, or ``None`` when the library will."""
        raise ModelBuildError(f"model {row_text(row, 'model_id')!r}: {self.name} downloads no {location.kind} weights")

    # -- model, transform, final layer

    @abstractmethod
    def build(
        self, row: Mapping[str, Any], device: "torch.device", weights: str | None
    ) -> tuple["torch.nn.Module", Callable, dict]:
        """``(model, transform, preprocessing record)``, model in eval mode on ``device``; ``weights``: the output
        of :meth:`fetch_weights`. The record has ``library``, ``input_size`` ([C, H, W]), ``resize_mode``,
        ``crop_pct``, ``crop_mode``, ``interpolation``, ``mean``, ``std`` and ``transform`` (the repr)."""

    @abstractmethod
    def classifier(self, model: "torch.nn.Module", head: Any = None) -> "torch.nn.Module":
        """The final-layer call: images ``[b, 3, H, W]`` -> float32 logits ``[b, 1000]`` from a float32 final layer,
        whatever autocast is active around it (features may run in reduced precision). ``head``: the model's
        zero-shot head (:class:`clip_robustness.models.zero_shot.ZeroShotHead`) when :attr:`needs_text_head`."""

    def tokenizer(self, row: Mapping[str, Any]) -> Callable:
        """The text tokenizer of a zero-shot model (only adapters with :attr:`needs_text_head`)."""
        raise ValueError(f"model {row_text(row, 'model_id')!r} is a {self.name} classifier: it has no zero-shot head")

    # -- decoded cache

    @abstractmethod
    def decode_recipe(self, row: Mapping[str, Any]) -> dict:
        """The JSON-able recipe of ``row``'s evaluation transform, derived without building the model (the
        workflow asks while it builds the DAG). :class:`UnsupportedPreprocessingError` when it cannot be derived."""

    @abstractmethod
    def transform_from_recipe(self, recipe: Mapping[str, Any]) -> Callable:
        """The library's own evaluation transform for a recipe of :meth:`decode_recipe`."""

    # -- QC

    def qc_reference_key(self, row: Mapping[str, Any]) -> ReferenceKey | None:
        """Where the library publishes ``row``'s top-1 (``None``: nowhere)."""
        return None
