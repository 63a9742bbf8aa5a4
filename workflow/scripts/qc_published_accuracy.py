"""Rule qc_published_accuracy: our top-1 against open_clip's and timm's published numbers."""

import pandas as pd

from clip_robustness.models.registry import load_model_registry
from clip_robustness.qc.published_accuracy import load_reference_tables, published_accuracy_qc, qc_summary
from clip_robustness.workflow.joblog import job_log

with job_log(snakemake.log[0]) as log:
    tolerance_pp = float(snakemake.params.tolerance_pp)
    metrics = pd.read_parquet(snakemake.input.metrics)
    registry = load_model_registry(snakemake.input.registry)
    references = load_reference_tables(snakemake.params.reference_dir)
    table = published_accuracy_qc(metrics, registry.table, references, tolerance_pp)
    table.to_csv(snakemake.output.table, index=False, float_format="%.4f")
    for line in qc_summary(table, tolerance_pp):
        (log.warning if line.startswith("FLAGGED") else log.info)(line)
