# Report cards: one standalone HTML page per model of a user's own (registry study `own`,
# added by `make add-model`) in the HTML report (`snakemake --report`), under "Report cards", one subcategory per
# model: its metrics beside the paper's groups, its place on each figure, its published-accuracy QC and the
# provenance of its logits and weights. Code: clip_robustness.figures.report_card. A study without own models
# (the plain demo, the paper's study) has no card and plans no job of this rule.


rule report_cards:
    """Every own model's report card: `snakemake --cores 2 report_cards`."""
    input:
        REPORT_CARDS,


rule write_report_card:
    input:
        metrics=rules.aggregate_metrics.output.parquet,
        registry=get_own_model_registry,
        qc=rules.qc_published_accuracy.output.table,
        weights_record=get_model_weights_record,
        logits=get_model_metric_logits,
    output:
        report(
            names.report_card_path("{model}"),
            caption="../report/report_card.rst",
            category="Report cards",
            subcategory="{model}",
            labels={"model": "{model}"},
        ),
    log:
        log_path("write_report_card", "model"),
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        dataset_titles=DATASET_TITLES,
    script:
        "../scripts/write_report_card.py"
