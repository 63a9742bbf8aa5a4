# QC stage: our top-1 on ImageNet val, V2 (matched frequency), Sketch, R, A and ObjectNet against the
# numbers open_clip and timm publish for the same weights (config/reference/, with source and commit).
# A deviation above config["qc"]["tolerance_pp"] is flagged in the table the report shows.


rule qc_published_accuracy:
    input:
        metrics="results/metrics/metrics.parquet",
        registry=config["model_registry"],
        references=get_published_reference_tables,
    output:
        table=report(
            "results/qc/published_accuracy.csv",
            caption="../report/qc.rst",
            category="Quality control",
            labels={"table": "published top-1 accuracy"},
        ),
    log:
        "results/logs/qc/published_accuracy.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        tolerance_pp=config["qc"]["tolerance_pp"],
        reference_dir=QC_REFERENCE_DIR,
    script:
        "../scripts/qc_published_accuracy.py"
