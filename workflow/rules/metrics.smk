# Metrics stage (docs/methods.md, "Metric definitions"; code in src/clip_robustness/metrics/): cached logits -> tidy tables.
# CPU only, no torch. One job per model reads each of its logits files once; the aggregate adds the
# metrics that need every model (effective robustness, OOD correlations).


rule compute_model_metrics:
    input:
        logits=get_model_metric_logits,
        manifests=get_metric_manifests,
    output:
        "results/metrics/models/{model}.parquet",
    log:
        "results/logs/metrics/compute_model_metrics/{model}.log",
    benchmark:
        "results/benchmarks/compute_model_metrics/{model}.tsv"
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        roles=get_metric_roles,
        model_row=get_metric_model_row,
        settings=config["metrics"],
        prompt_set=config["zero_shot"]["prompt_set"],
    script:
        "../scripts/compute_model_metrics.py"


rule aggregate_metrics:
    input:
        tables=get_model_metric_tables,
        registry=config["model_registry"],
    output:
        parquet="results/metrics/metrics.parquet",
        csv="results/metrics/metrics.csv",
        settings="results/metrics/settings.json",
        correlations="results/metrics/ood_correlations.csv",
    log:
        "results/logs/metrics/aggregate_metrics.log",
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        roles=get_metric_roles,
        settings=config["metrics"],
        reference_group="standard",
    script:
        "../scripts/aggregate_metrics.py"
