# Metrics stage (docs/methods.md, "Metric definitions"; code in src/clip_robustness/metrics/): cached logits -> tidy tables.
# CPU only, no torch. One job per model reads each of its logits files once; the aggregate adds the
# metrics that need every model (effective robustness against the reference group of
# clip_robustness.metrics.aggregate.aggregate_from_files, OOD correlations); the findings table tests the paper's claims
# on the aggregate.

from pathlib import Path


rule compute_model_metrics:
    input:
        logits=get_model_metric_logits,
        manifests=get_all_manifests,
    output:
        names.model_metrics_path("{model}"),
    log:
        log_path("compute_model_metrics", "model"),
    benchmark:
        benchmark_path("compute_model_metrics", "model")
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        roles=get_metric_roles,
        model_row=get_model_row,
        zero_shot=get_is_zero_shot,
        settings=config["metrics"],
        prompt_set=config["zero_shot"]["prompt_set"],
    script:
        "../scripts/compute_model_metrics.py"


rule aggregate_metrics:
    input:
        tables=get_model_metric_tables,
        registry=config["model_registry"],
    output:
        parquet=METRICS_TABLE,
        csv=names.METRICS_CSV,
        settings=names.METRICS_SETTINGS,
        correlations=OOD_CORRELATIONS,
    log:
        log_path("aggregate_metrics"),
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        roles=get_metric_roles,
        settings=config["metrics"],
    script:
        "../scripts/aggregate_metrics.py"


rule tabulate_findings:
    input:
        metrics=METRICS_TABLE,
        registry=config["model_registry"],
        # How the verdicts behave on simulated studies at the paper's n (make findings-check; not a result).
        validation=names.FINDINGS_VALIDATION,
        # The prompt-set ablation's table, when configured (rows prompt-*; ablation.smk).
        prompt_sets=ABLATION.table,
    output:
        findings=report(
            names.table_path("findings.csv"),
            caption="../report/findings.rst",
            category=CATEGORY_FINDINGS,
        ),
        validation=report(
            names.table_path("findings_validation.csv"),
            caption="../report/findings_validation.rst",
            category=CATEGORY_FINDINGS,
        ),
    log:
        log_path("tabulate_findings"),
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        roles=get_metric_roles(),
    script:
        "../scripts/tabulate_findings.py"
