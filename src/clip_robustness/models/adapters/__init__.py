"""One adapter per model library, behind one interface (:class:`~clip_robustness.models.adapters.base.ModelAdapter`).

:data:`ADAPTERS` maps the model registry's ``library`` value to its adapter: the only table of model
libraries in the package. A new model family is a new adapter module and one entry here, or, without
changing the package, a plug-in: an adapter class named in the environment variable
``CLIP_ROBUSTNESS_ADAPTERS`` (``pkg.module:Class``, several separated by commas) is added to the table
whenever this package is imported, so the workflow and every job it starts see it. Importing this package
imports no model library (each adapter imports its own in its methods).
"""

from __future__ import annotations

import importlib
import os
from typing import Any, Mapping

from clip_robustness.models.adapters.base import ModelAdapter
from clip_robustness.models.adapters.errors import ModelBuildError
from clip_robustness.models.adapters.open_clip import OpenClipAdapter
from clip_robustness.models.adapters.python import PythonAdapter
from clip_robustness.models.adapters.rows import row_text
from clip_robustness.models.adapters.timm import TimmAdapter

#: The environment variable naming plug-in adapter classes (``pkg.module:Class[,pkg.module:Class...]``).
PLUGIN_VARIABLE = "CLIP_ROBUSTNESS_ADAPTERS"

#: ``make add-model``'s prefix of a Hugging Face hub repo (``hf-hub:ORG/REPO``), resolved through every adapter's
#: :meth:`~clip_robustness.models.adapters.base.ModelAdapter.hub_checkpoints`.
HUB_CLI_PREFIX = "hf-hub"

#: The registry's ``library`` value -> its adapter.
ADAPTERS: dict[str, ModelAdapter] = {
    "open_clip": OpenClipAdapter(),
    "timm": TimmAdapter(),
    "python": PythonAdapter(),
}


def register_adapter(adapter: ModelAdapter) -> ModelAdapter:
    """Add ``adapter`` to :data:`ADAPTERS` under its ``name`` (a plug-in); :class:`ValueError` when the name is taken
    by another adapter class."""
    known = ADAPTERS.get(adapter.name)
    if known is not None and type(known) is not type(adapter):
        raise ValueError(f"library {adapter.name!r} already has the adapter {type(known).__name__}")
    ADAPTERS[adapter.name] = adapter
    return adapter


def register_plugins(spec: str) -> list[str]:
    """Import and register the adapter classes named in ``spec`` (``pkg.module:Class``, comma-separated); their
    library names. :class:`ModelBuildError` naming the entry when one cannot be imported."""
    names = []
    for entry in filter(None, (part.strip() for part in spec.split(","))):
        module_name, _, class_name = entry.partition(":")
        try:
            adapter_class = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError, ValueError) as error:
            raise ModelBuildError(f"{PLUGIN_VARIABLE} entry {entry!r}: cannot import it ({error})") from error
        names.append(register_adapter(adapter_class()).name)
    return names


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


register_plugins(os.environ.get(PLUGIN_VARIABLE, ""))
