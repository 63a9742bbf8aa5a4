# Everything Python in the workflow lives here: config validation, the registries, the one
# wildcard_constraints block and the named input functions the rules use. Rules hold no lambdas.
# Each stage has its own section below.

import re
from pathlib import Path
from types import SimpleNamespace

from snakemake.utils import validate

from clip_robustness.datasets.registry import load_dataset_registry
from clip_robustness.models.registry import load_model_registry
from clip_robustness.workflow.study import Study

validate(config, schema="../schemas/config.schema.yaml")

from clip_robustness.workflow.config_checks import check_config_values

check_config_values(config)  # orderings the schema cannot express (e.g. metrics.temperature_range)

DATASET_REGISTRY = load_dataset_registry(
    config["dataset_registry"],
    url_overrides=config["downloads"]["url_overrides"],
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
    # A decode geometry key (clip_robustness.logits.decoded.DecodeSpec.key) and an ImageNet-C group: a severity
    # (inference.imagenet_c_jobs: per_severity) or a corruption name (per_corruption).
    preprocessing=r"[0-9]+x[0-9]+-[a-z-]+-[0-9a-f]{10}",
    imagenet_c_group=r"[1-5]|[a-z_]+",


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


def reject_stale_logits():
    """Every run (check_currency, below) reads the metadata of each logits file that changed since it was last found good (one stat per
    unchanged file), so a foreign or stale file, even one copied with its old timestamp, is moved aside and recomputed
    by this run (clip_robustness.logits.check)."""
    from snakemake.logging import logger

    from clip_robustness.logits.check import reject_stale_logits

    for rejected in reject_stale_logits(MODELS, DATASETS, MODEL_REGISTRY.row, config["zero_shot"]["prompt_set"]):
        logger.warning(rejected.message)


#: The rules whose jobs load a model's weights.
WEIGHTS_RULES = {"fetch_model_weights", "build_zero_shot_head", "cache_logits", "cache_logits_imagenet_c"}


def check_scheduled_weights():
    """Stop before any job when a scheduled job needs a missing weights file, or a scheduled fetch cannot fetch (offline
    node, weights not in the hub cache), unless --keep-going (then only that model's jobs fail, its fetch first, and
    every other model's branch goes on)."""
    from snakemake.exceptions import WorkflowError

    from clip_robustness.models import weights

    if workflow.execution_settings.keep_going:
        return
    jobs = list(workflow.dag.needrun_jobs())
    # Only jobs that load weights: metrics and figures of a shared cache need none (make figures-from-cache).
    scheduled = {job.wildcards.get("model") for job in jobs if job.rule.name in WEIGHTS_RULES} - {None}
    fetching = {job.wildcards.model for job in jobs if job.rule.name == "fetch_model_weights"}
    missing = weights.missing_weights_files({model: LOGITS_PLAN.row(model) for model in MODELS})
    unfetchable = weights.unfetchable_offline({model: LOGITS_PLAN.row(model) for model in sorted(fetching)})
    messages = [weights.missing_weights_message(missing, scheduled), weights.unfetchable_message(unfetchable)]
    if any(messages):
        raise WorkflowError("\n".join(message for message in messages if message))


def get_all_manifests():
    """Every manifest of the study: data/manifests/{dataset}.parquet."""
    return expand("data/manifests/{dataset}.parquet", dataset=DATASETS)


def get_all_extraction_markers():
    """The extraction markers the study's manifests read (none for datasets in downloads.local_folders)."""
    return datasets_workflow.extraction_markers(DATASET_REGISTRY, DATASETS, config["downloads"])


onstart:
    check_scheduled_weights()


# A job SLURM stopped at its time or memory limit: one line naming the rule and the resource to raise
# (runtime, mem_mb), after Snakemake's own error (clip_robustness.workflow.slurm_hints, docs/cluster.md).
onerror:
    from clip_robustness.workflow.slurm_hints import print_limit_hints

    print_limit_hints(log)


# ============================================================================ datasets (owner: datasets stage)

from clip_robustness.datasets import workflow as datasets_workflow

# Stop before any job when ImageNet val (never fetched by the pipeline) is needed and not provided.
datasets_workflow.check_user_supplied_archives(DATASET_REGISTRY, STUDY.dataset_ids, config["downloads"])


def drop_outdated_extractions():
    """An extraction whose archive is gone or changed is dropped, so this run extracts (and verifies) it again."""
    from snakemake.logging import logger

    for marker in datasets_workflow.drop_outdated_markers(get_all_extraction_markers()):
        logger.warning(f"{marker}: its archive is gone or changed since extraction; this run extracts it again")


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


# ============================================================================ models (owner: models stage)


def get_model_weights_record(wildcards):
    """{model}'s weights record, data/weights/{model}.json, written by fetch_model_weights on the login node. An
    input of the model's GPU jobs, so a job never starts on an offline node before its weights are in the cache."""
    return f"data/weights/{wildcards.model}.json"


# ============================================================================ logits (owner: logits stage)


from snakemake.logging import logger

from clip_robustness.logits.workflow import LogitsPlan

# Registry rows, decoded-cache geometries and cache_logits inputs of the study's models, cached per process.
# The fast path (config inference.decoded_cache, docs/performance.md): each dataset is decoded once per
# preprocessing geometry into data/decoded/{dataset}/{preprocessing}.npy, shared by every model with that
# geometry; each model's geometry key comes from its library adapter without building it.
# Decode geometries come from the spec table beside the model registry (config/decode_specs.json): deriving them
# imports torch, timm and open_clip, ~3 s of every start (clip_robustness.logits.specs).
from clip_robustness.logits.specs import SPEC_TABLE_NAME, read_spec_table

LOGITS_PLAN = LogitsPlan(
    MODEL_REGISTRY,
    MODELS,
    decoded_cache=config["inference"]["decoded_cache"],
    spec_table=read_spec_table(Path(config["model_registry"]).with_name(SPEC_TABLE_NAME)),
    warn=logger.warning,
)


def get_spec_table_path():
    """The decode-spec table beside the model registry (shipped in a shared cache with the registry)."""
    return str(Path(config["model_registry"]).with_name(SPEC_TABLE_NAME))


def get_model_row(wildcards):
    """The model-registry row of {model}: a dict of the registry columns (model_id, library, ...)."""
    return LOGITS_PLAN.row(wildcards.model)


def get_model_weights(wildcards):
    """{model}'s local weights file when the registry names one (so Snakemake reruns on a new file), else []. A named
    file that is missing is left out, so the DAG still builds: that model's fetch job fails naming it while, with
    --keep-going, every other model goes on; without it the run stops before any job (see targets)."""
    return LOGITS_PLAN.weights_input(wildcards.model)


def decoded_output(path):
    """A decoded array is temporary (deleted once its last consumer in this run is done) unless inference.keep_decoded.
    It is an update() file: a group's decode job keeps the arrays that are still current (same manifest, geometry and
    decoders: clip_robustness.logits.decoded.decoded_is_current) and decodes only the others."""
    return update(path if config["inference"]["keep_decoded"] else temp(path))


def get_decode_params(wildcards):
    """decode_images: the library and transform recipe of {preprocessing} (from the study's first model with it)."""
    return LOGITS_PLAN.decode_params(wildcards.preprocessing)


# How the logits stage is cut (clip_robustness.logits.cutting): per model, one job over the core datasets and one per
# ImageNet-C group (inference.imagenet_c_jobs: a severity's corruptions, or a corruption's severities); decoding per
# preprocessing geometry in the same groups.
from clip_robustness.logits.cutting import LogitsGroups

LOGITS_GROUPS = LogitsGroups.from_study(
    STUDY.dataset_ids,
    config["datasets"].get("imagenet_c"),
    cut=config["inference"].get("imagenet_c_jobs", "per_severity"),
)
CORE_DATASETS = list(LOGITS_GROUPS.core)
DECODED_ROOT = "data/decoded"


def group_datasets(wildcards):
    """The dataset ids of a group job: ImageNet-C group {imagenet_c_group}'s conditions, or the core datasets."""
    if "imagenet_c_group" in wildcards.keys():
        return LOGITS_GROUPS.imagenet_c_ids(wildcards.imagenet_c_group)
    return CORE_DATASETS


def get_group_manifests(wildcards):
    """The manifests of a group job's datasets, in group order."""
    return [f"data/manifests/{dataset}.parquet" for dataset in group_datasets(wildcards)]


def get_cache_group_input(wildcards):
    """Inputs of a cache_logits group job: each dataset's manifest (and decoded array with its sidecar on the fast
    path), as lists in group order, the model's head and local weights, and its weights record (rule
    fetch_model_weights)."""
    inputs = LOGITS_PLAN.cache_group_inputs(wildcards.model, group_datasets(wildcards))
    inputs["weights_record"] = get_model_weights_record(wildcards)
    return inputs


def get_cache_group_params(wildcards):
    """The dataset ids of a cache_logits group job, in the order of its outputs."""
    return group_datasets(wildcards)


def get_decoded_root(wildcards, output):
    """The folder of every decoded array (data/decoded), where the disk-budget ledger lives: from the job's output
    data/decoded/{dataset}/{preprocessing}.npy."""
    return str(Path(output.npy[0]).parent.parent)


def decoded_group_output(datasets, suffix):
    """The decoded arrays (or sidecars) of a decode group job, temp() unless inference.keep_decoded."""
    return decoded_output(expand(f"{DECODED_ROOT}/{{dataset}}/{{{{preprocessing}}}}.{suffix}", dataset=datasets))


def imagenet_c_outputs(template):
    """Outputs of an ImageNet-C group job: `template` with {condition} (other wildcards in double braces) for each
    condition of group {imagenet_c_group}: imagenet_c_{corruption}_{imagenet_c_group} for every corruption
    (per_severity), or imagenet_c_{imagenet_c_group}_{severity} for every severity (per_corruption)."""
    return expand(template, condition=LOGITS_GROUPS.condition_patterns("imagenet_c_group"))


def get_manifest_subset(wildcards):
    """build_manifest: the ImageNet-C subset of {dataset} (config datasets.imagenet_c.images_per_condition), or None."""
    from clip_robustness.datasets.subset import imagenet_c_subset_param

    ids = LOGITS_GROUPS.all_imagenet_c_ids()
    return imagenet_c_subset_param(wildcards.dataset, ids, config["datasets"].get("imagenet_c"))


def get_loader_workers(wildcards, threads):
    """DataLoader worker processes for cache_logits: the job's threads but one (which drives the model)."""
    return max(threads - 1, 0)


def get_decode_workers(wildcards, threads):
    """Decoding processes for decode_images: one per thread (the main process only writes the array)."""
    return max(threads, 1)


# ============================================================================ currency before planning
# Each intermediate file is judged by the content identity it records, not by an exact timestamp
# (clip_robustness.workflow.currency): a moved study (tar, cp -r) or a fresh clone given a cache replans nothing that
# is current, and a changed source (a dataset's folder or archive, the prompt set, a model's weights) is always seen,
# whatever .snakemake/ holds.

SCRIPTS = Path(workflow.basedir) / "workflow" / "scripts"


def rule_script(name):
    """The script file of the rule called `name` (Snakemake reruns a job whose script is newer than its outputs)."""
    return str(SCRIPTS / f"{name}.py")


def check_currency():
    """Before planning: drop what no longer matches the configuration (manifests of a changed source, stale decoded
    arrays, heads of another prompt set, stale logits), then bring every file checked current forward of its inputs
    and its rule's script, so Snakemake's timestamp comparison agrees with the content check."""
    from clip_robustness.logits.cache import weights_identity
    from clip_robustness.logits.check import manifest_metadata_of
    from clip_robustness.workflow import currency

    forward = currency.bring_forward
    downloads = config["downloads"]
    markers = get_all_extraction_markers()
    datasets_workflow.bring_archives_forward(markers, rule_script("download_archive"))
    drop_outdated_extractions()  # hashes an archive whose mtime alone changed, once
    for marker in markers:
        archive = datasets_workflow.archive_path(Path(marker).name.removesuffix(".complete"))
        forward([marker], [archive], rule_script("extract_archive"))
    for message in datasets_workflow.drop_changed_manifests(
        DATASET_REGISTRY, DATASETS, downloads, lambda dataset: get_manifest_subset(SimpleNamespace(dataset=dataset))
    ):
        logger.warning(message)
    for dataset in DATASETS:
        inputs = datasets_workflow.manifest_inputs(DATASET_REGISTRY, dataset, downloads)
        manifest = datasets_workflow.manifest_path(dataset)
        markers_of = [m for paths in inputs.values() for m in paths]
        skipped = manifest.replace(".parquet", ".skipped.csv")
        forward([manifest, skipped], markers_of, rule_script("build_manifest"))
    hashes = {}
    for dataset in DATASETS:
        metadata = manifest_metadata_of(datasets_workflow.manifest_path(dataset))
        hashes[dataset] = None if metadata is None else metadata["manifest_hash"]
    keys = sorted({spec.key for spec in map(LOGITS_PLAN.decode_spec, MODELS) if spec is not None})
    arrays = [(d, key, f"{DECODED_ROOT}/{d}/{key}.npy") for key in keys for d in DATASETS]
    for message in currency.drop_stale_decoded(arrays, hashes):
        logger.warning(message)
    groups = LOGITS_GROUPS.groups()
    for key in keys:
        for group, datasets in groups.items():
            name = "core" if datasets == CORE_DATASETS else f"imagenet_c_{group}"
            outputs = [f"{DECODED_ROOT}/{d}/{key}.{suffix}" for d in datasets for suffix in ("npy", "json")]
            outputs.append(f"results/benchmarks/decode_images/{name}/{key}.tsv")
            manifests = [datasets_workflow.manifest_path(d) for d in datasets]
            forward(outputs, manifests, rule_script("decode_images"))
    heads = {m: f"results/heads/{m}.pt" for m in MODELS if "head" in LOGITS_PLAN.cache_group_inputs(m, [])}
    for message in currency.drop_stale_heads(heads, config["zero_shot"]["prompt_set"]):
        logger.warning(message)
    reject_stale_logits()
    for model in MODELS:
        record, weights = get_model_weights_record(SimpleNamespace(model=model)), LOGITS_PLAN.weights_input(model)
        if not currency.weights_record_is_current(record, weights):
            continue  # Snakemake fetches the weights again, and rebuilds what depends on them
        forward([record], weights, rule_script("fetch_model_weights"))
        # Past the weights only files computed with these weights: logits record their sha256 (a head is trusted when
        # its model's logits are: they were computed with it).
        outputs_of = {
            group: [f"results/logits/{model}/{d}.parquet" for d in datasets] for group, datasets in groups.items()
        }
        logits = [path for outputs in outputs_of.values() for path in outputs]
        older = currency.older_than(logits, [record, *weights])
        same_weights = currency.computed_with(older, weights_identity(model))
        weights_inputs = [record, *weights] if same_weights else []
        if model in heads:
            head_outputs = [heads[model], f"results/benchmarks/build_zero_shot_head/{model}.tsv"]
            forward(head_outputs, weights_inputs, rule_script("build_zero_shot_head"))
        for group, outputs in outputs_of.items():
            inputs = LOGITS_PLAN.cache_group_inputs(model, groups[group])
            sources = [*inputs.get("manifests", []), *inputs.get("decoded", []), *inputs.get("decoded_metadata", [])]
            sources += [inputs["head"]] if "head" in inputs else []
            name = "core" if groups[group] == CORE_DATASETS else f"imagenet_c_{group}"
            benchmark = f"results/benchmarks/cache_logits/{model}/{name}.tsv"
            forward([*outputs, benchmark], [*sources, *weights_inputs], rule_script("cache_logits"))


if RUN_LOCK is not None:  # this process holds the run lock: no other run can be writing these files
    check_currency()


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

from clip_robustness.figures import (  # cheap: the plotting libraries load in the jobs
    CATEGORY_FINDINGS,
    CATEGORY_TABLES,
    FIGURE_NAMES,
    FIGURES,
    TABLE_FILES,
    figure_options,
)

# Figure rules read only these three files, so deleting figures reruns no cache or metric job.
METRICS_TABLE = "results/metrics/metrics.parquet"
OOD_CORRELATIONS = "results/metrics/ood_correlations.csv"


def get_figure_options(name):
    """Keyword options of figure `name`'s function for this study (clip_robustness.figures.figure_options)."""
    return figure_options(name, STUDY.in_distribution, STUDY.test_conditions, STUDY.ood_datasets)


def get_findings_roles():
    """Dataset ids by role, for the findings table: ID set, test conditions, OOD sets."""
    return {
        "in_distribution": STUDY.in_distribution,
        "test_conditions": list(STUDY.test_conditions),
        "ood": list(STUDY.ood_datasets),
    }


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


# ============================================================================ report cards (owner: figures stage)
from clip_robustness.models.registry import OWN_STUDY

# The own models of the study, and their cards (targets of `all` and `report_cards`): none without own models.
OWN_MODELS = [model for model in MODELS if MODEL_REGISTRY.study(model) == OWN_STUDY]
REPORT_CARDS = expand("results/report_cards/{model}.html", model=OWN_MODELS)


def get_own_model_registry(wildcards):
    """write_report_card: the model registry, once {model} is known to be a model of the user's own (registry study
    'own', added by make add-model); a card asked for another model stops with the reason."""
    study = MODEL_REGISTRY.study(wildcards.model)
    if study != OWN_STUDY:
        raise ValueError(
            f"results/report_cards/{wildcards.model}.html: report cards are made for models of your own (registry "
            f"study {OWN_STUDY!r}, added with `make add-model`); {wildcards.model!r} is of study {study!r}"
        )
    return config["model_registry"]
