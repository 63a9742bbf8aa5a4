"""Rule compute_model_metrics: one model's cached logits -> results/metrics/models/{model}.parquet."""

import logging

from clip_robustness.logits.cache import CacheError, reject_cache_file, rejection_message
from clip_robustness.metrics.imagenet_x import load_imagenet_x_annotations
from clip_robustness.metrics.tables import MetricSettings, model_metrics_from_files, write_metrics_table

logging.basicConfig(
    filename=snakemake.log[0], level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
)
log = logging.getLogger("compute_model_metrics")

try:
    model = snakemake.wildcards.model
    roles = snakemake.params.roles
    row = dict(snakemake.params.model_row)
    zero_shot = bool(row.pop("is_zero_shot"))
    settings = MetricSettings.from_config(snakemake.params.settings)
    annotations = load_imagenet_x_annotations(settings.imagenet_x_which_factor, settings.imagenet_x_filter_prototypes)
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
    )
    write_metrics_table(table, snakemake.output[0], {"model": model, "settings": settings.to_dict()})
    log.info("%s: wrote %d metric rows to %s", model, len(table), snakemake.output[0])
except CacheError as error:  # a stale or unreadable logits file: moved aside, so the same command recomputes it
    if error.path is None or not error.path.exists():
        raise
    log.exception("compute_model_metrics failed")
    raise CacheError(rejection_message(error, reject_cache_file(error.path)), error.path) from None
except Exception:
    log.exception("compute_model_metrics failed")
    raise
