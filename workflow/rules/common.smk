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


# ============================================================================ logits (owner: logits stage)


# ============================================================================ metrics (owner: metrics stage)


# ============================================================================ figures (owner: figures stage)


# ============================================================================ qc (owner: qc stage)
