"""Rule prompt_set_metrics: one zero-shot model's metrics under one prompt set's text head, from its cached image
embeddings (no image model run) -> results/ablation/metrics/{model}/{prompt_set}.parquet."""

from clip_robustness.logits.cache import expected_metadata
from clip_robustness.logits.embeddings import load_head_arrays
from clip_robustness.metrics.imagenet_x import load_imagenet_x_annotations
from clip_robustness.metrics.prompt_ablation import prompt_set_model_metrics
from clip_robustness.metrics.tidy import MetricSettings, write_metrics_table
from clip_robustness.workflow.joblog import job_log

with job_log(snakemake.log[0]) as log:
    model, prompt_set = snakemake.wildcards.model, snakemake.wildcards.prompt_set
    roles, row = snakemake.params.roles, dict(snakemake.params.model_row)
    settings = MetricSettings.from_config(snakemake.params.settings)
    annotations = load_imagenet_x_annotations(settings.imagenet_x_which_factor, settings.imagenet_x_filter_prototypes)
    weights, logit_scale = load_head_arrays(snakemake.input.head, model, prompt_set)
    # the embeddings must be this model's, computed with the study's head (the files' staleness rules)
    expect = {
        k: v
        for k, v in expected_metadata(row, "", "", snakemake.params.cache_prompt_set).items()
        if k not in ("dataset", "manifest_hash")
    }
    table = prompt_set_model_metrics(
        model,
        dict(zip(roles["datasets"], snakemake.input.embeddings, strict=True)),
        dict(zip(roles["datasets"], snakemake.input.manifests, strict=True)),
        roles,
        weights,
        logit_scale,
        settings,
        expect=expect,
        annotations=annotations,
    )
    write_metrics_table(
        table, snakemake.output[0], {"model": model, "prompt_set": prompt_set, "settings": settings.to_dict()}
    )
    log.info("%s, prompt set %s: wrote %d metric rows to %s", model, prompt_set, len(table), snakemake.output[0])
