"""Rule download_archive: put a verified copy of one archive at data/archives/{archive}."""

from clip_robustness.datasets.download import obtain_archive_for_rule
from clip_robustness.workflow.joblog import job_log

with job_log(snakemake.log[0]):
    obtain_archive_for_rule(snakemake.params.download, snakemake.output.archive)
