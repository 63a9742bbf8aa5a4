"""Rule tabulate_findings: the paper's claims, tested on the metrics table -> results/tables/findings.csv; and the
validation of the verdicts on simulated studies (docs/findings-validation.csv) -> results/tables/findings_validation.csv."""

import pandas as pd

from clip_robustness.figures.data import read_metrics
from clip_robustness.metrics.findings import FindingsSettings, findings_table
from clip_robustness.models.registry import load_model_registry
from clip_robustness.workflow.joblog import job_log

with job_log(snakemake.log[0]):
    settings = FindingsSettings.from_config(snakemake.config, snakemake.params.roles)
    registry = load_model_registry(snakemake.input.registry).table
    table = findings_table(read_metrics(snakemake.input.metrics), registry, settings)
    if snakemake.input.get("prompt_sets"):  # the prompt-set ablation's rows (clip_robustness.metrics.prompt_ablation)
        from clip_robustness.metrics.prompt_ablation import prompt_set_findings, prompt_set_properties

        ablation = pd.read_parquet(snakemake.input.prompt_sets)
        properties = prompt_set_properties(
            ablation, settings.in_distribution, settings.test_conditions, settings.ood_sets
        )
        table = pd.concat([table, prompt_set_findings(properties, registry, settings)], ignore_index=True)
    table.to_csv(snakemake.output.findings, index=False, float_format="%.6g")
    # simulated studies, not a result of this run: labelled as such in every row
    validation = pd.read_csv(snakemake.input.validation)
    validation.insert(0, "what", "simulation at the paper's n (docs/findings-validation.md), not evidence about CLIP")
    validation.to_csv(snakemake.output.validation, index=False)
