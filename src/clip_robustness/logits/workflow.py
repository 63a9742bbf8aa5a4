"""The logits stage's workflow glue: what ``common.smk``'s input functions return, as plain, tested code.

:class:`StudyWorkflow` is everything the workflow files know about a run, built once from the config: the
registries, the :class:`~clip_robustness.workflow.study.Study`, the logits jobs (:class:`LogitsPlan`) and how they
are cut (:class:`~clip_robustness.logits.cutting.LogitsGroups`). The path functions below name each file the logits
stage and its neighbours exchange, once.

:class:`LogitsPlan` answers, per model of the study, the registry row, the local weights input, the
decoded-cache geometry (:class:`~clip_robustness.logits.specs.DecodeSpec`: from the spec table shipped beside the
registry, else derived from the model's adapter without building it) and the inputs of ``cache_logits``; per geometry key, the recipe
``decode_images`` rebuilds the transform from. Answers are cached per process: the input functions run
once per job (~20k jobs in the full study), a registry lookup costs ~0.3 ms and a geometry ~1 ms.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clip_robustness.datasets import workflow as datasets_workflow
from clip_robustness.datasets.registry import DatasetRegistry, load_dataset_registry
from clip_robustness.datasets.subset import imagenet_c_subset_param
from clip_robustness.logits.cutting import CORE_GROUP, LogitsGroups
from clip_robustness.logits.specs import SPEC_TABLE_NAME, DecodeSpec, read_spec_table, table_key
from clip_robustness.models.adapters import is_zero_shot
from clip_robustness.models.registry import OWN_STUDY, ModelRegistry, load_model_registry
from clip_robustness.names import (
    decoded_metadata_path,
    decoded_path,
    embeddings_path,
    head_path,
    manifest_path,
    report_card_path,
    weights_record_path,
)
from clip_robustness.workflow.study import Study

log = logging.getLogger(__name__)


def group_rule(rule: str, group: str) -> tuple[str, tuple[str, ...]]:
    """The rule of logits group ``group``'s job, and the wildcards it adds: ``(rule, ())`` for the core group (rules
    ``decode_images``, ``cache_logits``), ``(rule + "_imagenet_c", ("imagenet_c_group",))`` for an ImageNet-C group.
    Group wildcards come last in a job's log and benchmark paths."""
    if group == CORE_GROUP:
        return rule, ()
    return f"{rule}_imagenet_c", ("imagenet_c_group",)


def loader_workers(wildcards: Any, threads: int) -> int:
    """Resource ``workers`` of the logits rules: DataLoader processes, the job's threads but one (which drives the
    model)."""
    return max(threads - 1, 0)


def decode_workers(wildcards: Any, threads: int) -> int:
    """Resource ``workers`` of the decode rules: one decoding process per thread (the main process only writes)."""
    return max(threads, 1)


def spec_table_path(model_registry: str | Path) -> str:
    """The decode-spec table beside the model registry (shipped in a shared cache with the registry)."""
    return str(Path(model_registry).with_name(SPEC_TABLE_NAME))


class LogitsPlan:
    """The logits jobs of a study.

    ``registry``: the model registry; ``model_ids``: the study's models (the candidates for a geometry's recipe);
    ``decoded_cache``: config ``inference.decoded_cache`` (false: every model takes the reference path);
    ``spec_table``: precomputed specs by :func:`~clip_robustness.logits.specs.table_key`
    (:func:`~clip_robustness.logits.specs.read_spec_table`); a row it lacks is derived live, which imports torch;
    ``warn``: where a model that cannot use the decoded cache is reported (default: this module's logger).
    """

    def __init__(
        self,
        registry: ModelRegistry,
        model_ids: Sequence[str],
        *,
        decoded_cache: bool,
        spec_table: Mapping[str, DecodeSpec] | None = None,
        warn: Callable[[str], Any] | None = None,
    ):
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
        other model's branch goes on (``StartUp.before_jobs`` stops the run before any job without it)."""
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
            from clip_robustness.logits.geometry import decode_spec_for_row
            from clip_robustness.models.adapters.errors import UnsupportedPreprocessingError

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
        inputs = {"head": head_path(model_id)} if is_zero_shot(self.row(model_id)) else {}
        inputs.update(zip(["weights"], self.weights_input(model_id)))
        return inputs

    def _dataset_inputs(self, model_id: str, dataset: str) -> dict[str, str]:
        """The inputs of one dataset of a model's cache job: its manifest and, on the fast path, its decoded array for
        the model's geometry with the JSON sidecar."""
        inputs = {"manifest": manifest_path(dataset)}
        spec = self.decode_spec(model_id)
        if spec is not None:
            inputs["decoded"] = decoded_path(dataset, spec.key)
            inputs["decoded_metadata"] = decoded_metadata_path(dataset, spec.key)
        return inputs

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


@dataclass
class StudyWorkflow:
    """Everything the workflow files know about one run, built once per process from the config
    (:meth:`from_config`): ``datasets_registry``, ``model_registry``, ``study``, ``plan`` (the logits jobs) and
    ``groups`` (how the logits and decode jobs are cut)."""

    config: Mapping[str, Any]
    dataset_registry: DatasetRegistry
    model_registry: ModelRegistry
    study: Study
    plan: LogitsPlan
    groups: LogitsGroups

    @classmethod
    def from_config(cls, config: Mapping[str, Any], *, warn: Callable[[str], Any] | None = None) -> StudyWorkflow:
        """Load the registries the config names, select the study, and plan its logits jobs. Decode geometries come
        from the spec table beside the model registry (:func:`spec_table_path`): deriving them imports torch."""
        dataset_registry = load_dataset_registry(
            config["dataset_registry"], url_overrides=config["downloads"]["url_overrides"]
        )
        model_registry = load_model_registry(config["model_registry"])
        study = Study.from_config(config, dataset_registry, model_registry)
        plan = LogitsPlan(
            model_registry,
            study.model_ids,
            decoded_cache=config["inference"]["decoded_cache"],
            spec_table=read_spec_table(spec_table_path(config["model_registry"])),
            warn=warn,
        )
        groups = LogitsGroups.from_study(
            study.dataset_ids,
            config["datasets"].get("imagenet_c"),
            cut=config["inference"].get("imagenet_c_jobs", "per_severity"),
        )
        return cls(config, dataset_registry, model_registry, study, plan, groups)

    @property
    def models(self) -> list[str]:
        """The study's model ids, in registry order."""
        return list(self.study.model_ids)

    @property
    def datasets(self) -> list[str]:
        """The study's dataset ids, in role order."""
        return self.study.dataset_ids

    @property
    def core_datasets(self) -> list[str]:
        """The datasets of each model's core logits job: every dataset of the study but ImageNet-C."""
        return list(self.groups.core)

    def group_datasets(self, imagenet_c_group: str | None = None) -> list[str]:
        """The dataset ids of a group job: ImageNet-C group ``imagenet_c_group``'s conditions, or (``None``) the core
        datasets."""
        if imagenet_c_group is None:
            return self.core_datasets
        return self.groups.imagenet_c_ids(imagenet_c_group)

    def extraction_markers(self) -> list[str]:
        """The extraction markers the study's manifests read (none for datasets in ``downloads.local_folders``)."""
        return datasets_workflow.extraction_markers(self.dataset_registry, self.datasets, self.config["downloads"])

    def manifest_subset(self, dataset: str) -> dict | None:
        """``build_manifest``'s subset of ``dataset`` (config ``datasets.imagenet_c.images_per_condition``), or
        ``None``."""
        return imagenet_c_subset_param(
            dataset, self.groups.all_imagenet_c_ids(), self.config["datasets"].get("imagenet_c")
        )

    def cache_group_inputs(self, model_id: str, imagenet_c_group: str | None = None) -> dict[str, list[str] | str]:
        """Inputs of a ``cache_logits`` group job (:meth:`LogitsPlan.cache_group_inputs`) and the model's weights
        record (rule ``fetch_model_weights``), so the job never starts before its weights are fetched."""
        inputs = self.plan.cache_group_inputs(model_id, self.group_datasets(imagenet_c_group))
        inputs["weights_record"] = weights_record_path(model_id)
        return inputs

    def dataset_titles(self) -> dict[str, str]:
        """The names figures and report cards show for the study's datasets (and the ImageNet-C family): the
        dataset registry's short titles (:meth:`~clip_robustness.datasets.registry.DatasetRegistry.figure_titles`)."""
        return self.dataset_registry.figure_titles(self.datasets)

    @property
    def embedding_models(self) -> list[str]:
        """The models whose logits job also writes image embeddings (``results/embeddings/{model}/{dataset}.parquet``):
        the study's zero-shot models, when config ``inference.cache_embeddings`` (default true)."""
        if not self.config["inference"].get("cache_embeddings", True):
            return []
        return [model for model in self.models if self.model_registry.is_zero_shot(model)]

    def all_embeddings(self) -> list[str]:
        """Every image-embeddings file of the study (a target of ``all``): each embedding model on each dataset."""
        return [embeddings_path(model, dataset) for model in self.embedding_models for dataset in self.datasets]

    def embedding_model_pattern(self) -> str:
        """The ``{model}`` wildcard constraint of the logits rules that also write embeddings: the embedding models'
        ids as alternatives (a pattern matching nothing when there are none)."""
        import re

        models = self.embedding_models
        return "|".join(re.escape(model) for model in models) if models else "(?!)"

    def logits_rule(self, model_id: str) -> str:
        """The core logits rule of ``model_id``'s jobs: ``cache_logits_zero_shot`` when it writes embeddings too
        (:attr:`embedding_models`), else ``cache_logits`` (ImageNet-C groups: ``group_rule`` adds the suffix)."""
        return "cache_logits_zero_shot" if model_id in self.embedding_models else "cache_logits"

    @property
    def ablation_prompt_sets(self) -> list[str]:
        """The prompt sets of the ablation (config ``zero_shot.ablation_prompt_sets``): built-in set ids and user
        files (:mod:`clip_robustness.models.prompt_sets`), each by its name; empty: no ablation."""
        from clip_robustness.models.prompt_sets import is_prompt_file, prompt_set_name, read_prompt_file

        specs = list(self.config["zero_shot"].get("ablation_prompt_sets", []))
        if specs and not self.config["inference"].get("cache_embeddings", True):
            raise ValueError(
                "zero_shot.ablation_prompt_sets needs inference.cache_embeddings: true (the ablation "
                "derives each prompt set's logits from the cached image embeddings)"
            )
        for spec in specs:
            if is_prompt_file(spec):
                read_prompt_file(spec)  # a bad file stops the run now, naming the file and key
        names = [prompt_set_name(spec) for spec in specs]
        if len(set(names)) < len(names):
            raise ValueError(f"zero_shot.ablation_prompt_sets: two entries share a name ({names})")
        return names

    def ablation_prompt_spec(self, name: str) -> str:
        """The config entry (built-in id or file path) of ablation prompt set ``name``."""
        from clip_robustness.models.prompt_sets import prompt_set_name

        for spec in self.config["zero_shot"].get("ablation_prompt_sets", []):
            if prompt_set_name(spec) == name:
                return str(spec)
        raise ValueError(f"{name!r} is not a prompt set of zero_shot.ablation_prompt_sets")

    @property
    def ablation_models(self) -> list[str]:
        """The models of the prompt-set ablation: those with cached embeddings, when prompt sets are configured."""
        return self.embedding_models if self.ablation_prompt_sets else []

    @property
    def own_models(self) -> list[str]:
        """The study's models of the user's own (registry study ``own``, added by ``make add-model``)."""
        return [model for model in self.models if self.model_registry.study(model) == OWN_STUDY]

    def own_model_registry(self, model_id: str) -> str:
        """``write_report_card``'s registry input: the model registry's path, once ``model_id`` is known to be an own
        model. ``ValueError`` naming the model's study otherwise: report cards are made for own models only."""
        study = self.model_registry.study(model_id)
        if study != OWN_STUDY:
            raise ValueError(
                f"{report_card_path(model_id)}: report cards are made for models of your own (registry "
                f"study {OWN_STUDY!r}, added with `make add-model`); {model_id!r} is of study {study!r}"
            )
        return str(self.config["model_registry"])

    def metric_roles(self, *, with_datasets: bool = True) -> dict[str, Any]:
        """Dataset ids by role, for the metric and findings scripts: the ID set, test conditions, OOD sets, and (with
        ``with_datasets``) every dataset in the order of the metric rules' inputs."""
        roles: dict[str, Any] = {"datasets": list(self.datasets)} if with_datasets else {}
        roles.update(
            in_distribution=self.study.in_distribution,
            test_conditions=list(self.study.test_conditions),
            ood=list(self.study.ood_datasets),
            cue_conflict=list(self.study.cue_conflict),
        )
        return roles
