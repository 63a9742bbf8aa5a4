# The shared cache (clip_robustness.workflow.share, README "Regenerate all figures from cached logits"): the logits
# with the small files the metrics read, packed with a checksum list, so a colleague regenerates every figure, table,
# finding and the report with no dataset, no weights and no GPU (`make figures-from-cache CACHE=...`).


localrules:
    share_cache,
    from_cache,


rule share_cache:
    """`make share-cache`: results/shared_cache.tar from the study's logits, manifests, heads and weights records."""
    input:
        logits=get_all_logits(),
        manifests=get_all_manifests(),
        # The prompt-set ablation's embeddings, heads and prompt files, when it runs (none otherwise).
        ablation=ABLATION.shared_files(),
    output:
        "results/shared_cache.tar",
    log:
        log_path("share_cache"),
    conda:
        "../../envs/analysis.yaml"
    params:
        models=MODELS,
        datasets=DATASETS,
        spec_table=spec_table_path(config["model_registry"]),
    script:
        "../scripts/share_cache.py"


rule from_cache:
    """What `make figures-from-cache` builds from a shared cache: metrics, figures, tables (findings included), QC."""
    input:
        METRICS_TABLE,
        QC_TABLE,
        get_figures(),
        get_tables(),
        ABLATION.targets(),
