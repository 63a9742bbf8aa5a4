# Figures and tables (docs/methods.md, "Figures"): one rule per figure, each reading only the tidy metrics table and
# the model registry, so `snakemake --cores 2 figures` after deleting results/figures/ reruns no cache
# or metric job. Every output shown in the report has a caption under workflow/report/.
# Target functions and figure options live in the "figures" section of common.smk.

from pathlib import Path


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
            png=report(f"results/figures/{figure.name}.png", caption=figure.caption, category=figure.category),
            pdf=f"results/figures/{figure.name}.pdf",
        log:
            f"results/logs/figures/plot_{figure.name}.log",
        conda:
            "../../envs/analysis.yaml"
        resources:
            mem_mb=2000,
            runtime=10,
        params:
            logit_scaled=config["figures"]["logit_scaled_accuracy"],
            figure=figure.name,
            options=get_figure_options(figure.name),
        script:
            "../scripts/plot_figure.py"


# How the findings' verdicts behave on simulated studies at the paper's n (benchmarks/findings_check.py writes it
# into docs/; simulation, not a result): shown beside the findings table in the report.
FINDINGS_VALIDATION = str(Path(str(workflow.current_basedir)).parent.parent / "docs" / "findings-validation.csv")


rule tabulate_findings:
    input:
        metrics=METRICS_TABLE,
        registry=config["model_registry"],
        validation=FINDINGS_VALIDATION,
    output:
        findings=report(
            "results/tables/findings.csv",
            caption="../report/findings.rst",
            category=CATEGORY_FINDINGS,
        ),
        validation=report(
            "results/tables/findings_validation.csv",
            caption="../report/findings_validation.rst",
            category=CATEGORY_FINDINGS,
        ),
    log:
        "results/logs/figures/tabulate_findings.log",
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        roles=get_findings_roles(),
    script:
        "../scripts/tabulate_findings.py"


rule make_tables:
    input:
        metrics=METRICS_TABLE,
        registry=config["model_registry"],
        ood_correlations=OOD_CORRELATIONS,
    output:
        registry_csv=report(
            "results/tables/model_registry.csv", caption="../report/model_registry.rst", category=CATEGORY_TABLES
        ),
        registry_tex="results/tables/model_registry.tex",
        summary=report(
            "results/tables/model_summary.csv", caption="../report/model_summary.rst", category=CATEGORY_TABLES
        ),
        ood_correlations=report(
            "results/tables/ood_correlations.csv", caption="../report/ood_correlations.rst", category=CATEGORY_TABLES
        ),
    log:
        "results/logs/figures/make_tables.log",
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        registry_caption="Models of the study: zero-shot CLIP (open_clip), CLIP fine-tuned on ImageNet and ImageNet classifiers (timm).",
    script:
        "../scripts/make_tables.py"
