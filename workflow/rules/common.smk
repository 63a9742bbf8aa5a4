# The workflow's Python: config validation, the study (built once), the one wildcard_constraints block and the named
# input functions the rules use, each a call into the package (no lambdas, no work at parse time). One section a stage.

import re

from snakemake.logging import logger
from snakemake.utils import validate

from clip_robustness.datasets import workflow as datasets_workflow
from clip_robustness.figures import CATEGORY_FINDINGS, CATEGORY_TABLES, FIGURE_NAMES, FIGURES, TABLE_FILES
from clip_robustness.figures import figure_options  # cheap: the plotting libraries load in the jobs
from clip_robustness.logits.ablation_inputs import AblationInputs
from clip_robustness.logits.workflow import StudyWorkflow, decode_workers, loader_workers, spec_table_path
from clip_robustness import names  # the output paths: templates and the functions filling them
from clip_robustness.names import METRICS_TABLE, OOD_CORRELATIONS, QC_TABLE, cache_path, embeddings_path, manifest_path
from clip_robustness.qc.published_accuracy import reference_table_files
from clip_robustness.workflow.config_checks import check_config_values
from clip_robustness.workflow.joblog import benchmark_path, log_path

validate(config, schema="../schemas/config.schema.yaml")
check_config_values(config)  # orderings the schema cannot express (e.g. metrics.temperature_range)

# The registries, the study, its logits jobs and how they are cut (clip_robustness.logits.workflow), once per process.
STUDY = StudyWorkflow.from_config(config, warn=logger.warning)
MODELS = STUDY.models
DATASETS = STUDY.datasets
CORE_DATASETS = STUDY.core_datasets


# Model and dataset ids are checked against the registries when the Study is built (unknown ids stop the run naming
# close matches); a cheap pattern suffices here (all ids as alternatives cost ~7 s of the full dry run, performance.md).
wildcard_constraints:
    model=r"[A-Za-z0-9][A-Za-z0-9._+-]*",
    dataset=r"[A-Za-z0-9][A-Za-z0-9._+-]*",
    archive="|".join(re.escape(name) for name in sorted(STUDY.dataset_registry.archives)),
    # A decode geometry key (clip_robustness.logits.geometry.DecodeSpec.key) and an ImageNet-C group: a severity
    # (inference.imagenet_c_jobs: per_severity) or a corruption name (per_corruption).
    preprocessing=r"[0-9]+x[0-9]+-[a-z-]+-[0-9a-f]{10}",
    imagenet_c_group=r"[1-5]|[a-z_]+",
    # A prompt set of the ablation: a built-in id or a prompt file's stem (clip_robustness.models.prompt_sets).
    prompt_set=r"[A-Za-z0-9][A-Za-z0-9._-]*",


# ============================================================================ targets
# Recovery is "run the same command again" (docs/troubleshooting.md): Snakemake does not regenerate a missing
# intermediate file whose outputs exist, so every file a user may be told to delete is a target itself.


def get_final_output():
    """Everything the default target builds: metric tables, QC table, figures and tables, and the intermediate
    files that must be rebuilt when deleted or rejected (extraction markers, manifests, logits, embeddings)."""
    rebuilt = [*STUDY.extraction_markers(), *get_all_manifests(), *get_all_logits(), *STUDY.all_embeddings()]
    return [METRICS_TABLE, QC_TABLE, *get_figures(), *get_tables(), *rebuilt, *ABLATION.targets()]


def get_metric_results():
    """Every file computed from the per-model metric tables: the outputs of aggregate_metrics, the QC table, figures,
    tables and findings, report cards. The start-up checks remove them with the tables of a dropped manifest or
    logits file (clip_robustness.logits.startup), so that any target, not only this default one, replans them."""
    return [*rules.aggregate_metrics.output, QC_TABLE, *get_figures(), *get_tables(), *REPORT_CARDS]


def get_all_logits(wildcards=None):
    """Every logits cache file of the study: results/logits/{model}/{dataset}.parquet."""
    return [cache_path(model, dataset) for model in MODELS for dataset in DATASETS]


def get_all_manifests(wildcards=None):
    """Every manifest of the study, in DATASETS order: data/manifests/{dataset}.parquet."""
    return [manifest_path(dataset) for dataset in DATASETS]


# A job SLURM stopped at its time or memory limit: one line naming the rule and the resource to raise
# (runtime, mem_mb), after Snakemake's own error (clip_robustness.workflow.slurm_hints, docs/cluster.md).
onerror:
    from clip_robustness.workflow.slurm_hints import print_limit_hints

    print_limit_hints(log)


# ============================================================================ datasets (owner: datasets stage)


def get_download_params(wildcards):
    """download_archive: the archive's registry entry, local copy, retry policy, checksum files."""
    return datasets_workflow.download_params(STUDY.dataset_registry, wildcards.archive, config["downloads"])


def get_extract_params(wildcards):
    """extract_archive: destination folder and zip password."""
    return datasets_workflow.extract_params(STUDY.dataset_registry, wildcards.archive)


def get_manifest_inputs(wildcards):
    """build_manifest: extraction markers of the dataset's archives (none for a local folder), and of the
    ImageNet devkit when supplied."""
    return datasets_workflow.manifest_inputs(STUDY.dataset_registry, wildcards.dataset, config["downloads"])


def get_manifest_params(wildcards):
    """build_manifest: registry entry, image root folder, corrupt-image policy (ImageNet val: devkit folder)."""
    return datasets_workflow.manifest_params(STUDY.dataset_registry, wildcards.dataset, config["downloads"])


def get_manifest_subset(wildcards):
    """build_manifest: the ImageNet-C subset of {dataset} (config datasets.imagenet_c.images_per_condition), or None."""
    return STUDY.manifest_subset(wildcards.dataset)


# ============================================================================ models (owner: models stage)


def get_model_weights_record(wildcards):
    """{model}'s weights record, data/weights/{model}.json, written by fetch_model_weights on the login node. An
    input of the model's GPU jobs, so a job never starts on an offline node before its weights are in the cache."""
    return names.weights_record_path(wildcards.model)


def get_model_row(wildcards):
    """The model-registry row of {model}: a dict of the registry columns (model_id, library, ...)."""
    return STUDY.plan.row(wildcards.model)


def get_model_weights(wildcards):
    """{model}'s local weights file when the registry names one and it exists, else [] (LogitsPlan.weights_input)."""
    return STUDY.plan.weights_input(wildcards.model)


# ============================================================================ logits (owner: logits stage)
# How the logits stage is cut (clip_robustness.logits.cutting): per model, one job over the core datasets and one per
# ImageNet-C group (inference.imagenet_c_jobs); decoding per preprocessing geometry in the same groups.


def group_patterns(*, core):
    """The datasets of a group job's outputs: the core datasets, or each condition of ImageNet-C group
    {imagenet_c_group} as a pattern over that wildcard (clip_robustness.logits.cutting)."""
    return CORE_DATASETS if core else STUDY.groups.condition_patterns("imagenet_c_group")


def decoded_outputs(path, *, core):
    """The decoded arrays (path: names.decoded_path) or sidecars (names.decoded_metadata_path) of a decode group job.
    Temporary (deleted once their last consumer in this run is done) unless inference.keep_decoded; update() files: a
    group's decode job keeps the arrays still current (clip_robustness.logits.decoded.decoded_is_current)."""
    paths = [path(dataset, "{preprocessing}") for dataset in group_patterns(core=core)]
    return update(paths if config["inference"]["keep_decoded"] else temp(paths))


def logits_outputs(*, core):
    """The logits files of a cache_logits group job: update() files, so the job keeps those still current."""
    return update([cache_path("{model}", dataset) for dataset in group_patterns(core=core)])


def embeddings_outputs(*, core):
    """The image-embeddings files a zero-shot model's group job writes beside its logits (inference.cache_embeddings):
    update() files, kept while current, like the logits."""
    return update([embeddings_path("{model}", dataset) for dataset in group_patterns(core=core)])


def get_group_manifests(wildcards):
    """The manifests of a group job's datasets, in group order."""
    return [manifest_path(dataset) for dataset in STUDY.group_datasets(wildcards.get("imagenet_c_group"))]


def get_cache_group_input(wildcards):
    """Inputs of a cache_logits group job: each dataset's manifest (and decoded array with its sidecar on the fast
    path), as lists in group order, the model's head and local weights, and its weights record."""
    return STUDY.cache_group_inputs(wildcards.model, wildcards.get("imagenet_c_group"))


def get_cache_group_params(wildcards):
    """The dataset ids of a cache_logits group job, in the order of its outputs."""
    return STUDY.group_datasets(wildcards.get("imagenet_c_group"))


def get_decode_params(wildcards):
    """decode_images: the library and transform recipe of {preprocessing} (from the study's first model with it)."""
    return STUDY.plan.decode_params(wildcards.preprocessing)


# ============================================================================ metrics (owner: metrics stage)


def get_model_metric_logits(wildcards):
    """Cached logits of one model on every dataset of the study, in DATASETS order."""
    return [cache_path(wildcards.model, dataset) for dataset in DATASETS]


def get_metric_roles(wildcards=None):
    """Dataset ids by role, for the metric scripts: DATASETS order, ID set, test conditions, OOD sets."""
    return STUDY.metric_roles()


def get_is_zero_shot(wildcards):
    """Whether {model} is zero-shot CLIP (MCM for OOD detection)."""
    return bool(STUDY.model_registry.is_zero_shot(wildcards.model))


def get_model_metric_tables(wildcards):
    """Per-model metric tables of every model of the study."""
    return expand(names.MODEL_METRICS, model=MODELS)


# ============================================================================ prompt-set ablation (ablation.smk)
# Its input functions (named, wildcards first) are clip_robustness.logits.ablation_inputs.AblationInputs's methods.
ABLATION = AblationInputs(STUDY)


# ============================================================================ figures (owner: figures stage)
# Figure rules read only the metrics table, the OOD correlations and the registry: deleting figures reruns no job else.


def get_figure_options(name):
    """Keyword options of figure `name`'s function for this study (clip_robustness.figures.figure_options)."""
    return figure_options(name, STUDY.study.in_distribution, STUDY.study.test_conditions, STUDY.study.ood_datasets)


# Dataset id -> the name figures and report cards show (the dataset registry's short titles).
DATASET_TITLES = STUDY.dataset_titles()


def get_figures():
    """PNG and PDF of every figure: results/figures/{name}.png|pdf."""
    return expand(names.FIGURE, name=FIGURE_NAMES, ext=("png", "pdf"))


def get_tables():
    """Every table: the model registry (CSV, LaTeX), the per-model summary, the OOD correlations."""
    return expand(names.TABLE, file=TABLE_FILES)


# ============================================================================ qc (owner: qc stage)
# Published top-1 tables the QC compares against (rows cut by tools/build_reference_tables.py).
QC_REFERENCE_DIR = "config/reference"


def get_published_reference_tables(wildcards):
    """The shipped open_clip and timm result tables the published-accuracy QC reads."""
    return [str(path) for path in reference_table_files(QC_REFERENCE_DIR)]


# ============================================================================ report cards (owner: figures stage)
# The own models of the study (registry study 'own', added by make add-model) and their cards, targets of `all`.
REPORT_CARDS = expand(names.REPORT_CARD, model=STUDY.own_models)


def get_own_model_registry(wildcards):
    """write_report_card: the model registry, once {model} is known to be an own model (else stops with the reason)."""
    return STUDY.own_model_registry(wildcards.model)
