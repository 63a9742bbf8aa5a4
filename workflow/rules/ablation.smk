# Prompt-set ablation (docs/methods.md, "Embeddings cache and prompt-set ablation"; config zero_shot.ablation_prompt_sets):
# every metric of each zero-shot model recomputed per prompt set from its cached image embeddings
# (results/embeddings/, written by the zero-shot logits jobs), on CPU. No rule here runs an image model or asks for
# a GPU, and none is an input of a logits job: adding or changing a prompt set reruns no logits job.
# Code: clip_robustness.models.prompt_sets (the sets and the prompt-file format), clip_robustness.models.zero_shot
# (build_ablation_head: text tower only), clip_robustness.metrics.prompt_ablation (derived logits, metrics, statistic).


rule build_ablation_head:
    input:
        weights=get_model_weights,
        weights_record=get_model_weights_record,
        prompt_file=ABLATION.prompt_file,
    output:
        names.ABLATION_HEAD,
    log:
        log_path("build_ablation_head", "model", "prompt_set"),
    benchmark:
        benchmark_path("build_ablation_head", "model", "prompt_set")
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        row=get_model_row,
        spec=ABLATION.prompt_spec,
    script:
        "../scripts/build_ablation_head.py"


rule prompt_set_metrics:
    input:
        embeddings=ABLATION.model_embeddings,
        manifests=get_all_manifests,
        head=names.ABLATION_HEAD,
    output:
        names.ABLATION_MODEL_METRICS,
    log:
        log_path("prompt_set_metrics", "model", "prompt_set"),
    benchmark:
        benchmark_path("prompt_set_metrics", "model", "prompt_set")
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        roles=get_metric_roles,
        model_row=get_model_row,
        settings=config["metrics"],
        cache_prompt_set=config["zero_shot"]["prompt_set"],
    script:
        "../scripts/prompt_set_metrics.py"


rule aggregate_prompt_sets:
    input:
        tables=ABLATION.model_tables,
        metrics=METRICS_TABLE,
        registry=config["model_registry"],
    output:
        parquet=names.ABLATION_METRICS,
        csv=names.ABLATION_METRICS.removesuffix(".parquet") + ".csv",
    log:
        log_path("aggregate_prompt_sets"),
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        prompt_sets=STUDY.ablation_prompt_sets,
    script:
        "../scripts/aggregate_prompt_sets.py"


rule plot_prompt_sets:
    input:
        table=names.ABLATION_METRICS,
        registry=config["model_registry"],
    output:
        png=report(
            ABLATION.figure("png"),
            caption="../report/prompt_sets.rst",
            category="Prompt-set ablation (zero-shot CLIP)",
        ),
        pdf=ABLATION.figure("pdf"),
    log:
        log_path("plot_prompt_sets"),
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        logit_scaled=config["figures"]["logit_scaled_accuracy"],
        options=ABLATION.figure_options,
    script:
        "../scripts/plot_prompt_sets.py"
