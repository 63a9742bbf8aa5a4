"""Rule aggregate_prompt_sets: every ablation model's per-prompt-set metric tables, with the study's other models for
the reference fit -> results/ablation/prompt_set_metrics.parquet (+ .csv; column prompt_set)."""

from clip_robustness.metrics.prompt_ablation import prompt_set_table
from clip_robustness.metrics.tidy import read_metrics_table
from clip_robustness.models.registry import load_model_registry
from clip_robustness.workflow.joblog import job_log

with job_log(snakemake.log[0]) as log:
    tables: dict[str, list] = {}
    for path in snakemake.input.tables:
        table, metadata = read_metrics_table(path)
        tables.setdefault(str(metadata["prompt_set"]), []).append(table)
    tables = {name: tables.get(name, []) for name in snakemake.params.prompt_sets}
    result = prompt_set_table(
        read_metrics_table(snakemake.input.metrics)[0], tables, load_model_registry(snakemake.input.registry).table
    )
    result.to_parquet(snakemake.output.parquet, index=False)
    result.to_csv(snakemake.output.csv, index=False)
    log.info("wrote %d rows: %d models x %d prompt sets", len(result), result["model"].nunique(), len(tables))
