"""The study's shared names, each defined once: model groups and the reference group, the ImageNet-C dataset ids,
the class count, and the path of every stage's output.

Plain values and string functions only (standard library, no I/O): every stage, the workflow's ``.smk`` files and
the scripts import them from here. A path template holds Snakemake wildcards (``{dataset}``, ``{model}``); the
function of the same name fills them in.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Sequence
from pathlib import PurePath

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
#: Image embeddings of zero-shot models, written by the logits job beside the logits (:data:`EMBEDDINGS`).
EMBEDDINGS_DIR = "results/embeddings"
#: The prompt-set ablation's outputs (heads per prompt set, per-model metric tables, the aggregate).
ABLATION_DIR = "results/ablation"
METRICS_DIR = "results/metrics"
FIGURES_DIR = "results/figures"
TABLES_DIR = "results/tables"
QC_DIR = "results/qc"
REPORT_CARDS_DIR = "results/report_cards"
CHECKSUMS_DIR = "data/checksums"
#: Where the user puts the archives the pipeline never downloads (ImageNet val and its devkit).
USER_SUPPLIED_DIR = "data/user_supplied"
#: Every rule's log (``{rule}/{wildcards}.log``) and every benchmarked rule's timings (``{rule}/{wildcards}.tsv``),
#: by :func:`clip_robustness.workflow.joblog.log_path` and ``benchmark_path``.
LOGS_DIR = "results/logs"
BENCHMARKS_DIR = "results/benchmarks"

ARCHIVE = ARCHIVES_DIR + "/{archive}"
#: Where a download that failed its checksum is moved (kept for inspection, never used).
REJECTED_ARCHIVES_DIR = ARCHIVES_DIR + "/rejected"
#: The sha256 pinned at first download of an archive without a published one.
PINNED_CHECKSUMS = CHECKSUMS_DIR + "/pinned.tsv"
#: One record per verified archive (``{archive}.json``: sha256, size, modification time).
VERIFIED_DIR = CHECKSUMS_DIR + "/verified"
#: Suffix of an extraction marker (:data:`EXTRACTION_MARKER`).
MARKER_SUFFIX = ".complete"
EXTRACTION_MARKER = EXTRACTED_DIR + "/{archive}" + MARKER_SUFFIX
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
MODEL_METRICS = METRICS_DIR + "/models/{model}.parquet"
#: The tidy metrics table of the study over models (rule aggregate_metrics), which every figure, table and finding
#: reads; its CSV copy, the settings it was computed with, the OOD correlations.
METRICS_TABLE = METRICS_DIR + "/metrics.parquet"
METRICS_CSV = METRICS_DIR + "/metrics.csv"
METRICS_SETTINGS = METRICS_DIR + "/settings.json"
OOD_CORRELATIONS = METRICS_DIR + "/ood_correlations.csv"
TABLE = TABLES_DIR + "/{file}"
QC_TABLE = QC_DIR + "/published_accuracy.csv"
REPORT_CARD = REPORT_CARDS_DIR + "/{model}.html"
#: How the findings' verdicts behave on simulated studies (``make findings-check`` writes it; the findings rule shows
#: it beside the findings table). Relative to the checkout, like every path here, so a moved study replans nothing.
FINDINGS_VALIDATION = "docs/findings-validation.csv"


def _path_function(template: str, doc: str) -> Callable[..., str]:
    """The function filling ``template``'s wildcards, in their order in the template, positionally or by name."""
    fields = tuple(field for _, field, _, _ in string.Formatter().parse(template) if field)

    def path(*values: str | int, **named: str | int) -> str:
        if len(values) > len(fields):
            raise TypeError(f"{template} takes {len(fields)} wildcard(s) {fields}, not {len(values)}")
        return template.format(**dict(zip(fields, values)), **named)

    path.__doc__ = f"``{template}``{doc}"
    return path


archive_path = _path_function(ARCHIVE, ".")
extraction_marker = _path_function(EXTRACTION_MARKER, ": written last by a complete extraction.")
manifest_path = _path_function(MANIFEST, ".")
skipped_path = _path_function(SKIPPED, ": the images a manifest build skipped, when the config allows it.")
decoded_path = _path_function(DECODED, ": one dataset decoded at one preprocessing geometry.")
decoded_metadata_path = _path_function(DECODED_METADATA, ": what :func:`decoded_path`'s array holds.")
weights_record_path = _path_function(WEIGHTS_RECORD, ": the files behind a model's weights (``fetch_model_weights``).")
head_path = _path_function(HEAD, ": a zero-shot model's text head.")
cache_path = _path_function(LOGITS, ": the logits cache file of a model (first) on a dataset.")
_figure_path = _path_function(FIGURE, ".")
model_metrics_path = _path_function(MODEL_METRICS, ": one model's tidy metrics rows.")
table_path = _path_function(TABLE, ": one table of the study (``file`` with its extension).")
report_card_path = _path_function(REPORT_CARD, ": the report card of a model of one's own.")
embeddings_path = _path_function(EMBEDDINGS, ": the image embeddings of a zero-shot model (first) on a dataset.")
ablation_head_path = _path_function(ABLATION_HEAD, ": a zero-shot model's text head for one ablation prompt set.")
ablation_model_metrics_path = _path_function(
    ABLATION_MODEL_METRICS, ": a zero-shot model's metric rows for one ablation prompt set."
)


def marker_archive(marker: str | PurePath) -> str:
    """The archive whose extraction :func:`extraction_marker` ``marker`` marks (the inverse of that function)."""
    return PurePath(marker).name.removesuffix(MARKER_SUFFIX)


def figure_path(name: str, ext: str = "png") -> str:
    """``results/figures/{name}.{ext}``."""
    return _figure_path(name, ext)
