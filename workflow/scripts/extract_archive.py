"""Rule extract_archive: extract data/archives/{archive} into data/extracted/{archive}/, marker last."""

import logging

from clip_robustness.datasets.extract import extract_archive

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
p = snakemake.params.extract
try:
    extract_archive(snakemake.input.archive, p["dest"], snakemake.output.marker, password=p["password"])
except Exception:
    logging.exception("extract_archive failed")
    raise
