"""Rule aggregate_metrics: per-model tables -> results/metrics/{metrics.parquet,metrics.csv,settings.json,ood_correlations.csv}."""

import json

from clip_robustness.metrics.aggregate import aggregate_from_files
from clip_robustness.metrics.imagenet_x import load_imagenet_x_annotations
from clip_robustness.metrics.tidy import MetricSettings, write_metrics_table
from clip_robustness.models.registry import load_model_registry
from clip_robustness.workflow.joblog import job_log

with job_log(snakemake.log[0]) as log:
    settings = MetricSettings.from_config(snakemake.params.settings)
    n_annotated = len(
        load_imagenet_x_annotations(settings.imagenet_x_which_factor, settings.imagenet_x_filter_prototypes)
    )
    result = aggregate_from_files(
        list(snakemake.input.tables),
        load_model_registry(snakemake.input.registry).table,
        settings,
        snakemake.params.roles["in_distribution"],
        n_imagenet_x_annotated=n_annotated,
    )
    write_metrics_table(result.metrics, snakemake.output.parquet, {"settings": settings.to_dict()})
    result.metrics.to_csv(snakemake.output.csv, index=False)
    result.correlations.to_csv(snakemake.output.correlations, index=False)
    with open(snakemake.output.settings, "w") as handle:
        json.dump(result.settings, handle, indent=2, sort_keys=True)
    log.info("wrote %d metric rows of %d models", len(result.metrics), result.metrics["model"].nunique())
