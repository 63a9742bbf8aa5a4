"""The prompt-set ablation (docs/methods.md, "Embeddings cache and prompt-set ablation"): every metric of a zero-shot
model recomputed for each prompt set from its cached image embeddings, on CPU, and how much the prompt set moves each
property.

- :func:`prompt_set_model_metrics`: one model, one prompt set: logits ``logit_scale * e @ W_set`` of the cached
  embeddings ``e`` (:func:`clip_robustness.logits.embeddings.logits_from_embeddings`), scored by the per-model metric
  functions (:func:`clip_robustness.metrics.model_rows.model_metrics_table`: no metric is computed here).
- :func:`prompt_set_table`: the rows only the whole study gives (effective robustness against the reference group's
  fit, the ImageNet-C condition), per prompt set, by the aggregate's own function, with column ``prompt_set``.
- :func:`prompt_set_properties`: the figure's and findings' properties per (model, prompt set).
- :func:`prompt_set_range` and :func:`prompt_set_findings`: the statistic (max - min over prompt sets of the
  group-mean property), its cluster-bootstrap interval and its within-model permutation p-value, through the findings
  table's own :func:`~clip_robustness.metrics.findings.evaluate`.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from clip_robustness.metrics.model_rows import DatasetLogits
from clip_robustness.metrics.tidy import IMAGENET_X_DATASET, MetricsInputError, tidy_frame
from clip_robustness.names import IMAGENET_C_DATASET, IMAGENET_C_PATTERN, REFERENCE_GROUP, figure_path, id_test_dataset

if TYPE_CHECKING:
    from clip_robustness.metrics.findings import Design

log = logging.getLogger(__name__)

#: Column of the ablation's tidy table naming the prompt set.
PROMPT_SET_COLUMN = "prompt_set"
#: Properties of the figure and the findings rows, in order: ID top-1, mean top-1 over the shifts, mean effective
#: robustness over the ImageNet-X factors, ECE on the ID test half, mean AUROC over the OOD sets (MCM score).
PROPERTIES: tuple[str, ...] = ("id_accuracy", "shift_accuracy", "effective_robustness", "ece", "ood_auroc")
#: The OOD score of the ``ood_auroc`` property (zero-shot CLIP's MCM, as the paper scores zero-shot models).
ABLATION_OOD_SCORE = "mcm"
#: Most prompt sets the permutation null enumerates (``S!`` orderings per model).
MAX_PROMPT_SETS = 8


def derived_dataset_logits(
    dataset: str,
    embeddings_path: str | os.PathLike,
    manifest_path: str | os.PathLike,
    weights: np.ndarray,
    logit_scale: float,
    expect: Mapping[str, Any] | None = None,
) -> DatasetLogits:
    """One dataset's logits under another text head, from the cached embeddings, joined to the manifest like a
    logits file (:func:`~clip_robustness.metrics.model_rows.load_dataset_logits`): label space, file names, OOD sets
    scored without one. ``expect``: metadata the embeddings file must have (``StaleCacheError`` otherwise)."""
    from clip_robustness.datasets.manifest import read_manifest
    from clip_robustness.logits.embeddings import logits_from_embeddings, read_embeddings

    manifest = read_manifest(manifest_path)
    cached = read_embeddings(
        embeddings_path,
        expect={**dict(expect or {}), "dataset": dataset, "manifest_hash": manifest.metadata.get("manifest_hash")},
    )
    index = cached.index.astype(np.int64)
    labels = cached.labels.astype(np.int64)
    n_manifest = len(manifest.table)
    if len(index) and (
        index.min() < 0
        or index.max() >= n_manifest
        or not np.array_equal(manifest.table["label"].to_numpy().astype(np.int64)[index], labels)
    ):
        raise MetricsInputError(
            f"{embeddings_path}: rows or labels disagree with manifest {manifest_path}; the cache "
            "is stale: delete it and rerun snakemake"
        )
    return DatasetLogits(
        dataset=dataset,
        logits=logits_from_embeddings(cached.embeddings, weights, logit_scale),
        labels=labels,
        label_space=None if np.all(labels < 0) else manifest.label_space,
        file_names=np.asarray(manifest.file_names, dtype=object)[index],
        logit_scale=float(logit_scale),
    )


def prompt_set_model_metrics(
    model: str,
    embeddings_paths: Mapping[str, str | os.PathLike],
    manifest_paths: Mapping[str, str | os.PathLike],
    roles: Mapping[str, Any],
    weights: np.ndarray,
    logit_scale: float,
    settings: Any,
    expect: Mapping[str, Any] | None = None,
    annotations: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Every metric of zero-shot ``model`` under head ``(weights, logit_scale)``, from its embeddings files (dataset
    id -> path), one dataset in memory at a time: :func:`~clip_robustness.metrics.model_rows.model_metrics_table`."""
    from clip_robustness.metrics.model_rows import model_metrics_table

    for dataset in (roles["in_distribution"], *roles["test_conditions"], *roles["ood"]):
        if dataset not in embeddings_paths or dataset not in manifest_paths:
            raise MetricsInputError(f"model {model!r}: no embeddings or manifest file given for dataset {dataset!r}")

    def load(dataset: str) -> DatasetLogits:
        return derived_dataset_logits(
            dataset, embeddings_paths[dataset], manifest_paths[dataset], weights, logit_scale, expect
        )

    return model_metrics_table(
        model,
        load(roles["in_distribution"]),
        (load(d) for d in roles["test_conditions"]),
        (load(d) for d in roles["ood"]),
        settings,
        zero_shot=True,
        annotations=annotations,
    )


def prompt_set_table(
    metrics: pd.DataFrame,
    tables: Mapping[str, Sequence[pd.DataFrame]],
    registry: pd.DataFrame,
    reference_group: str = REFERENCE_GROUP,
) -> pd.DataFrame:
    """The ablation's tidy table: per prompt set (``tables``: set -> the per-model tables of the ablation's models),
    the aggregate (:func:`~clip_robustness.metrics.aggregate.aggregate_metrics`) of those tables with the study's
    other models (their rows of ``metrics``, the study's aggregate table, so the reference fit is the study's), keeping
    the ablation's models' rows, with column :data:`PROMPT_SET_COLUMN`."""
    from clip_robustness.metrics.aggregate import aggregate_metrics

    frames = []
    derived = (metrics["metric"] == "effective_robustness") | (metrics["dataset"] == IMAGENET_C_DATASET)
    for prompt_set, model_tables in tables.items():
        ablated = sorted({str(m) for t in model_tables for m in t["model"].unique()})
        others = metrics[~derived & ~metrics["model"].astype(str).isin(ablated)]
        combined = aggregate_metrics([others, *model_tables], registry, reference_group)
        mine = combined[combined["model"].astype(str).isin(ablated)].copy()
        mine[PROMPT_SET_COLUMN] = prompt_set
        frames.append(mine)
    if not frames:
        return tidy_frame([]).assign(**{PROMPT_SET_COLUMN: pd.Series(dtype=object)})
    return pd.concat(frames, ignore_index=True)


def prompt_set_properties(
    table: pd.DataFrame, in_distribution: str, test_conditions: Sequence[str], ood_sets: Sequence[str]
) -> pd.DataFrame:
    """Columns ``model, prompt_set, property, value``: each property of :data:`PROPERTIES` a model has rows for.

    ``shift_accuracy`` averages top-1 over the test conditions (ImageNet-C as its one condition),
    ``effective_robustness`` over the ImageNet-X factors, ``ood_auroc`` the MCM AUROC over the OOD sets."""
    plain = table["factor"].isna() & table["score"].isna()
    shifts = list(dict.fromkeys(IMAGENET_C_DATASET if IMAGENET_C_PATTERN.match(d) else d for d in test_conditions))
    picks = {
        "id_accuracy": plain & (table["metric"] == "top1") & (table["dataset"] == in_distribution),
        "shift_accuracy": plain & (table["metric"] == "top1") & table["dataset"].isin(shifts),
        "effective_robustness": (table["metric"] == "effective_robustness") & (table["dataset"] == IMAGENET_X_DATASET),
        "ece": plain & (table["metric"] == "ece") & (table["dataset"] == id_test_dataset(in_distribution)),
        "ood_auroc": (table["metric"] == "auroc")
        & (table["score"] == ABLATION_OOD_SCORE)
        & table["dataset"].isin(list(ood_sets)),
    }
    frames = []
    for name in PROPERTIES:
        rows = table[picks[name]]
        if rows.empty:
            continue
        mean = rows.groupby(["model", PROMPT_SET_COLUMN], sort=False)["value"].mean().reset_index()
        frames.append(mean.assign(property=name))
    if not frames:
        return pd.DataFrame(columns=["model", PROMPT_SET_COLUMN, "property", "value"])
    return pd.concat(frames, ignore_index=True)[["model", PROMPT_SET_COLUMN, "property", "value"]]


# ---------------------------------------------------------------------------------------------- the statistic


def orderings(n_sets: int) -> np.ndarray:
    """Every ordering of ``n_sets`` prompt sets, ``(n_sets!, n_sets)``; row 0 is the identity."""
    if not 1 <= n_sets <= MAX_PROMPT_SETS:
        raise ValueError(f"the prompt-set ablation takes 1 to {MAX_PROMPT_SETS} prompt sets, got {n_sets}")
    return np.array(list(itertools.permutations(range(n_sets))), dtype=np.int64)


def prompt_set_range(values: np.ndarray):
    """The statistic of the findings rows for a ``(n_models, n_sets)`` matrix of one property: ``(weights (B, n),
    draws (B, n)) -> (B,)``, the max - min over prompt sets of the weighted mean over models, after reordering each
    model's prompt sets by ordering ``draws[b, i]`` of :func:`orderings` (0: as observed; a null draw shuffles each
    model's sets, which is exchangeable when the prompt set moves nothing)."""
    values = np.asarray(values, dtype=float)
    perms = orderings(values.shape[1])
    rows = np.arange(values.shape[0])[None, :, None]

    def statistic(weights: np.ndarray, draws: np.ndarray) -> np.ndarray:
        shuffled = values[rows, perms[np.asarray(draws, dtype=np.int64)]]  # (B, n, S)
        total = weights.sum(axis=1)
        means = np.einsum("bn,bns->bs", weights, shuffled) / np.where(total > 0, total, np.nan)[:, None]
        return means.max(axis=1) - means.min(axis=1)

    return statistic


def prompt_set_findings(
    properties: pd.DataFrame, registry: pd.DataFrame, settings: Any, figure: str = figure_path("prompt_sets")
) -> pd.DataFrame:
    """Findings rows (columns :data:`~clip_robustness.metrics.findings.FINDINGS_COLUMNS`), one per property: how much
    the prompt set moves the zero-shot group's mean property (:func:`prompt_set_range`), with the cluster-bootstrap
    interval over models, the within-model permutation p-value and the verdict of the findings table
    (:func:`~clip_robustness.metrics.findings.evaluate`: supported = the interval above 0 and p < alpha). Models
    lacking the property under some prompt set are left out (said in ``notes``); fewer than ``settings.min_models``:
    undetermined."""
    from clip_robustness.metrics.findings import FINDINGS_COLUMNS, Claim, evaluate
    from clip_robustness.models.registry import paper_rows

    paper = paper_rows(registry)
    meta = paper.set_index(paper["model_id"].astype(str))
    rows = []
    for k, name in enumerate(PROPERTIES):
        part = properties[properties["property"] == name]
        if part.empty:
            continue
        complete, sets, notes = _complete_models(part, meta)
        table = _models_table(meta.loc[complete.index.astype(str)], complete.index)
        n = len(table)
        design = _prompt_set_design(table, name, sets, notes, settings)
        claim = Claim(
            f"prompt-{name}",
            f"the prompt set moves zero-shot CLIP's {name.replace('_', ' ')}",
            f"max - min over prompt sets of the mean {name} over zero-shot models",
            figure,
            0.0,
            "above",
            (0.0, np.inf),
        )
        values = complete.to_numpy(dtype=float) if n else np.zeros((0, max(len(sets), 1)))
        statistic = prompt_set_range(values) if n else (lambda w, d: np.full(w.shape[0], np.nan))
        rows.append(evaluate(claim, design, statistic, settings, salt=900 + k))
    return pd.DataFrame(rows, columns=list(FINDINGS_COLUMNS))


def _complete_models(part: pd.DataFrame, meta: pd.DataFrame) -> tuple[pd.DataFrame, list[str], str]:
    """One property's paper models x prompt sets with a value under every set, the sets, and the notes on left-outs."""
    wide = part.pivot_table(index="model", columns=PROMPT_SET_COLUMN, values="value", aggfunc="first")
    sets = [str(s) for s in pd.unique(part[PROMPT_SET_COLUMN])]
    wide = wide.reindex(columns=sets)
    wide = wide[wide.index.isin(meta.index)]
    complete = wide.dropna()
    notes = f"prompt sets: {', '.join(sets)}"
    if len(complete) < len(wide):
        notes += f"; {len(wide) - len(complete)} model(s) lack it under some prompt set, left out"
    return complete, sets, notes


def _models_table(models: pd.DataFrame, index: pd.Index) -> pd.DataFrame:
    """The registry columns the resampling clusters on (group, source, fine-tuning route, architecture), on ``index``."""
    return pd.DataFrame(
        {
            "group": models["group"].astype(str).to_numpy(),
            "training_source": models["training_source"].astype(str).to_numpy(),
            "finetune_route": (
                models["finetune_route"]
                if "finetune_route" in models.columns
                else pd.Series("none", index=models.index)
            )
            .fillna("none")
            .astype(str)
            .to_numpy(),
            "architecture": models["architecture"].astype(str).to_numpy(),
        },
        index=index,
    )


def _prompt_set_design(table: pd.DataFrame, name: str, sets: Sequence[str], notes: str, settings: Any) -> Design:
    """The findings design of one property: cluster bootstrap over models, null = each model's prompt sets reordered."""
    from clip_robustness.metrics.findings import Design
    from clip_robustness.metrics.resampling import cluster_ids

    n = len(table)
    clusters = cluster_ids(table) if n else np.zeros(0, dtype=np.int64)
    n_orderings = len(orderings(len(sets))) if sets else 1
    too_few = ""
    if n < settings.min_models:
        too_few = f"fewer than {settings.min_models} models with {name} under every prompt set ({n})"
    elif len(sets) < 2:
        too_few = "fewer than 2 prompt sets"
    return Design(
        models=table,
        strata=np.zeros(n, dtype=object).astype(str),
        clusters=clusters,
        identity=np.zeros(n, dtype=np.int64),
        null=lambda samples, rng, n=n, m=n_orderings: rng.integers(0, m, size=(samples, n)),
        test="within-model prompt-set permutation",
        n_models=f"{n} models ({len(np.unique(clusters))} clusters)",
        too_few=too_few,
        notes=notes,
    )
