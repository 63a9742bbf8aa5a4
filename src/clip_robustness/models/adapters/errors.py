"""The errors the adapters raise: a row the installed library cannot serve, weights that cannot be had, and a
transform the decoded cache cannot hold."""

from __future__ import annotations


class ModelBuildError(ValueError):
    """A registry row names a library, architecture or pretrained tag that the pinned library lacks."""


class MissingWeightsError(RuntimeError):
    """A model's weights are neither in the local cache nor downloadable (for example on an offline node)."""


class UnsupportedPreprocessingError(ValueError):
    """A model's transform is not "geometry, ToTensor, Normalize": it cannot use the decoded cache."""


class RowProblem(ValueError):
    """A registry row that the installed library cannot serve (raised by ``ModelAdapter.registry_input_size``)."""
