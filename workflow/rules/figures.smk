# Figures and tables (docs/methods.md, "Figures"): one rule per figure, each reading only the tidy metrics table and
# the model registry, so `snakemake --cores 2 figures` after deleting results/figures/ reruns no cache
# or metric job. Every output shown in the report has a caption under workflow/report/.
# Target functions and figure options live in the "figures" section of common.smk; the findings table is made
# by the metrics stage (metrics.smk).


rule figures:
    """Every figure (PNG + PDF) and table: `snakemake --cores 2 figures`."""
    input:
        get_figures(),
        get_tables(),


# One rule per figure of clip_robustness.figures.FIGURES (name, report category, caption file, options): a new
# figure is one entry there, one drawing function and one caption under workflow/report/.
for figure in FIGURES:

    rule:
        name:
            f"plot_{figure.name}"
        input:
            metrics=METRICS_TABLE,
            registry=config["model_registry"],
        output:
            png=report(names.figure_path(figure.name), caption=figure.caption, category=figure.category),
            pdf=names.figure_path(figure.name, "pdf"),
        log:
            log_path(f"plot_{figure.name}"),
        conda:
            "../../envs/analysis.yaml"
        resources:
            mem_mb=2000,
            runtime=10,
        params:
            logit_scaled=config["figures"]["logit_scaled_accuracy"],
            figure=figure.name,
            options=get_figure_options(figure.name),
            dataset_titles=DATASET_TITLES,
        script:
            "../scripts/plot_figure.py"


rule make_tables:
    input:
        metrics=METRICS_TABLE,
        registry=config["model_registry"],
        ood_correlations=OOD_CORRELATIONS,
    output:
        registry_csv=report(
            names.table_path("model_registry.csv"), caption="../report/model_registry.rst", category=CATEGORY_TABLES
        ),
        registry_tex=names.table_path("model_registry.tex"),
        summary=report(
            names.table_path("model_summary.csv"), caption="../report/model_summary.rst", category=CATEGORY_TABLES
        ),
        ood_correlations=report(
            names.table_path("ood_correlations.csv"),
            caption="../report/ood_correlations.rst",
            category=CATEGORY_TABLES,
        ),
    log:
        log_path("make_tables"),
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        registry_caption="Models of the study: zero-shot CLIP (open_clip), CLIP fine-tuned on ImageNet and ImageNet classifiers (timm).",
    script:
        "../scripts/make_tables.py"
