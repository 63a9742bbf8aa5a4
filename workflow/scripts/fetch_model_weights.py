"""Rule fetch_model_weights: fetch one model's weights into the hub cache; record file, size, sha256, source."""

from clip_robustness.models.weights import fetch_weights, write_weights_record
from clip_robustness.workflow.joblog import job_log

with job_log(snakemake.log[0]) as log:
    record = fetch_weights(snakemake.params.row)
    write_weights_record(record, snakemake.output.record)
    for entry in record["files"] or [{"file": "(random weights)", "size": 0, "sha256": "", "source": ""}]:
        log.info(
            "%s: %s (%d bytes, sha256 %s) from %s",
            record["model_id"],
            entry["file"],
            entry["size"],
            entry["sha256"],
            entry["source"],
        )
