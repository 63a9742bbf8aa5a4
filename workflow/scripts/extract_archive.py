"""Rule extract_archive: verify data/archives/{archive}, extract it into data/extracted/{archive}/, marker last."""

from clip_robustness.datasets.extract import extract_verified_archive
from clip_robustness.datasets.registry import ArchiveEntry
from clip_robustness.workflow.joblog import job_log

with job_log(snakemake.log[0]):
    p = snakemake.params.extract
    extract_verified_archive(
        snakemake.input.archive,
        ArchiveEntry.from_dict(p["archive"]),
        p["dest"],
        snakemake.output.marker,
        pinned_path=p["pinned_path"],
        rejected_dir=p["rejected_dir"],
        datasets=p["datasets"],
    )
