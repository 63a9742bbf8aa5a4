"""The interface every model library supplies: :class:`ModelAdapter`.

An adapter is everything the pipeline knows about one model library (the registry's ``library`` column):
how to build a model and its evaluation transform, how to derive the decoded-cache preprocessing recipe
without building the model, whether the decode-spec table can hold it, its model-id format and its
spelling on the ``make add-model`` command line, its checkpoints for the all-checkpoints catalogue, whether
the model needs a zero-shot text head and how it is built, where its weights are and how they are fetched, its
published accuracy for the QC, and its final-layer call. What the adapters share lives beside this module,
one concern each: :mod:`.errors`, :mod:`.rows` (registry fields, JSON), :mod:`.sources` (weights
locations, the hub cache), :mod:`.final_layer`, :mod:`.text_head` (the zero-shot head) and :mod:`.published`
(reading QC reference tables).

This module imports neither torch nor any model library at import time (the Snakefile reads the
registry, and so the adapter table, at every invocation); adapters import their library in methods.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from importlib.metadata import version as package_version
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping

from clip_robustness.models.adapters.errors import (
    ModelBuildError,
    RowProblem,
)
from clip_robustness.models.adapters.published import Published
from clip_robustness.models.adapters.rows import row_text
from clip_robustness.models.adapters.sources import WeightsLocation, local_weights

if TYPE_CHECKING:
    import torch

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
    #: True when a row's decode spec follows from (architecture, pretrained tag) alone, so the decode-spec table
    #: (``config/decode_specs.json``, :mod:`clip_robustness.logits.specs`) may hold it.
    tabled_decode_spec: ClassVar[bool] = False
    #: Distributions whose versions stamp the decode-spec table (a tabled spec depends on their transform code).
    spec_stamp_distributions: ClassVar[tuple[str, ...]] = ()
    #: What separates the architecture from the tag in ``make add-model``'s ``{name}:ARCH{sep}TAG``; ``None``: the
    #: library cannot be added from the command line.
    cli_separator: ClassVar[str | None] = None

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

    # -- make add-model and the catalogue

    def cli_usage(self) -> str:
        """How ``make add-model`` spells a model of this library (``""``: it cannot be added from the command line)."""
        return f"{self.name}:ARCH[{self.cli_separator}TAG]" if self.cli_separator is not None else ""

    def parse_cli(self, rest: str) -> tuple[str, str]:
        """``(architecture, tag)`` of the command line's part after ``{name}:`` (tag ``""``: none given)."""
        if self.cli_separator is None:
            raise ModelBuildError(f"{self.name} models cannot be added from the command line")
        architecture, _, tag = rest.partition(self.cli_separator)
        return architecture, tag

    def canonical_checkpoint(self, architecture: str, tag: str) -> tuple[str, str]:
        """The ``(architecture, tag)`` the registry writes for a checkpoint named ``(architecture, tag)``."""
        return architecture, tag

    def family_key(self, architecture: str) -> str:
        """The architecture whose registry rows lend ``architecture`` their ``architecture_family``."""
        return architecture

    def library_input_size(self, architecture: str, tag: str) -> int:
        """The input size (pixels) the library configures for ``architecture`` (and ``tag``); :class:`ModelBuildError`
        naming the architecture when the library lacks it."""
        raise ModelBuildError(f"architecture {architecture!r}: {self.name} states no input size")

    def hub_checkpoints(self, repo_id: str) -> list[tuple[str, str]]:
        """``(architecture, tag)`` of every checkpoint of the installed library whose weights live in hub repo
        ``repo_id`` (``make add-model hf-hub:ORG/REPO``)."""
        return []

    def hub_rank(self, architecture: str) -> int:
        """Rank of this library's checkpoint when several libraries list one hub repo (lowest wins, then the
        table's order)."""
        return 1

    def catalogue_checkpoints(self) -> list[tuple[str, str, int]]:
        """``(architecture, tag, resolution)`` of every checkpoint the all-checkpoints study lists for this library
        (:mod:`clip_robustness.models.catalogue`)."""
        return []

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

    def weights_source(self, row: Mapping[str, Any], path: str) -> str:
        """Where the file ``path`` of :meth:`fetch_weights` came from, for the weights record (a URL, a repo, a path)."""
        return self.weights_location(row).where

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
        zero-shot head (:class:`clip_robustness.models.adapters.text_head.ZeroShotHead`) when :attr:`needs_text_head`."""

    def embedding_dim(self, row: Mapping[str, Any]) -> int | None:
        """The width of a zero-shot model's image embedding, read from the library's config without building the
        model (``make plan`` sizes the embeddings cache by it); ``None`` when unknown or not zero-shot."""
        return None

    def tokenizer(self, row: Mapping[str, Any]) -> Callable:
        """The text tokenizer of a zero-shot model (only adapters with :attr:`needs_text_head`)."""
        raise ValueError(f"model {row_text(row, 'model_id')!r} is a {self.name} classifier: it has no zero-shot head")

    def build_text_head(
        self,
        model: "torch.nn.Module",
        row: Mapping[str, Any],
        prompt_set: str,
        device: Any,
        progress: bool = False,
        prompts: Any = None,
    ) -> Any:
        """The zero-shot head (:class:`~clip_robustness.models.adapters.text_head.ZeroShotHead`) of ``row``'s built
        ``model`` with ``prompt_set``'s prompts (only adapters with :attr:`needs_text_head`); ``prompts``: a
        :class:`~clip_robustness.models.prompt_sets.PromptSet` of the prompt-set ablation instead."""
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

    def qc_reference_files(self) -> tuple[str, ...]:
        """The files of ``config/reference/`` holding the library's published results (``()``: it publishes none)."""
        return ()

    def load_qc_references(self, directory: Path) -> Any:
        """The library's reference tables read from ``directory`` (only called when it has
        :meth:`qc_reference_files`); :class:`~clip_robustness.models.adapters.published.ReferenceTableError` naming
        a missing file or column."""
        return None

    def published_top1(self, row: Mapping[str, Any], references: Any, datasets: tuple[str, ...]) -> list[Published]:
        """``row``'s published top-1 (percent) and its source on each of ``datasets`` (ids of the dataset registry),
        from ``references`` (:meth:`load_qc_references`); NaN with what was looked for where nothing is published."""
        return [(float("nan"), f"missing: the {self.name} library publishes no results")] * len(datasets)
