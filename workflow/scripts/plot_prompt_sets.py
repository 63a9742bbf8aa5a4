"""Rule plot_prompt_sets: the prompt-set ablation's figure -> results/figures/prompt_sets.png and .pdf."""

import pandas as pd

from clip_robustness.figures.prompt_sets import render_prompt_sets
from clip_robustness.models.registry import load_model_registry
from clip_robustness.workflow.joblog import job_log

with job_log(snakemake.log[0]):
    render_prompt_sets(
        pd.read_parquet(snakemake.input.table),
        load_model_registry(snakemake.input.registry).table,
        snakemake.output.png,
        snakemake.output.pdf,
        logit_scaled=snakemake.params.logit_scaled,
        **snakemake.params.options,
    )
