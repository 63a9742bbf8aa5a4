"""Rule extract_archive: verify data/archives/{archive}, extract it into data/extracted/{archive}/, marker last."""

import logging

from clip_robustness.datasets.extract import extract_verified_archive
from clip_robustness.datasets.registry import ArchiveEntry

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
p = snakemake.params.extract
try:
    extract_verified_archive(
        snakemake.input.archive,
        ArchiveEntry.from_dict(p["archive"]),
        p["dest"],
        snakemake.output.marker,
        pinned_path=p["pinned_path"],
        rejected_dir=p["rejected_dir"],
        datasets=p["datasets"],
    )
except Exception:
    logging.exception("extract_archive failed")
    raise
