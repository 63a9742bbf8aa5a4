"""Rule share_cache: pack the study's logits, manifests, heads and weights records with a checksum list."""

from clip_robustness.models.adapters import ADAPTERS
from clip_robustness.workflow.joblog import job_log
from clip_robustness.workflow.share import pack

with job_log(snakemake.log[0]) as log:
    out = pack(
        snakemake.config,
        snakemake.params.models,
        snakemake.params.datasets,
        snakemake.output[0],
        spec_table=snakemake.params.spec_table,
        distributions=[adapter.distribution for adapter in ADAPTERS.values() if adapter.distribution],
        ablation_files=list(snakemake.input.ablation),
    )
    log.info(
        "packed the shared cache of %d models x %d datasets into %s (%.1f MiB)",
        len(snakemake.params.models),
        len(snakemake.params.datasets),
        out,
        out.stat().st_size / 2**20,
    )
