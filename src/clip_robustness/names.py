"""The study's shared names, each defined once: model groups and the reference group, the ImageNet-C dataset ids,
the class count, and the path of every stage's output.

Plain values and string functions only (standard library, no I/O): every stage, the workflow's ``.smk`` files and
the scripts import them from here. A path template holds Snakemake wildcards (``{dataset}``, ``{model}``); the
function of the same name fills them in.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# --- model groups (registry column ``group``) -------------------------------------------------------------------

#: Zero-shot CLIP: the models whose adapter needs a text head.
ZERO_SHOT_GROUP = "clip_zeroshot"
#: CLIP fine-tuned on ImageNet (CLIP-FT).
FINE_TUNED_GROUP = "clip_ft"
#: Models trained on ImageNet-1k only.
STANDARD_GROUP = "standard"
MORE_DATA_GROUP = "more_data"
ADVERSARIAL_GROUP = "adversarial"
#: ``group`` (and ``training_source``) where the library does not state it (catalogue checkpoints).
UNKNOWN_GROUP = "unknown"
#: The paper's groups, in legend order.
PAPER_GROUPS: tuple[str, ...] = (ZERO_SHOT_GROUP, FINE_TUNED_GROUP, STANDARD_GROUP, MORE_DATA_GROUP, ADVERSARIAL_GROUP)
#: Every value the registry's ``group`` column may take.
GROUPS: tuple[str, ...] = (*PAPER_GROUPS, UNKNOWN_GROUP)
#: The CLIP groups: their models carry their (pre)training source's marker.
CLIP_GROUPS: tuple[str, ...] = (ZERO_SHOT_GROUP, FINE_TUNED_GROUP)
#: The default reference group: its models' trend line defines effective robustness (config
#: ``findings.groups.reference``; the JSON schema states the same default).
REFERENCE_GROUP = STANDARD_GROUP

# --- classes ----------------------------------------------------------------------------------------------------

#: Every model's logits cover the ImageNet-1k classes.
NUM_CLASSES = 1000

# --- dataset ids ------------------------------------------------------------------------------------------------

#: Dataset id of one ImageNet-C condition (one corruption at one severity).
IMAGENET_C_ID = "imagenet_c_{corruption}_{severity}"
#: The ids :data:`IMAGENET_C_ID` writes, as a pattern (named groups ``corruption``, ``severity``).
IMAGENET_C_PATTERN = re.compile(r"^imagenet_c_(?P<corruption>.+)_(?P<severity>[1-5])$")
#: Dataset name of the one ImageNet-C test condition in the metrics table: the mean over every corruption and
#: severity of the study (the per-(corruption, severity) rows are kept).
IMAGENET_C_DATASET = "imagenet_c"
#: Name of a figure condition: the mean over every ImageNet-C corruption at one severity.
IMAGENET_C_SEVERITY = "imagenet_c_severity_{severity}"
#: The names :data:`IMAGENET_C_SEVERITY` writes, as a pattern (group 1: the severity).
IMAGENET_C_SEVERITY_PATTERN = re.compile(r"imagenet_c_severity_([1-5])")
#: Suffix of the in-distribution test half's dataset name (see :func:`id_test_dataset`).
ID_TEST_SUFFIX = "_id_test"


def imagenet_c_id(corruption: str, severity: int | str) -> str:
    """Dataset id of ImageNet-C ``corruption`` at ``severity``, e.g. ``imagenet_c_fog_3``."""
    return IMAGENET_C_ID.format(corruption=corruption, severity=severity)


def imagenet_c_dataset_ids(corruptions: Sequence[str], severities: Sequence[int]) -> list[str]:
    """Dataset ids of ImageNet-C conditions, corruption-major (:func:`imagenet_c_id`)."""
    return [imagenet_c_id(corruption, severity) for corruption in corruptions for severity in severities]


def imagenet_c_severity(severity: int | str) -> str:
    """Name of the figure condition averaging every ImageNet-C corruption at ``severity``."""
    return IMAGENET_C_SEVERITY.format(severity=severity)


def id_test_dataset(in_distribution: str) -> str:
    """Dataset name of the in-distribution test half's rows (calibration metrics), e.g. ``imagenet_val_id_test``."""
    return f"{in_distribution}{ID_TEST_SUFFIX}"


# --- stage outputs (paths relative to the working directory) ----------------------------------------------------

ARCHIVES_DIR = "data/archives"
EXTRACTED_DIR = "data/extracted"
MANIFESTS_DIR = "data/manifests"
DECODED_DIR = "data/decoded"
WEIGHTS_DIR = "data/weights"
HEADS_DIR = "results/heads"
LOGITS_DIR = "results/logits"
FIGURES_DIR = "results/figures"
#: Image embeddings of zero-shot models, written by the logits job beside the logits (:data:`EMBEDDINGS`).
EMBEDDINGS_DIR = "results/embeddings"
#: The prompt-set ablation's outputs (heads per prompt set, per-model metric tables, the aggregate).
ABLATION_DIR = "results/ablation"

ARCHIVE = ARCHIVES_DIR + "/{archive}"
EXTRACTION_MARKER = EXTRACTED_DIR + "/{archive}.complete"
MANIFEST = MANIFESTS_DIR + "/{dataset}.parquet"
SKIPPED = MANIFESTS_DIR + "/{dataset}.skipped.csv"
DECODED = DECODED_DIR + "/{dataset}/{geometry}.npy"
DECODED_METADATA = DECODED_DIR + "/{dataset}/{geometry}.json"
WEIGHTS_RECORD = WEIGHTS_DIR + "/{model}.json"
HEAD = HEADS_DIR + "/{model}.pt"
LOGITS = LOGITS_DIR + "/{model}/{dataset}.parquet"
#: A zero-shot model's L2-normalised image embeddings on one dataset (float16), same rows as :data:`LOGITS`.
EMBEDDINGS = EMBEDDINGS_DIR + "/{model}/{dataset}.parquet"
#: A zero-shot model's text head for one prompt set of the ablation (built on CPU, text tower only).
ABLATION_HEAD = ABLATION_DIR + "/heads/{model}/{prompt_set}.npz"
#: One zero-shot model's tidy metric rows for one ablation prompt set (logits derived from the embeddings).
ABLATION_MODEL_METRICS = ABLATION_DIR + "/metrics/{model}/{prompt_set}.parquet"
#: Every ablation model's metric rows, each prompt set, with the rows only the whole study gives (column prompt_set).
ABLATION_METRICS = ABLATION_DIR + "/prompt_set_metrics.parquet"
FIGURE = FIGURES_DIR + "/{name}.{ext}"
#: How the findings' verdicts behave on simulated studies (``make findings-check`` writes it; the findings rule shows
#: it beside the findings table). Relative to the checkout, like every path here, so a moved study replans nothing.
FINDINGS_VALIDATION = "docs/findings-validation.csv"


def archive_path(archive: str) -> str:
    """``data/archives/{archive}``."""
    return ARCHIVE.format(archive=archive)


def extraction_marker(archive: str) -> str:
    """``data/extracted/{archive}.complete``: written last by a complete extraction."""
    return EXTRACTION_MARKER.format(archive=archive)


def manifest_path(dataset: str) -> str:
    """``data/manifests/{dataset}.parquet``."""
    return MANIFEST.format(dataset=dataset)


def skipped_path(dataset: str) -> str:
    """``data/manifests/{dataset}.skipped.csv``: the images a manifest build skipped, when the config allows it."""
    return SKIPPED.format(dataset=dataset)


def decoded_path(dataset: str, geometry: str) -> str:
    """``data/decoded/{dataset}/{geometry}.npy``: one dataset decoded at one preprocessing geometry."""
    return DECODED.format(dataset=dataset, geometry=geometry)


def decoded_metadata_path(dataset: str, geometry: str) -> str:
    """``data/decoded/{dataset}/{geometry}.json``: what :func:`decoded_path`'s array holds."""
    return DECODED_METADATA.format(dataset=dataset, geometry=geometry)


def weights_record_path(model_id: str) -> str:
    """``data/weights/{model}.json``: the files behind a model's weights."""
    return WEIGHTS_RECORD.format(model=model_id)


def head_path(model_id: str) -> str:
    """``results/heads/{model}.pt``: a zero-shot model's text head."""
    return HEAD.format(model=model_id)


def cache_path(model_id: str, dataset: str) -> str:
    """``results/logits/{model}/{dataset}.parquet``: the cache file of ``model_id`` on ``dataset``."""
    return LOGITS.format(model=model_id, dataset=dataset)


def embeddings_path(model_id: str, dataset: str) -> str:
    """``results/embeddings/{model}/{dataset}.parquet``: the image embeddings of zero-shot ``model_id`` on ``dataset``."""
    return EMBEDDINGS.format(model=model_id, dataset=dataset)


def ablation_head_path(model_id: str, prompt_set: str) -> str:
    """``results/ablation/heads/{model}/{prompt_set}.npz``: ``model_id``'s text head for ablation ``prompt_set``."""
    return ABLATION_HEAD.format(model=model_id, prompt_set=prompt_set)


def ablation_model_metrics_path(model_id: str, prompt_set: str) -> str:
    """``results/ablation/metrics/{model}/{prompt_set}.parquet``: ``model_id``'s metric rows for ``prompt_set``."""
    return ABLATION_MODEL_METRICS.format(model=model_id, prompt_set=prompt_set)


def figure_path(name: str, ext: str = "png") -> str:
    """``results/figures/{name}.{ext}``."""
    return FIGURE.format(name=name, ext=ext)
