# Reproduction of "A Closer Look at the Robustness of Contrastive Language-Image Pre-Training (CLIP)"
# (Tu, Deng, Gedeon, NeurIPS 2023). Stages, in DAG order, one file each under workflow/rules/.
# See docs/architecture.md for the file contracts.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/datasets.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/logits.smk"
include: "workflow/rules/metrics.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/qc.smk"
include: "workflow/rules/report_cards.smk"
include: "workflow/rules/share.smk"


rule all:
    default_target: True
    input:
        get_final_output(),
        REPORT_CARDS,
