"""The start-up checks of every run, in one place: :class:`StartUp`, called from the ``Snakefile`` only.

Before Snakemake plans (:meth:`StartUp.before_planning`), on every parse of the workflow:

1. the run lock (:mod:`clip_robustness.workflow.runlock`): one run per working directory, stale Snakemake locks
   removed; a dry run beside a live run is let through and changes nothing;
2. archives the pipeline never fetches (ImageNet val) must be supplied
   (:func:`clip_robustness.datasets.workflow.check_user_supplied_archives`);
3. while this process holds the run lock, each intermediate file is judged by the identity it records
   (:mod:`clip_robustness.workflow.currency`): outdated extractions, changed manifests, stale decoded arrays, heads
   and logits are dropped, and with them what was computed from them (a changed manifest's decoded arrays and
   logits, the metric tables of the models concerned and every result computed from those), so that any target, not
   only the default one, replans them; every file judged current is brought forward of its inputs and its
   rule's script, so Snakemake's timestamp comparison agrees (dry runs included: they then plan what a real run would
   run).

Before the first job (:meth:`StartUp.before_jobs`, from ``onstart``: it needs the planned jobs), the run stops when a
scheduled job needs weights that are missing or cannot be fetched on an offline node, unless ``--keep-going``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from clip_robustness.datasets import workflow as datasets_workflow
from clip_robustness.logits.cache import reject_cache_file, weights_identity
from clip_robustness.logits.check import manifest_metadata_of, reject_stale_logits
from clip_robustness.logits.workflow import StudyWorkflow, group_rule
from clip_robustness.models import weights
from clip_robustness.names import (
    archive_path,
    cache_path,
    decoded_metadata_path,
    decoded_path,
    embeddings_path,
    head_path,
    manifest_path,
    marker_archive,
    model_metrics_path,
    skipped_path,
    weights_record_path,
)
from clip_robustness.workflow import currency
from clip_robustness.workflow.joblog import benchmark_path
from clip_robustness.workflow.runlock import acquire_run_lock

#: The rules whose jobs load a model's weights.
WEIGHTS_RULES = frozenset(
    {
        "fetch_model_weights",
        "build_zero_shot_head",
        "cache_logits",
        "cache_logits_imagenet_c",
        "cache_logits_zero_shot",
        "cache_logits_zero_shot_imagenet_c",
        "build_ablation_head",
    }
)


class StartUp:
    """The start-up checks of a run of ``study``. ``scripts``: the folder of the rule scripts (a file newer than its
    rule's script is what Snakemake asks for); ``warn``: where each dropped file is reported (Snakemake's logger);
    ``metric_results``: every file the workflow computes from the per-model metric tables (the metrics table over
    models, figures, tables, findings, QC, report cards: ``get_metric_results`` of common.smk), dropped with them."""

    def __init__(
        self,
        study: StudyWorkflow,
        scripts: str | Path,
        warn: Callable[[str], Any],
        metric_results: Callable[[], Iterable[str]] = tuple,
    ):
        self.study = study
        self.scripts = Path(scripts)
        self.warn = warn
        self.metric_results = metric_results
        self.run_lock: IO[str] | None = None
        #: The datasets whose manifest this run dropped (its source changed): their decoded arrays and logits go too.
        self.changed_datasets: list[str] = []

    def script(self, rule: str) -> str:
        """The script file of ``rule`` (``workflow/scripts/{rule}.py``)."""
        return str(self.scripts / f"{rule}.py")

    def before_planning(self, *, dryrun: bool, main_process: bool) -> None:
        """The checks before Snakemake plans (module docstring, 1-3). Only the main Snakemake process takes the run
        lock, and only the process holding it changes files; the lock is held in :attr:`run_lock` until exit."""
        self.run_lock = acquire_run_lock(dryrun=dryrun) if main_process else None
        study = self.study
        datasets_workflow.check_user_supplied_archives(
            study.dataset_registry, study.datasets, study.config["downloads"]
        )
        if self.run_lock is not None:  # no other run can be writing these files
            self.bring_datasets_current()
            self.bring_logits_current()

    def before_jobs(self, jobs: Iterable[tuple[str, str | None]], *, keep_going: bool) -> str | None:
        """Why the run must stop before any job, or ``None``: a scheduled job (``jobs``: rule name and ``{model}``
        wildcard, ``None`` without one) needs a missing weights file, or a scheduled fetch cannot fetch (offline node,
        weights not in the hub cache). With ``keep_going`` nothing stops the run: only that model's jobs fail, its
        fetch first, and every other model's branch goes on."""
        if keep_going:
            return None
        jobs = list(jobs)
        # Only jobs that load weights: metrics and figures of a shared cache need none (make figures-from-cache).
        scheduled = {model for rule, model in jobs if rule in WEIGHTS_RULES} - {None}
        fetching = {model for rule, model in jobs if rule == "fetch_model_weights"}
        plan = self.study.plan
        missing = weights.missing_weights_files({model: plan.row(model) for model in self.study.models})
        unfetchable = weights.unfetchable_offline({model: plan.row(model) for model in sorted(fetching)})
        messages = [weights.missing_weights_message(missing, scheduled), weights.unfetchable_message(unfetchable)]
        return "\n".join(message for message in messages if message) or None

    def bring_datasets_current(self) -> None:
        """Archives, extraction markers and manifests: drop what no longer matches the configuration (an extraction
        whose archive is gone or changed, a manifest of a changed source), bring the rest forward."""
        study, forward = self.study, currency.bring_forward
        registry, downloads = study.dataset_registry, study.config["downloads"]
        markers = study.extraction_markers()
        datasets_workflow.bring_archives_forward(markers, self.script("download_archive"))
        for marker in datasets_workflow.drop_outdated_markers(markers):  # hashes once
            self.warn(f"{marker}: its archive is gone or changed since extraction; this run extracts it again")
        for marker in markers:
            archive = archive_path(marker_archive(marker))
            forward([marker], [archive], self.script("extract_archive"))
        present = [d for d in study.datasets if Path(manifest_path(d)).is_file()]
        for message in datasets_workflow.drop_changed_manifests(
            registry, study.datasets, downloads, study.manifest_subset
        ):
            self.warn(message)
        self.changed_datasets = [d for d in present if not Path(manifest_path(d)).is_file()]
        for dataset in study.datasets:
            inputs = datasets_workflow.manifest_inputs(registry, dataset, downloads)
            markers_of = [m for paths in inputs.values() for m in paths]
            outputs = [manifest_path(dataset), skipped_path(dataset)]
            forward(outputs, markers_of, self.script("build_manifest"))

    def bring_logits_current(self) -> None:
        """Decoded arrays, heads, weights records and logits: drop the stale ones, bring the current ones forward."""
        study, plan, forward = self.study, self.study.plan, currency.bring_forward
        hashes = {}
        for dataset in study.datasets:
            metadata = manifest_metadata_of(manifest_path(dataset))
            hashes[dataset] = None if metadata is None else metadata["manifest_hash"]
        keys = sorted({spec.key for spec in map(plan.decode_spec, study.models) if spec is not None})
        arrays = [(d, key, decoded_path(d, key)) for key in keys for d in study.datasets]
        changed = self.changed_datasets
        for array in currency.drop_files(
            [p for d in changed for k in keys for p in (decoded_path(d, k), decoded_metadata_path(d, k))]
        ):
            self.warn(f"{array}: decoded from a manifest whose source changed; this run decodes it again")
        for message in currency.drop_stale_decoded(arrays, hashes):
            self.warn(message)
        groups = study.groups.groups()
        for key in keys:
            for group, datasets in groups.items():
                outputs = [path(d, key) for d in datasets for path in (decoded_path, decoded_metadata_path)]
                rule, extra = group_rule("decode_images", group)
                outputs.append(
                    benchmark_path(rule, "preprocessing", *extra).format(preprocessing=key, imagenet_c_group=group)
                )
                forward(outputs, [manifest_path(d) for d in datasets], self.script("decode_images"))
        heads = {m: head_path(m) for m in study.models if "head" in plan.cache_group_inputs(m, [])}
        prompt_set = study.config["zero_shot"]["prompt_set"]
        for message in currency.drop_stale_heads(heads, prompt_set):
            self.warn(message)
        outdated = set(study.models) if changed else set()  # every model's metric table reads every manifest
        for model in study.models:
            for dataset in changed:
                if Path(cache_path(model, dataset)).is_file():
                    moved = reject_cache_file(cache_path(model, dataset))
                    self.warn(
                        f"{cache_path(model, dataset)}: computed from a manifest whose source changed. Moved "
                        f"aside to {moved}; this run recomputes it."
                    )
        for rejected in reject_stale_logits(
            study.models, study.datasets, study.model_registry.row, prompt_set, embedding_models=study.embedding_models
        ):
            self.warn(rejected.message)
            outdated.add(Path(rejected.path).parent.name)
        if outdated:
            tables = [model_metrics_path(m) for m in sorted(outdated)]
            for message in currency.outdate_results(tables, self.metric_results()):
                self.warn(message)
        for model in study.models:
            self._bring_model_forward(model, groups, heads)

    def _bring_model_forward(self, model: str, groups: dict[str, list[str]], heads: dict[str, str]) -> None:
        """One model's weights record, head and logits, when its weights record is current (else Snakemake fetches
        the weights again, and rebuilds what depends on them)."""
        plan, forward = self.study.plan, currency.bring_forward
        record, weights_files = weights_record_path(model), plan.weights_input(model)
        if not currency.weights_record_is_current(record, weights_files):
            return
        forward([record], weights_files, self.script("fetch_model_weights"))
        # Past the weights only files computed with these weights: logits record their sha256 (a head is trusted when
        # its model's logits are: they were computed with it).
        embeddings = model in self.study.embedding_models  # its logits job writes the embeddings too
        outputs_of = {
            group: [cache_path(model, d) for d in datasets]
            + ([embeddings_path(model, d) for d in datasets] if embeddings else [])
            for group, datasets in groups.items()
        }
        logits = [path for outputs in outputs_of.values() for path in outputs]
        older = currency.older_than(logits, [record, *weights_files])
        same_weights = currency.computed_with(older, weights_identity(model))
        weights_inputs = [record, *weights_files] if same_weights else []
        if model in heads:
            head_outputs = [heads[model], benchmark_path("build_zero_shot_head", "model").format(model=model)]
            forward(head_outputs, weights_inputs, self.script("build_zero_shot_head"))
        for group, outputs in outputs_of.items():
            inputs = plan.cache_group_inputs(model, groups[group])
            sources = [*inputs.get("manifests", []), *inputs.get("decoded", []), *inputs.get("decoded_metadata", [])]
            sources += [inputs["head"]] if "head" in inputs else []
            rule, extra = group_rule(self.study.logits_rule(model), group)
            benchmark = benchmark_path(rule, "model", *extra).format(model=model, imagenet_c_group=group)
            forward([*outputs, benchmark], [*sources, *weights_inputs], self.script("cache_logits"))
