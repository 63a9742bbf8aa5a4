"""The prompt-set ablation's input functions (``workflow/rules/ablation.smk``, the findings rule's ablation table and
the default target's ablation outputs), so that ``common.smk`` only wires them: ``ABLATION = AblationInputs(STUDY)``.

Each method is a named input function as Snakemake calls one (``wildcards`` first) and only reads the study
(:class:`~clip_robustness.logits.workflow.StudyWorkflow`: its config, datasets and dataset roles); building the
object does nothing. No output here is an input of a logits job: adding or changing a prompt set reruns none.
"""

from __future__ import annotations

from typing import Any

from clip_robustness.names import (
    ABLATION_METRICS,
    ablation_head_path,
    ablation_model_metrics_path,
    embeddings_path,
    figure_path,
)

#: The ablation figure's name (``plot_prompt_sets``; :mod:`clip_robustness.figures.prompt_sets`).
PROMPT_SETS_FIGURE = "prompt_sets"


class AblationInputs:
    """The ablation's input functions over one study (``study``: a :class:`StudyWorkflow`, or anything with its
    ``ablation_models``, ``ablation_prompt_sets``, ``ablation_prompt_spec``, ``datasets`` and ``study``)."""

    def __init__(self, study: Any) -> None:
        self.study = study

    def targets(self, wildcards: Any = None) -> list[str]:
        """The default target's ablation outputs when ``zero_shot.ablation_prompt_sets`` names prompt sets: its table
        and the figure (PNG, PDF); else none."""
        if not self.study.ablation_models:
            return []
        return [ABLATION_METRICS, self.figure("png"), self.figure("pdf")]

    @staticmethod
    def figure(ext: str) -> str:
        """The ablation figure's file (``plot_prompt_sets``'s output) in format ``ext``."""
        return figure_path(PROMPT_SETS_FIGURE, ext)

    def shared_files(self, wildcards: Any = None) -> list[str]:
        """share_cache: what a shared cache needs to redo the ablation on CPU with no weights: the ablation models'
        image embeddings, their heads per prompt set and the prompt files (:mod:`clip_robustness.workflow.share`)."""
        study, prompt_sets = self.study, self.study.ablation_prompt_sets
        files = [embeddings_path(model, dataset) for model in study.ablation_models for dataset in study.datasets]
        files += [ablation_head_path(model, p) for model in study.ablation_models for p in prompt_sets]
        specs = [study.ablation_prompt_spec(p) for p in prompt_sets] if study.ablation_models else []
        return files + [spec for spec, name in zip(specs, prompt_sets) if spec != name]

    def table(self, wildcards: Any = None) -> list[str]:
        """tabulate_findings: the ablation's table when there is an ablation (its findings rows), else []."""
        return [ABLATION_METRICS] if self.study.ablation_models else []

    def model_embeddings(self, wildcards: Any) -> list[str]:
        """prompt_set_metrics: {model}'s image-embeddings files on every dataset of the study, in the study's order."""
        return [embeddings_path(wildcards.model, dataset) for dataset in self.study.datasets]

    def prompt_spec(self, wildcards: Any) -> str:
        """build_ablation_head: the config entry of {prompt_set} (a built-in id or a prompt file's path)."""
        return self.study.ablation_prompt_spec(wildcards.prompt_set)

    def prompt_file(self, wildcards: Any) -> list[str]:
        """build_ablation_head: {prompt_set}'s prompt file when it is one (an edit rebuilds the head), else []."""
        spec = self.study.ablation_prompt_spec(wildcards.prompt_set)
        return [spec] if spec != wildcards.prompt_set else []

    def model_tables(self, wildcards: Any = None) -> list[str]:
        """aggregate_prompt_sets: every (ablation model, prompt set) metric table."""
        prompt_sets = self.study.ablation_prompt_sets
        return [ablation_model_metrics_path(model, p) for model in self.study.ablation_models for p in prompt_sets]

    def figure_options(self, wildcards: Any = None) -> dict[str, Any]:
        """plot_prompt_sets: the study's dataset roles and the prompt sets in config order."""
        roles = self.study.study
        return {
            "id_dataset": roles.in_distribution,
            "test_conditions": list(roles.test_conditions),
            "ood_sets": list(roles.ood_datasets),
            "prompt_sets": self.study.ablation_prompt_sets,
        }
