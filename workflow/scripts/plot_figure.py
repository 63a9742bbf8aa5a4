"""Rules plot_<figure>: draw results/figures/<figure>.png and .pdf from the metrics table and the model
registry (``params.figure`` names the figure, ``params.options`` its options from common.smk)."""

from clip_robustness.figures import render_figure
from clip_robustness.figures.data import read_metrics
from clip_robustness.models.registry import load_model_registry
from clip_robustness.workflow.joblog import job_log

with job_log(snakemake.log[0]):
    render_figure(
        snakemake.params.figure,
        read_metrics(snakemake.input.metrics),
        load_model_registry(snakemake.input.registry).table,
        snakemake.output.png,
        snakemake.output.pdf,
        logit_scaled=snakemake.params.logit_scaled,
        dataset_titles=snakemake.params.dataset_titles,
        **snakemake.params.options,
    )
