# Figures and tables (SPEC section 5): one rule per figure, each reading only the tidy metrics table and
# the model registry, so `snakemake --cores 2 figures` after deleting results/figures/ reruns no cache
# or metric job. Every output shown in the report has a caption under workflow/report/.
# Target functions and FIGURE_OPTIONS live in the "figures" section of common.smk.


rule figures:
    """Every figure (PNG + PDF) and table: `snakemake --cores 2 figures`."""
    input:
        get_figures(),
        get_tables(),


rule plot_factor_robustness:
    input:
        metrics=METRICS_TABLE,
        registry=config["model_registry"],
    output:
        png=report(
            "results/figures/factor_robustness.png",
            caption="../report/factor_robustness.rst",
            category="Factor robustness (ImageNet-X)",
        ),
        pdf="results/figures/factor_robustness.pdf",
    log:
        "results/logs/figures/plot_factor_robustness.log",
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        logit_scaled=lookup(dpath="figures/logit_scaled_accuracy", within=config, default=False),
        figure="factor_robustness",
        options=get_figure_options("factor_robustness"),
    script:
        "../scripts/plot_figure.py"


rule plot_factor_effective_robustness:
    input:
        metrics=METRICS_TABLE,
        registry=config["model_registry"],
    output:
        png=report(
            "results/figures/factor_effective_robustness.png",
            caption="../report/factor_effective_robustness.rst",
            category="Factor robustness (ImageNet-X)",
        ),
        pdf="results/figures/factor_effective_robustness.pdf",
    log:
        "results/logs/figures/plot_factor_effective_robustness.log",
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        logit_scaled=lookup(dpath="figures/logit_scaled_accuracy", within=config, default=False),
        figure="factor_effective_robustness",
        options=get_figure_options("factor_effective_robustness"),
    script:
        "../scripts/plot_figure.py"


rule plot_factor_robustness_by_source:
    input:
        metrics=METRICS_TABLE,
        registry=config["model_registry"],
    output:
        png=report(
            "results/figures/factor_robustness_by_source.png",
            caption="../report/factor_robustness_by_source.rst",
            category="Factor robustness (ImageNet-X)",
        ),
        pdf="results/figures/factor_robustness_by_source.pdf",
    log:
        "results/logs/figures/plot_factor_robustness_by_source.log",
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        logit_scaled=lookup(dpath="figures/logit_scaled_accuracy", within=config, default=False),
        figure="factor_robustness_by_source",
        options=get_figure_options("factor_robustness_by_source"),
    script:
        "../scripts/plot_figure.py"


rule plot_factor_robustness_by_finetuning:
    input:
        metrics=METRICS_TABLE,
        registry=config["model_registry"],
    output:
        png=report(
            "results/figures/factor_robustness_by_finetuning.png",
            caption="../report/factor_robustness_by_finetuning.rst",
            category="Factor robustness (ImageNet-X)",
        ),
        pdf="results/figures/factor_robustness_by_finetuning.pdf",
    log:
        "results/logs/figures/plot_factor_robustness_by_finetuning.log",
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        logit_scaled=lookup(dpath="figures/logit_scaled_accuracy", within=config, default=False),
        figure="factor_robustness_by_finetuning",
        options=get_figure_options("factor_robustness_by_finetuning"),
    script:
        "../scripts/plot_figure.py"


rule plot_ood_detection:
    input:
        metrics=METRICS_TABLE,
        registry=config["model_registry"],
    output:
        png=report("results/figures/ood_detection.png", caption="../report/ood_detection.rst", category="OOD detection"),
        pdf="results/figures/ood_detection.pdf",
    log:
        "results/logs/figures/plot_ood_detection.log",
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        logit_scaled=lookup(dpath="figures/logit_scaled_accuracy", within=config, default=False),
        figure="ood_detection",
        options=get_figure_options("ood_detection"),
    script:
        "../scripts/plot_figure.py"


rule plot_calibration:
    input:
        metrics=METRICS_TABLE,
        registry=config["model_registry"],
    output:
        png=report("results/figures/calibration.png", caption="../report/calibration.rst", category="Calibration"),
        pdf="results/figures/calibration.pdf",
    log:
        "results/logs/figures/plot_calibration.log",
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        logit_scaled=lookup(dpath="figures/logit_scaled_accuracy", within=config, default=False),
        figure="calibration",
        options=get_figure_options("calibration"),
    script:
        "../scripts/plot_figure.py"


rule plot_calibration_shift:
    input:
        metrics=METRICS_TABLE,
        registry=config["model_registry"],
    output:
        png=report(
            "results/figures/calibration_shift.png", caption="../report/calibration_shift.rst", category="Calibration"
        ),
        pdf="results/figures/calibration_shift.pdf",
    log:
        "results/logs/figures/plot_calibration_shift.log",
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        logit_scaled=lookup(dpath="figures/logit_scaled_accuracy", within=config, default=False),
        figure="calibration_shift",
        options=get_figure_options("calibration_shift"),
    script:
        "../scripts/plot_figure.py"


rule make_tables:
    input:
        metrics=METRICS_TABLE,
        registry=config["model_registry"],
        ood_correlations=OOD_CORRELATIONS,
    output:
        registry_csv=report(
            "results/tables/model_registry.csv", caption="../report/model_registry.rst", category="Tables"
        ),
        registry_tex="results/tables/model_registry.tex",
        summary=report("results/tables/model_summary.csv", caption="../report/model_summary.rst", category="Tables"),
        ood_correlations=report(
            "results/tables/ood_correlations.csv", caption="../report/ood_correlations.rst", category="Tables"
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
