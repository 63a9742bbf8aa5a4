"""Rules cache_logits, cache_logits_imagenet_c (and their zero-shot twins cache_logits_zero_shot*, which also write
results/embeddings/{model}/{dataset}.parquet): one model, built once, over a group of datasets ->
results/logits/{model}/{dataset}.parquet each (outputs still current are kept; clip_robustness.logits.job)."""

import torch

from clip_robustness.logits.job import cache_group_logits, tasks_from_lists
from clip_robustness.workflow.joblog import job_log

with job_log(snakemake.log[0]) as log:
    torch.set_num_threads(snakemake.threads)
    written = cache_group_logits(
        snakemake.params.row,
        tasks_from_lists(
            snakemake.params.datasets,
            snakemake.input.manifests,
            snakemake.output.logits,
            snakemake.input.get("decoded"),  # no decoded arrays: the reference path
            snakemake.output.get("embeddings"),
        ),  # classifiers: no embeddings
        head_path=snakemake.input.get("head"),
        weights_path=snakemake.input.get("weights"),
        prompt_set=snakemake.params.prompt_set,
        batch_size=int(snakemake.resources.batch_size),
        num_workers=int(snakemake.resources.workers),
        precision_name=snakemake.params.precision,
        allow_tf32=snakemake.params.allow_tf32,
        cpu_autocast=snakemake.params.cpu_autocast,
    )
    log.info("wrote %d of %d logits files", len(written), len(snakemake.output.logits))
