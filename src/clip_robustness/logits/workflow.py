"""The logits stage's workflow glue: what ``common.smk``'s input functions return, as plain, tested code.

:class:`LogitsPlan` answers, per model of the study, the registry row, the local weights input, the
decoded-cache geometry (:class:`~clip_robustness.logits.specs.DecodeSpec`: from the spec table shipped beside the
registry, else derived from the model's adapter without building it) and the inputs of ``cache_logits``; per geometry key, the recipe
``decode_images`` rebuilds the transform from. Answers are cached per process: the input functions run
once per job (~20k jobs in the full study), a registry lookup costs ~0.3 ms and a geometry ~1 ms.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clip_robustness.datasets.workflow import manifest_path
from clip_robustness.logits.specs import DecodeSpec, table_key
from clip_robustness.models.adapters import is_zero_shot

if TYPE_CHECKING:
    from clip_robustness.models.registry import ModelRegistry

log = logging.getLogger(__name__)


class LogitsPlan:
    """The logits jobs of a study.

    ``registry``: the model registry; ``model_ids``: the study's models (the candidates for a geometry's recipe);
    ``decoded_cache``: config ``inference.decoded_cache`` (false: every model takes the reference path);
    ``spec_table``: precomputed specs by :func:`~clip_robustness.logits.specs.table_key`
    (:func:`~clip_robustness.logits.specs.read_spec_table`); a row it lacks is derived live, which imports torch;
    ``warn``: where a model that cannot use the decoded cache is reported (default: this module's logger).
    """

    def __init__(self, registry: ModelRegistry, model_ids: Sequence[str], *, decoded_cache: bool,
                 spec_table: Mapping[str, DecodeSpec] | None = None, warn: Callable[[str], Any] | None = None):
        self.registry = registry
        self.model_ids = list(model_ids)
        self.decoded_cache = bool(decoded_cache)
        self.spec_table = dict(spec_table or {})
        self.warn = warn or log.warning
        self._rows: dict[str, dict] = {}
        self._specs: dict[str, DecodeSpec | None] = {}
        self._recipes: dict[str, dict] | None = None

    def row(self, model_id: str) -> dict:
        """A copy of ``model_id``'s registry row (a dict of the registry columns)."""
        if model_id not in self._rows:
            self._rows[model_id] = self.registry.row(model_id)
        return dict(self._rows[model_id])

    def weights(self, model_id: str) -> list[str]:
        """``[weights_file]`` when the registry names a local file (so Snakemake reruns on a new file), else ``[]``."""
        weights = self.row(model_id).get("weights_file") or ""
        return [weights] if weights else []

    def weights_input(self, model_id: str) -> list[str]:
        """The local weights file as a job input: :meth:`weights` when that file exists, else ``[]``. A named file that
        is missing is left out so the DAG still builds (a missing input would stop the whole run, even under
        ``--keep-going``): the model's ``fetch_model_weights`` job then fails naming it, and with ``--keep-going`` every
        other model's branch goes on (``common.smk`` stops the run before any job without it)."""
        return [path for path in self.weights(model_id) if Path(path).exists()]

    def decode_spec(self, model_id: str) -> DecodeSpec | None:
        """``model_id``'s preprocessing geometry, or ``None`` for the reference path: the decoded cache is off, or the
        model's transform cannot be held by it (reported through ``warn``, and recorded in the cache metadata)."""
        if not self.decoded_cache:
            return None
        if model_id not in self._specs:
            tabled = self.spec_table.get(table_key(self.row(model_id)) or "")
            if tabled is not None:
                self._specs[model_id] = tabled
                return tabled
            from clip_robustness.logits.decoded import UnsupportedPreprocessingError, decode_spec_for_row

            try:
                self._specs[model_id] = decode_spec_for_row(self.row(model_id))
            except UnsupportedPreprocessingError as error:
                self.warn(f"{error}: {model_id} decodes its own images (reference path)")
                self._specs[model_id] = None
        return self._specs[model_id]

    def decode_params(self, key: str) -> dict:
        """``decode_images``'s params for geometry ``key``: the library and recipe of the first study model (by sorted
        id) with that geometry. ``ValueError`` naming the key and the known ones when no model has it."""
        if self._recipes is None:
            self._recipes = {}
            for model_id in sorted(self.model_ids):
                spec = self.decode_spec(model_id)
                if spec is not None and spec.key not in self._recipes:
                    self._recipes[spec.key] = spec.recipe_params()
        if key not in self._recipes:
            raise ValueError(f"no model of the study has preprocessing {key!r}; known: {sorted(self._recipes)}")
        return self._recipes[key]

    def _model_inputs(self, model_id: str) -> dict[str, str]:
        """The inputs a model's cache job has whatever its datasets: its zero-shot head (zero-shot models) and its
        local weights file, if any (:meth:`weights_input`)."""
        inputs = {"head": f"results/heads/{model_id}.pt"} if is_zero_shot(self.row(model_id)) else {}
        inputs.update(zip(["weights"], self.weights_input(model_id)))
        return inputs

    def _dataset_inputs(self, model_id: str, dataset: str) -> dict[str, str]:
        """The inputs of one dataset of a model's cache job: its manifest and, on the fast path, its decoded array for
        the model's geometry with the JSON sidecar."""
        inputs = {"manifest": manifest_path(dataset)}
        spec = self.decode_spec(model_id)
        if spec is not None:
            inputs["decoded"] = f"data/decoded/{dataset}/{spec.key}.npy"
            inputs["decoded_metadata"] = f"data/decoded/{dataset}/{spec.key}.json"
        return inputs

    def cache_logits_inputs(self, model_id: str, dataset: str) -> dict[str, str]:
        """Inputs of one (model, dataset) cache computation: the dataset's manifest, the model's zero-shot head
        (zero-shot models), its local weights file, if any (:meth:`weights_input`), and, on the fast path, the
        dataset's decoded array for the model's geometry with its JSON sidecar."""
        return {**self._dataset_inputs(model_id, dataset), **self._model_inputs(model_id)}

    def cache_group_inputs(self, model_id: str, datasets: Sequence[str]) -> dict[str, list[str] | str]:
        """Inputs of a ``cache_logits`` group job of ``model_id`` over ``datasets``: each dataset's manifest (and, on
        the fast path, decoded array and sidecar) as lists in ``datasets`` order (keys ``manifests``, ``decoded``,
        ``decoded_metadata``; an empty list is left out), plus the model's ``head`` and ``weights``, found once per
        job (a stat of the weights file), not once per dataset."""
        per_dataset = [self._dataset_inputs(model_id, dataset) for dataset in datasets]
        lists = {"manifests": "manifest", "decoded": "decoded", "decoded_metadata": "decoded_metadata"}
        inputs: dict[str, list[str] | str] = {
            name: [one[key] for one in per_dataset if key in one] for name, key in lists.items()
        }
        inputs = {key: value for key, value in inputs.items() if value != []}
        return {**inputs, **self._model_inputs(model_id)}
