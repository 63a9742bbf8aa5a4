# Reproduction of "A Closer Look at the Robustness of Contrastive Language-Image Pre-Training (CLIP)"
# (Tu, Deng, Gedeon, NeurIPS 2023). Stages, in DAG order, one file each under workflow/rules/.
# See docs/architecture.md for the file contracts.

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

from clip_robustness.logits.startup import StartUp

min_version("9.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/datasets.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/logits.smk"
include: "workflow/rules/metrics.smk"
include: "workflow/rules/ablation.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/qc.smk"
include: "workflow/rules/report_cards.smk"
include: "workflow/rules/share.smk"


# The start-up checks, all in clip_robustness.logits.startup: before planning (run lock, user-supplied archives, each
# file judged by the identity it records), and before the first job (weights of the scheduled jobs).
START_UP = StartUp(
    STUDY, scripts=f"{workflow.basedir}/workflow/scripts", warn=logger.warning, metric_results=get_metric_results
)
START_UP.before_planning(dryrun=workflow.output_settings.dryrun, main_process=workflow.is_main_process)


onstart:
    jobs = [(job.rule.name, job.wildcards.get("model")) for job in workflow.dag.needrun_jobs()]
    stop = START_UP.before_jobs(jobs, keep_going=workflow.execution_settings.keep_going)
    if stop:
        raise WorkflowError(stop)


rule all:
    default_target: True
    input:
        get_final_output(),
        REPORT_CARDS,
