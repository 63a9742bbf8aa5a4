"""One adapter per model library, behind one interface (:class:`~clip_robustness.models.adapters.base.ModelAdapter`).

:data:`ADAPTERS` maps the model registry's ``library`` value to its adapter: the only table of model
libraries in the package. A new model family is a new adapter module and one entry here. Importing
this package imports no model library (each adapter imports its own in its methods).
"""

from __future__ import annotations

from typing import Any, Mapping

from clip_robustness.models.adapters.base import ModelAdapter, ModelBuildError, row_text
from clip_robustness.models.adapters.open_clip import OpenClipAdapter
from clip_robustness.models.adapters.python import PythonAdapter
from clip_robustness.models.adapters.timm import TimmAdapter

#: The registry's ``library`` value -> its adapter.
ADAPTERS: dict[str, ModelAdapter] = {
    "open_clip": OpenClipAdapter(),
    "timm": TimmAdapter(),
    "python": PythonAdapter(),
}

#: The registry's known ``library`` values.
LIBRARIES: tuple[str, ...] = tuple(ADAPTERS)


def adapter_for(library: str, model_id: str = "") -> ModelAdapter:
    """The adapter of ``library``; :class:`ModelBuildError` naming the model and the known libraries otherwise."""
    if library not in ADAPTERS:
        who = f"model {model_id!r}: " if model_id else ""
        raise ModelBuildError(f"{who}unknown library {library!r}; expected one of {sorted(ADAPTERS)}")
    return ADAPTERS[library]


def row_adapter(row: Mapping[str, Any]) -> ModelAdapter:
    """The adapter of a model-registry row (its ``library``)."""
    return adapter_for(row_text(row, "library"), row_text(row, "model_id"))


def is_zero_shot(row: Mapping[str, Any]) -> bool:
    """True for a zero-shot model: its library outputs image features and needs a text head. The one decision of
    "zero-shot" in the package (the workflow's head inputs, the cache's prompt set, the metrics' MCM score)."""
    return row_adapter(row).needs_text_head
