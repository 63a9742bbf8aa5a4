"""Rule download_archive: put a verified copy of one archive at data/archives/{archive}."""

from clip_robustness.datasets.download import obtain_archive
from clip_robustness.datasets.registry import ArchiveEntry
from clip_robustness.workflow.joblog import job_log

with job_log(snakemake.log[0]):
    p = snakemake.params.download
    obtain_archive(
        ArchiveEntry.from_dict(p["archive"]),
        snakemake.output.archive,
        pinned_path=p["pinned_path"],
        rejected_dir=p["rejected_dir"],
        local_path=p["local_path"],
        user_dir=p["user_dir"],
        retries=p["retries"],
        timeout_s=p["timeout_s"],
        datasets=p["datasets"],
    )
