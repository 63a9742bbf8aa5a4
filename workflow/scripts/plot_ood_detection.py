"""Rule plot_ood_detection: draw results/figures/ood_detection.png and .pdf from the metrics table and the model registry."""

from clip_robustness.figures import render_figure
from clip_robustness.figures.data import read_metrics
from clip_robustness.figures.rule import log_to
from clip_robustness.models.registry import load_model_registry

with log_to(snakemake.log[0]):
    render_figure(
        "ood_detection",
        read_metrics(snakemake.input.metrics),
        load_model_registry(snakemake.input.registry).table,
        snakemake.output.png,
        snakemake.output.pdf,
        logit_scaled=snakemake.params.logit_scaled,
        **snakemake.params.options,
    )
