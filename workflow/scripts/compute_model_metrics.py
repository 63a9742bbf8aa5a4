"""Rule compute_model_metrics: one model's cached logits -> results/metrics/models/{model}.parquet.

A stale or unreadable logits file is moved aside (clip_robustness.logits.cache.reject_cache_file) and the error
names it, so running the same command again recomputes exactly that file."""

from clip_robustness.logits.cache import CacheError, reject_cache_file, rejection_message
from clip_robustness.metrics.imagenet_x import load_imagenet_x_annotations
from clip_robustness.metrics.model_rows import model_metrics_from_files
from clip_robustness.metrics.tidy import MetricSettings, write_metrics_table
from clip_robustness.workflow.joblog import job_log

with job_log(snakemake.log[0]) as log:
    model = snakemake.wildcards.model
    roles = snakemake.params.roles
    row = dict(snakemake.params.model_row)
    zero_shot = bool(snakemake.params.zero_shot)
    settings = MetricSettings.from_config(snakemake.params.settings)
    annotations = load_imagenet_x_annotations(settings.imagenet_x_which_factor, settings.imagenet_x_filter_prototypes)
    try:
        table = model_metrics_from_files(
            model,
            dict(zip(roles["datasets"], snakemake.input.logits, strict=True)),
            dict(zip(roles["datasets"], snakemake.input.manifests, strict=True)),
            roles["in_distribution"],
            roles["test_conditions"],
            roles["ood"],
            settings,
            zero_shot=zero_shot,
            registry_row=row,
            prompt_set=snakemake.params.prompt_set,
            annotations=annotations,
            cue_conflict=roles.get("cue_conflict", []),
        )
    except CacheError as error:  # moved aside, so the same command recomputes it
        if error.path is None or not error.path.exists():
            raise
        raise CacheError(rejection_message(error, reject_cache_file(error.path)), error.path) from None
    write_metrics_table(table, snakemake.output[0], {"model": model, "settings": settings.to_dict()})
    log.info("%s: wrote %d metric rows to %s", model, len(table), snakemake.output[0])
