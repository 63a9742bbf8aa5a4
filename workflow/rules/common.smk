# Everything Python in the workflow lives here: config validation, the registries, the one
# wildcard_constraints block and the named input functions the rules use. Rules hold no lambdas.
# Each stage has its own section below.

import re
from pathlib import Path

from snakemake.utils import validate

from clip_robustness.datasets.registry import load_dataset_registry
from clip_robustness.models.registry import load_model_registry
from clip_robustness.workflow.study import Study

validate(config, schema="../schemas/config.schema.yaml")

from clip_robustness.workflow.config_checks import check_config_values

check_config_values(config)  # orderings the schema cannot express (e.g. metrics.temperature_range)

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


# Model and dataset ids are checked against the registries when the Study is built (unknown ids stop
# the run naming close matches); here a cheap pattern suffices. Listing all ids as regex alternatives
# costs ~7 s of the 21,864-job dry run (docs/performance.md).
wildcard_constraints:
    model=r"[A-Za-z0-9][A-Za-z0-9._+-]*",
    dataset=r"[A-Za-z0-9][A-Za-z0-9._+-]*",
    archive=alternatives(DATASET_REGISTRY.archives),


# ============================================================================ targets
# Recovery is "run the same command again" (docs/troubleshooting.md). Snakemake does not regenerate a missing
# intermediate file whose downstream outputs exist, so every file a user may be told to delete (or that the
# workflow moves aside) is itself a target: extraction markers, manifests, logits files.

from clip_robustness.workflow.runlock import acquire_run_lock

# One run per working directory; locks left by a killed run are removed (clip_robustness.workflow.runlock).
RUN_LOCK = acquire_run_lock(dryrun=workflow.output_settings.dryrun) if workflow.is_main_process else None


def get_final_output():
    """Everything the default target builds: metric tables, QC table, figures and tables, and the intermediate
    files that must be rebuilt when deleted or rejected (extraction markers, manifests, logits)."""
    return [
        "results/metrics/metrics.parquet",
        "results/qc/published_accuracy.csv",
        *get_figures(),
        *get_tables(),
        *get_all_extraction_markers(),
        *get_all_manifests(),
        *get_all_logits(),
    ]


def get_all_logits():
    """Every logits cache file of the study: results/logits/{model}/{dataset}.parquet."""
    return expand("results/logits/{model}/{dataset}.parquet", model=MODELS, dataset=DATASETS)


_MANIFEST_HASHES = {}
_EXPECTED_ROWS = {}


def expected_logits_metadata(model_and_dataset):
    """What results/logits/{model}/{dataset}.parquet must record (model, manifest, prompt set), or None while the
    dataset's manifest does not exist (it is then rebuilt, and the file with it)."""
    from clip_robustness.logits.cache import expected_metadata
    from clip_robustness.logits.check import manifest_hash_of

    model, dataset = model_and_dataset
    if dataset not in _MANIFEST_HASHES:
        _MANIFEST_HASHES[dataset] = manifest_hash_of(f"data/manifests/{dataset}.parquet")
    manifest_hash = _MANIFEST_HASHES[dataset]
    if manifest_hash is None:
        return None
    if model not in _EXPECTED_ROWS:  # a registry lookup costs ~0.3 ms: once per model, not per file
        _EXPECTED_ROWS[model] = MODEL_REGISTRY.row(model)
    return expected_metadata(_EXPECTED_ROWS[model], dataset, manifest_hash, config["zero_shot"]["prompt_set"])


def reject_stale_logits():
    """Every run reads the metadata of each logits file that changed since it was last found good (one stat per
    unchanged file), so a foreign or stale file, even one copied with its old timestamp, is moved aside and recomputed
    by this run (clip_robustness.logits.check)."""
    from snakemake.logging import logger

    from clip_robustness.logits.check import check_logits_files

    files = [(f"results/logits/{m}/{d}.parquet", (m, d)) for m in MODELS for d in DATASETS]
    for rejected in check_logits_files(files, expected_logits_metadata):
        logger.warning(f"{rejected.reason} Moved aside to {rejected.moved_to}; this run recomputes it.")


if RUN_LOCK is not None:  # this process holds the run lock: no other run can be writing these files
    reject_stale_logits()


def missing_weights():
    """Model id -> weights file named in the registry but absent, for the models of the study."""
    rows = {model: model_row(model) for model in MODELS}
    return {
        m: row["weights_file"]
        for m, row in rows.items()
        if row.get("weights_file") and not Path(row["weights_file"]).exists()
    }


def check_scheduled_weights():
    """Stop before any job when a scheduled job needs a missing weights file, unless --keep-going (then only that
    model's jobs fail and every other model's branch goes on)."""
    from snakemake.exceptions import WorkflowError

    missing = missing_weights()
    scheduled = sorted(
        {job.wildcards.model for job in workflow.dag.needrun_jobs() if job.wildcards.get("model") in missing}
    )
    if scheduled and not workflow.execution_settings.keep_going:
        raise WorkflowError(
            "Before any job: missing weights file(s): "
            + "; ".join(f"model {m!r} expects {missing[m]}" for m in scheduled)
            + ". Put the file(s) there (or correct weights_file in the model registry) and run the same command again, "
            "or add --keep-going to compute every other model now."
        )


def get_all_manifests():
    """Every manifest of the study: data/manifests/{dataset}.parquet."""
    return expand("data/manifests/{dataset}.parquet", dataset=DATASETS)


def get_all_extraction_markers():
    """The extraction markers the study's manifests read (none for datasets in downloads.local_folders)."""
    return datasets_workflow.extraction_markers(DATASET_REGISTRY, DATASETS, config["downloads"])


onstart:
    check_scheduled_weights()


# ============================================================================ datasets (owner: datasets stage)

from clip_robustness.datasets import workflow as datasets_workflow

# Stop before any job when ImageNet val (never fetched by the pipeline) is needed and not provided.
datasets_workflow.check_user_supplied_archives(DATASET_REGISTRY, STUDY.dataset_ids, config["downloads"])


def drop_outdated_extractions():
    """An extraction whose archive is gone or changed is dropped, so this run extracts (and verifies) it again."""
    from snakemake.logging import logger

    for marker in datasets_workflow.drop_outdated_markers(get_all_extraction_markers()):
        logger.warning(f"{marker}: its archive is gone or changed since extraction; this run extracts it again")


if RUN_LOCK is not None:
    drop_outdated_extractions()


def get_download_params(wildcards):
    """download_archive: the archive's registry entry, local copy, retry policy, checksum files."""
    return datasets_workflow.download_params(DATASET_REGISTRY, wildcards.archive, config["downloads"])


def get_extract_params(wildcards):
    """extract_archive: destination folder and zip password."""
    return datasets_workflow.extract_params(DATASET_REGISTRY, wildcards.archive)


def get_manifest_inputs(wildcards):
    """build_manifest: extraction markers of the dataset's archives (none for a local folder), and of the
    ImageNet devkit when supplied."""
    return datasets_workflow.manifest_inputs(DATASET_REGISTRY, wildcards.dataset, config["downloads"])


def get_manifest_params(wildcards):
    """build_manifest: registry entry, image root folder, corrupt-image policy (ImageNet val: devkit folder)."""
    return datasets_workflow.manifest_params(DATASET_REGISTRY, wildcards.dataset, config["downloads"])


# ============================================================================ logits (owner: logits stage)


_MODEL_ROWS = {}


def model_row(model):
    """The model-registry row of `model`, looked up once per process (a registry lookup costs ~0.3 ms, and the
    input functions below run once per job: ~20k jobs in the full study)."""
    if model not in _MODEL_ROWS:
        _MODEL_ROWS[model] = MODEL_REGISTRY.row(model)
    return dict(_MODEL_ROWS[model])


def get_model_row(wildcards):
    """The model-registry row of {model}: a dict of the registry columns (model_id, library, ...)."""
    return model_row(wildcards.model)


def get_model_weights(wildcards):
    """{model}'s local weights file when the registry names one (so Snakemake reruns on a new file), else []. A named
    file that is missing is left out, so the DAG still builds: that model's jobs fail naming it (MissingWeightsError)
    while, with --keep-going, every other model goes on; without it the run stops before any job (see targets)."""
    weights = model_row(wildcards.model).get("weights_file") or ""
    return [weights] if weights and Path(weights).exists() else []


# The fast path (config inference.decoded_cache, docs/performance.md): each dataset is decoded once per
# preprocessing geometry into data/decoded/{dataset}/{preprocessing}.npy, shared by every model with that
# geometry. The geometry key of each model comes from timm's / open_clip's configs without building it.
DECODED_CACHE = bool(config["inference"].get("decoded_cache", True))
KEEP_DECODED = bool(config["inference"].get("keep_decoded", False))
_DECODE_SPECS = {}


def decode_spec(model):
    """{model}'s preprocessing geometry (clip_robustness.logits.decoded.DecodeSpec), or None for the reference path
    (decoded_cache off, or a transform the decoded cache cannot hold: logged, and recorded in the cache metadata)."""
    if not DECODED_CACHE:
        return None
    if model not in _DECODE_SPECS:

        from clip_robustness.logits.decoded import UnsupportedPreprocessingError, decode_spec_for_row

        try:
            _DECODE_SPECS[model] = decode_spec_for_row(model_row(model))
        except UnsupportedPreprocessingError as error:
            logger.warning(f"{error}: {model} decodes its own images (reference path)")
            _DECODE_SPECS[model] = None
    return _DECODE_SPECS[model]


def decoded_output(path):
    """A decoded array is temporary (deleted once its last consumer in this run is done) unless inference.keep_decoded."""
    return path if KEEP_DECODED else temp(path)


_DECODE_RECIPES = {}


def get_decode_params(wildcards):
    """decode_images: the library and transform recipe of {preprocessing} (from the study's first model with it)."""
    if not _DECODE_RECIPES:
        for model in sorted(MODELS, reverse=True):  # the first model (sorted ids) with a key wins
            spec = decode_spec(model)
            if spec is not None:
                _DECODE_RECIPES[spec.key] = spec.recipe_params()
    if wildcards.preprocessing not in _DECODE_RECIPES:
        raise ValueError(
            f"no model of the study has preprocessing {wildcards.preprocessing!r}; known: {sorted(_DECODE_RECIPES)}"
        )
    return _DECODE_RECIPES[wildcards.preprocessing]


def get_cache_logits_input(wildcards):
    """Inputs of cache_logits: the dataset's manifest, the model's zero-shot head (open_clip models, which
    are the zero-shot CLIP models), its local weights file, if any, and, on the fast path, the dataset's decoded
    array for the model's preprocessing geometry with its JSON sidecar."""
    inputs = {"manifest": f"data/manifests/{wildcards.dataset}.parquet"}
    if model_row(wildcards.model)["library"] == "open_clip":
        inputs["head"] = f"results/heads/{wildcards.model}.pt"
    inputs.update(zip(["weights"], get_model_weights(wildcards)))
    spec = decode_spec(wildcards.model)
    if spec is not None:
        inputs["decoded"] = f"data/decoded/{wildcards.dataset}/{spec.key}.npy"
        inputs["decoded_metadata"] = f"data/decoded/{wildcards.dataset}/{spec.key}.json"
    return inputs


def get_loader_workers(wildcards, threads):
    """DataLoader worker processes for cache_logits: the job's threads but one (which drives the model)."""
    return max(threads - 1, 0)


def get_decode_workers(wildcards, threads):
    """Decoding processes for decode_images: one per thread (the main process only writes the array)."""
    return max(threads, 1)


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
    from clip_robustness.qc.published_accuracy import reference_table_files

    return [str(path) for path in reference_table_files(QC_REFERENCE_DIR)]
