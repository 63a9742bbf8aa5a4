# Everything Python in the workflow lives here: config validation, the registries, the one
# wildcard_constraints block and the named input functions the rules use. Rules hold no lambdas.
# Each stage has its own section below.

import re
from pathlib import Path

from snakemake.utils import validate

from clip_robustness.datasets.registry import load_dataset_registry
from clip_robustness.models.registry import load_model_registry
from clip_robustness.study import Study


validate(config, schema="../schemas/config.schema.yaml")

DATASET_REGISTRY = load_dataset_registry(
    config["dataset_registry"],
    url_overrides=config["downloads"].get("url_overrides", {}),
)
MODEL_REGISTRY = load_model_registry(config["model_registry"])
STUDY = Study.from_config(config, DATASET_REGISTRY, MODEL_REGISTRY)

MODELS = STUDY.model_ids
DATASETS = STUDY.dataset_ids


def alternatives(names):
    """A regex matching exactly one of the given names."""
    return "|".join(re.escape(name) for name in sorted(names))


wildcard_constraints:
    model=alternatives(MODEL_REGISTRY.ids),
    dataset=alternatives(DATASET_REGISTRY.known_ids()),
    archive=alternatives(DATASET_REGISTRY.archives),


# ============================================================================ targets


def get_final_output():
    """Everything `rule all` builds: metric tables, QC table, figures and tables."""
    return [
        "results/metrics/metrics.parquet",
        "results/qc/published_accuracy.csv",
        *get_figures(),
        *get_tables(),
    ]


def get_all_logits():
    return expand("results/logits/{model}/{dataset}.parquet", model=MODELS, dataset=DATASETS)


# ============================================================================ datasets (owner: datasets stage)

from clip_robustness.datasets import workflow as datasets_workflow

# Stop before any job when ImageNet val (never fetched by the pipeline) is needed and not provided.
datasets_workflow.check_user_supplied_archives(DATASET_REGISTRY, STUDY.dataset_ids, config["downloads"])


def get_download_params(wildcards):
    """download_archive: the archive's registry entry, local copy, retry policy, checksum files."""
    return datasets_workflow.download_params(DATASET_REGISTRY, wildcards.archive, config["downloads"])


def get_extract_params(wildcards):
    """extract_archive: destination folder and zip password."""
    return datasets_workflow.extract_params(DATASET_REGISTRY, wildcards.archive)


def get_manifest_inputs(wildcards):
    """build_manifest: extraction markers of the dataset's archives (none for a local folder)."""
    return datasets_workflow.manifest_inputs(DATASET_REGISTRY, wildcards.dataset, config["downloads"])


def get_manifest_params(wildcards):
    """build_manifest: registry entry, image root folder, corrupt-image policy."""
    return datasets_workflow.manifest_params(DATASET_REGISTRY, wildcards.dataset, config["downloads"])


# ============================================================================ logits (owner: logits stage)


def get_model_row(wildcards):
    """The model-registry row of {model}: a dict of the registry columns (model_id, library, ...)."""
    return MODEL_REGISTRY.row(wildcards.model)


def get_model_weights(wildcards):
    """{model}'s local weights file when the registry names one (so Snakemake reruns on a new file), else []."""
    weights = MODEL_REGISTRY.row(wildcards.model).get("weights_file") or ""
    return [weights] if weights else []


def get_cache_logits_input(wildcards):
    """Inputs of cache_logits: the dataset's manifest, the model's zero-shot head (open_clip models, which
    are the zero-shot CLIP models) and its local weights file, if any."""
    inputs = {"manifest": f"data/manifests/{wildcards.dataset}.parquet"}
    if MODEL_REGISTRY.row(wildcards.model)["library"] == "open_clip":
        inputs["head"] = f"results/heads/{wildcards.model}.pt"
    inputs.update(zip(["weights"], get_model_weights(wildcards)))
    return inputs


def get_loader_workers(wildcards, threads):
    """DataLoader worker processes for cache_logits: the job's threads but one (which drives the model)."""
    return max(threads - 1, 0)


# ============================================================================ metrics (owner: metrics stage)


def get_model_metric_logits(wildcards):
    """Cached logits of one model on every dataset of the study, in DATASETS order."""
    return expand("results/logits/{model}/{dataset}.parquet", model=wildcards.model, dataset=DATASETS)


def get_metric_manifests(wildcards):
    """Manifests of every dataset of the study (label spaces, file names), in DATASETS order."""
    return expand("data/manifests/{dataset}.parquet", dataset=DATASETS)


def get_metric_roles(wildcards):
    """Dataset ids by role, for the metric scripts: DATASETS order, ID set, test conditions, OOD sets."""
    return {
        "datasets": list(DATASETS),
        "in_distribution": STUDY.in_distribution,
        "test_conditions": list(STUDY.test_conditions),
        "ood": list(STUDY.ood_datasets),
    }


def get_metric_model_row(wildcards):
    """The model-registry row of the model (checks the cache metadata; decides MCM for zero-shot CLIP)."""
    row = dict(MODEL_REGISTRY.row(wildcards.model))
    row["is_zero_shot"] = bool(MODEL_REGISTRY.is_zero_shot(wildcards.model))
    return row


def get_model_metric_tables(wildcards):
    """Per-model metric tables of every model of the study."""
    return expand("results/metrics/models/{model}.parquet", model=MODELS)


# ============================================================================ figures (owner: figures stage)

from clip_robustness.figures import FIGURE_NAMES, TABLE_FILES  # cheap: plotting libraries load in the jobs

# Figure rules read only these three files, so deleting figures reruns no cache or metric job.
METRICS_TABLE = "results/metrics/metrics.parquet"
OOD_CORRELATIONS = "results/metrics/ood_correlations.csv"

# Keyword options of each figure function (clip_robustness.figures.render_figure), from the config.
FIGURE_OPTIONS = {
    "ood_detection": {
        "ood_sets": list(STUDY.ood_datasets),
        "score": config["metrics"]["ood_score"],
        "id_dataset": STUDY.in_distribution,
    },
    "calibration": {
        "datasets": [f"{STUDY.in_distribution}_id_test", "imagenet_v2_threshold07", "imagenet_r", "imagenet_a"],
    },
    "calibration_shift": {
        "test_conditions": list(STUDY.test_conditions),
        "id_test": f"{STUDY.in_distribution}_id_test",
    },
}


def get_figure_options(name):
    """Keyword options of figure `name` (empty for figures that take none)."""
    return FIGURE_OPTIONS.get(name, {})


def get_figures():
    """PNG and PDF of every figure: results/figures/{name}.png|pdf."""
    return expand("results/figures/{name}.{ext}", name=FIGURE_NAMES, ext=("png", "pdf"))


def get_tables():
    """Every table: the model registry (CSV, LaTeX), the per-model summary, the OOD correlations."""
    return expand("results/tables/{file}", file=TABLE_FILES)



# ============================================================================ qc (owner: qc stage)

# Published top-1 tables the QC compares against (rows cut by tools/build_reference_tables.py).
QC_REFERENCE_DIR = "config/reference"


def get_published_reference_tables(wildcards):
    """The shipped open_clip and timm result tables the published-accuracy QC reads."""
    from clip_robustness.qc import reference_table_files

    return [str(path) for path in reference_table_files(QC_REFERENCE_DIR)]
