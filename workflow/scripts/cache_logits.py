"""Rule cache_logits: one model on one dataset's manifest -> results/logits/{model}/{dataset}.parquet."""

import torch

from clip_robustness.datasets.manifest import read_manifest
from clip_robustness.logits.loop import cache_dataset_logits
from clip_robustness.workflow.joblog import job_log

with job_log(snakemake.log[0]) as log:
    torch.set_num_threads(snakemake.threads)
    path = cache_dataset_logits(
        snakemake.params.row,
        read_manifest(snakemake.input.manifest),
        snakemake.output[0],
        head_path=snakemake.input.get("head"),
        prompt_set=snakemake.params.prompt_set,
        batch_size=int(snakemake.resources.batch_size),
        num_workers=int(snakemake.resources.workers),
        precision_name=snakemake.params.precision,
        allow_tf32=snakemake.params.allow_tf32,
        decoded=snakemake.input.get("decoded"),  # None: the reference path (inference.decoded_cache false)
        cpu_autocast=snakemake.params.cpu_autocast,
    )
    log.info("wrote %s", path)
