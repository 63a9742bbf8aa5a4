"""Rule make_tables: the model registry (CSV + LaTeX, as in the paper's appendix), the per-model
summary of every metric, and the OOD correlation table, under results/tables/."""

import pandas as pd

from clip_robustness.figures.data import read_metrics
from clip_robustness.figures.tables import model_summary, ood_correlations_table, registry_latex, registry_table
from clip_robustness.models.registry import load_model_registry
from clip_robustness.workflow.joblog import job_log

with job_log(snakemake.log[0]) as log:
    registry = load_model_registry(snakemake.input.registry).table
    appendix = registry_table(registry)
    appendix.to_csv(snakemake.output.registry_csv, index=False)
    with open(snakemake.output.registry_tex, "w") as tex:
        tex.write(registry_latex(appendix, caption=snakemake.params.registry_caption))
    summary = model_summary(read_metrics(snakemake.input.metrics), registry)
    summary.to_csv(snakemake.output.summary, index=False)
    ood_correlations_table(pd.read_csv(snakemake.input.ood_correlations)).to_csv(
        snakemake.output.ood_correlations, index=False
    )
    log.info("tables: %d registry rows, summary %d models x %d columns", len(appendix), *summary.shape)
