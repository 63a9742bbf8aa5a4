# QC stage: our top-1 on ImageNet val, V2 (matched frequency), Sketch, R, A and ObjectNet against the
# numbers open_clip and timm publish for the same weights (config/reference/, with source and commit).
# A deviation above config["qc"]["tolerance_pp"] is flagged in the table the report shows.


rule qc_published_accuracy:
    input:
        metrics=METRICS_TABLE,
        registry=config["model_registry"],
        references=get_published_reference_tables,
    output:
        table=report(
            QC_TABLE,
            caption="../report/qc.rst",
            category="Quality control",
            labels={"table": "published top-1 accuracy"},
        ),
    log:
        log_path("qc_published_accuracy"),
    conda:
        "../../envs/analysis.yaml"
    params:
        tolerance_pp=config["qc"]["tolerance_pp"],
        reference_dir=QC_REFERENCE_DIR,
    script:
        "../scripts/qc_published_accuracy.py"
