"""Simulated studies whose truth is known, to validate the findings' verdicts (false-supported rate, power).

Nothing here is evidence about CLIP: the numbers are drawn from a seeded generative model with an effect of a
chosen size planted for each claim (or its null). It only tells how the verdict procedure of
:mod:`clip_robustness.metrics.findings` behaves at the registry's group sizes, sources, routes and clusters.

The generative model (one draw per study, all vectorised):

- every model belongs to a cluster of near-duplicate checkpoints (:func:`~clip_robustness.metrics.resampling.cluster_ids`);
  each cluster draws one shared deviation per quantity and each model adds its own, so checkpoints of one cluster
  are correlated, as real near-duplicates are;
- ImageNet accuracy by group (zero-shot CLIP spans small to large training sets, so a wide, lower range);
- ImageNet-X factor accuracies on a logit-linear line of the overall annotated accuracy, shifted for the planted
  effects of claims 1 (zero-shot CLIP up on all factors but pose, down on pose), 2 (by training source) and 9 (by
  fine-tuning route);
- AUROC / FPR@95 per OOD set (MSP for every model, MCM for zero-shot CLIP only, as in the pipeline), with the
  within-source correlation of claim 3, the source offsets of claim 4a and the route offsets of claim 4b;
- ECE / NLL on the ID test half and per shift, before and after temperature scaling, with the share of claim 5, the
  post-TS trend gap and spread of claim 6, the change under shift of claim 7 and the source and size effects of 8;
- shape bias on the cue-conflict stimuli, zero-shot CLIP shifted by the effect of claim 10.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from clip_robustness.metrics.correlation import source_family
from clip_robustness.metrics.findings import DEFAULT_GROUPS, FindingsSettings
from clip_robustness.metrics.imagenet_x import IMAGENET_X_FACTORS, _logit, _sigmoid
from clip_robustness.metrics.resampling import cluster_ids
from clip_robustness.metrics.tidy import IMAGENET_X_DATASET
from clip_robustness.models.registry import paper_rows
from clip_robustness.names import (
    FINE_TUNED_GROUP,
    IMAGENET_C_DATASET,
    MORE_DATA_GROUP,
    STANDARD_GROUP,
    ZERO_SHOT_GROUP,
    id_test_dataset,
)

#: Dataset ids of a simulated study (the study's roles, small enough to be fast).
IN_DISTRIBUTION = "imagenet_val"
TEST_CONDITIONS: tuple[str, ...] = ("imagenet_r", "imagenet_sketch", IMAGENET_C_DATASET)
OOD_SETS: tuple[str, ...] = ("inaturalist", "textures")
CUE_CONFLICT: tuple[str, ...] = ("cue_conflict",)

#: Effect parameters, one per claim (units in :data:`EFFECT_UNITS`). Null: the claim is false (at its boundary
#: where the claim has a non-zero threshold: r = 0.7, share = 0.25, gap = 0.5 ECE points, SD ratio = 1).
NULL_EFFECTS: dict[str, float] = {
    "1": 0.0,
    "2": 0.0,
    "3": 0.7,
    "4a": 0.0,
    "4b": 0.0,
    "5": 0.25,
    "6a": 0.5,
    "6b": 1.0,
    "7": 0.0,
    "8a": 0.0,
    "8b": 0.0,
    "9": 0.0,
    "10": 0.0,
}
#: A realistic effect per claim: the size we expect in a real study, stated before simulating (docs/findings-validation.md).
REALISTIC_EFFECTS: dict[str, float] = {
    "1": 0.15,
    "2": 0.15,
    "3": 0.9,
    "4a": 0.02,
    "4b": 0.015,
    "5": 0.5,
    "6a": 1.5,
    "6b": 0.6,
    "7": 1.5,
    "8a": 1.5,
    "8b": 1.0,
    "9": 0.1,
    "10": 0.1,
}
#: A clearly planted effect per claim (the tests): well above the realistic one.
CLEAR_EFFECTS: dict[str, float] = {
    "1": 0.5,
    "2": 0.5,
    "3": 0.97,
    "4a": 0.06,
    "4b": 0.05,
    "5": 0.6,
    "6a": 3.0,
    "6b": 0.4,
    "7": 4.0,
    "8a": 4.0,
    "8b": 3.0,
    "9": 0.4,
    "10": 0.3,
}
EFFECT_UNITS: dict[str, str] = {
    "1": "logit shift of zero-shot CLIP's factor accuracies (pose: the same shift down)",
    "2": "logit shift per SD of the source pattern (zero-shot CLIP, all factors)",
    "3": "within-source correlation of accuracy and AUROC",
    "4a": "AUROC shift per SD of the source pattern (zero-shot CLIP)",
    "4b": "AUROC difference between the two fine-tuning routes (CLIP-FT)",
    "5": "population share of other classifiers with ECE below the median zero-shot CLIP's",
    "6a": "gap between the post-TS ECE lines (ECE points)",
    "6b": "SD of zero-shot CLIP around its post-TS line / SD of the others",
    "7": "ECE points removed by ID temperature scaling under shift (zero-shot CLIP)",
    "8a": "ECE points per SD of the source pattern (zero-shot CLIP)",
    "8b": "ECE points per SD of log10 training-set size (zero-shot CLIP)",
    "9": "logit difference between the two fine-tuning routes' factor accuracies (CLIP-FT)",
    "10": "shape-bias difference, zero-shot CLIP minus the other classifiers (fraction)",
}
#: Rows of the findings table that each planted effect makes true (the primary row first).
CLAIM_ROWS: dict[str, tuple[str, ...]] = {
    "1": ("1a", "1b"),
    "2": ("2",),
    "3": ("3", "3-fpr95"),
    "4a": ("4a", "4a-fpr95"),
    "4b": ("4b", "4b-fpr95"),
    "5": ("5", "5-nll"),
    "6a": ("6a",),
    "6b": ("6b",),
    "7": ("7", "7-nll", *(f"7:{c}" for c in TEST_CONDITIONS)),
    "8a": ("8a",),
    "8b": ("8b",),
    "9": ("9",),
    "10": ("10",),
}
#: Noise of the generative model (SDs): a cluster-shared part and a per-model part of each quantity.
CLUSTER_SD, MODEL_SD = 0.7, 0.7
FACTOR_LOGIT_SD = 0.12
OOD_SD = 0.012
#: Slope of zero-shot CLIP's AUROC on ImageNet accuracy in the simulation.
OOD_SLOPE = 0.3
ECE_SD = 1.5
ECE_BASE = 8.0
ECE_TS_SD = 0.5
SHIFT_SD = 2.0
SHAPE_BIAS_BASE, SHAPE_BIAS_SD = 0.3, 0.08
#: Accuracy range of each group on ImageNet (uniform over clusters).
ACCURACY_RANGE: dict[str, tuple[float, float]] = {
    ZERO_SHOT_GROUP: (0.45, 0.82),
    FINE_TUNED_GROUP: (0.80, 0.88),
    STANDARD_GROUP: (0.62, 0.86),
    MORE_DATA_GROUP: (0.75, 0.89),
}


@dataclass(frozen=True)
class SimulatedStudy:
    """A simulated study: the tidy metrics table, the registry it belongs to and the findings settings to use."""

    metrics: pd.DataFrame
    registry: pd.DataFrame


def simulation_settings(
    bootstrap_samples: int = 1000, permutations: int = 1000, seed: int = 0, min_models: int = 4, alpha: float = 0.05
) -> FindingsSettings:
    """Findings settings for a simulated study (its dataset ids, the config's default groups and thresholds)."""
    return FindingsSettings(
        IN_DISTRIBUTION,
        TEST_CONDITIONS,
        OOD_SETS,
        "paper",
        bootstrap_samples,
        seed,
        min_models,
        permutations=permutations,
        alpha=alpha,
        cue_conflict=CUE_CONFLICT,
    )


def effects_at(scale: float, claims: Sequence[str] | None = None) -> dict[str, float]:
    """Effects ``scale`` of the way from the null (0) to the realistic effect (1), for ``claims`` (others null)."""
    chosen = set(REALISTIC_EFFECTS if claims is None else claims)
    return {
        c: NULL_EFFECTS[c] + (scale * (REALISTIC_EFFECTS[c] - NULL_EFFECTS[c]) if c in chosen else 0.0)
        for c in NULL_EFFECTS
    }


def _pattern(labels: np.ndarray) -> np.ndarray:
    """A fixed pattern over the distinct labels, mean 0 and SD 1 (evenly spaced in label order)."""
    names = sorted(set(labels.tolist()))
    if len(names) < 2:
        return np.zeros(len(labels))
    values = np.linspace(-1.0, 1.0, len(names))
    values = (values - values.mean()) / values.std()
    return np.array([values[names.index(x)] for x in labels])


# Longer than 60 lines: the module doc's recipe written top to bottom, one block per planted effect, all drawing from
# one generator in a fixed order (reordering changes every seeded table).
def simulate_study(registry: pd.DataFrame, effects: Mapping[str, float], seed: int) -> SimulatedStudy:
    """One simulated metrics table for the paper's rows of ``registry`` with ``effects`` planted (see the module doc)."""
    rng = np.random.default_rng(seed)
    reg = paper_rows(registry).reset_index(drop=True)
    n = len(reg)
    e = {**NULL_EFFECTS, **dict(effects)}
    models = reg["model_id"].astype(str).to_numpy()
    group = reg["group"].astype(str).to_numpy()
    family = reg["training_source"].map(source_family).astype(str).to_numpy()
    route = reg["finetune_route"].fillna("none").astype(str).to_numpy()
    frame = pd.DataFrame(
        {
            "group": group,
            "training_source": reg["training_source"].astype(str),
            "finetune_route": route,
            "architecture": reg["architecture"].astype(str),
        }
    )
    cluster = cluster_ids(frame)
    n_clusters = cluster.max() + 1
    zs, ft = group == DEFAULT_GROUPS["zero_shot"], group == DEFAULT_GROUPS["fine_tuned"]

    def noise(sd: float = 1.0, size: int | None = None) -> np.ndarray:
        """Cluster-shared plus per-model standard-normal noise, scaled to SD ``sd``."""
        k = 1 if size is None else size
        shared = rng.standard_normal((k, n_clusters))[:, cluster]
        own = rng.standard_normal((k, n))
        out = sd * (CLUSTER_SD * shared + MODEL_SD * own) / np.hypot(CLUSTER_SD, MODEL_SD)
        return out[0] if size is None else out

    lo = np.array([ACCURACY_RANGE.get(g, (0.6, 0.85))[0] for g in group])
    hi = np.array([ACCURACY_RANGE.get(g, (0.6, 0.85))[1] for g in group])
    u = rng.uniform(size=n_clusters)[cluster] * 0.8 + rng.uniform(size=n) * 0.2
    acc = lo + (hi - lo) * u
    rows: list[tuple] = []

    def add(
        dataset: str,
        metric: str,
        values: np.ndarray,
        mask: np.ndarray | None = None,
        factor: str | None = None,
        score: str | None = None,
    ) -> None:
        keep = np.ones(n, dtype=bool) if mask is None else mask
        rows.extend((m, dataset, metric, float(v), factor, score) for m, v in zip(models[keep], values[keep]))

    add(IN_DISTRIBUTION, "top1", acc)
    id_test = id_test_dataset(IN_DISTRIBUTION)
    add(id_test, "top1", np.clip(acc + 0.002 * rng.standard_normal(n), 0.01, 0.99))

    # ImageNet-X: logit-linear factor accuracies, planted shifts for claims 1, 2 and 9
    acc_x = np.clip(acc + 0.01 * rng.standard_normal(n), 0.02, 0.98)
    add(IMAGENET_X_DATASET, "top1", acc_x)
    source_pattern = np.where(zs, _pattern_within(family, zs), 0.0)
    route_sign = np.where(ft, np.where(route == "in12k->in1k", 0.5, -0.5), 0.0)
    for i, factor in enumerate(IMAGENET_X_FACTORS):
        offset = -0.6 + 0.1 * i
        shift = (
            np.where(zs, -e["1"] if factor == "pose" else e["1"], 0.0) + e["2"] * source_pattern + e["9"] * route_sign
        )
        fa = _sigmoid(offset + 1.1 * _logit(acc_x) + shift + noise(FACTOR_LOGIT_SD))
        add(IMAGENET_X_DATASET, "factor_accuracy", fa, factor=factor)

    # OOD detection: one common line of AUROC on accuracy for zero-shot CLIP, with the noise around it set per
    # source so that the within-source correlation is ``rho`` (3); source offsets off the line (4a); route offsets (4b)
    rho = float(np.clip(e["3"], 0.05, 0.999))
    within_sd = _sd_within(acc, np.where(zs, family, group + "|" + family))
    for d, ood in enumerate(OOD_SETS):
        base = 0.72 + 0.25 * (acc - 0.7) + 0.01 * d
        # per-model noise: a cluster-shared part would shrink the noise among near-duplicates and raise r above rho
        clip_noise = OOD_SLOPE * within_sd * np.sqrt(1 - rho**2) / rho * rng.standard_normal(n)
        clip_part = np.where(zs, 0.8 + OOD_SLOPE * (acc - 0.65) + e["4a"] * source_pattern + clip_noise, 0.0)
        msp = np.clip(np.where(zs, clip_part - 0.03, base + e["4b"] * route_sign * 2 + noise(OOD_SD)), 0.01, 0.999)
        mcm = np.clip(clip_part, 0.01, 0.999)
        for score, auroc, mask in (("msp", msp, None), ("mcm", mcm, zs)):
            add(ood, "auroc", auroc, mask, score=score)
            add(ood, "fpr95", np.clip(1.6 * (1 - auroc) + 0.005 * rng.standard_normal(n), 0.0, 1.0), mask, score=score)

    # calibration on the ID test half: share of claim 5, post-TS trend of claim 6, source/size of claim 8
    q = float(np.clip(e["5"], 1e-3, 1 - 1e-3))
    log_size = np.log10(pd.to_numeric(reg["training_size"], errors="coerce").to_numpy(dtype=float))
    size_z = np.where(zs, _standardise(log_size, zs), 0.0)
    # the source pattern of claim 8a, made orthogonal to log size among zero-shot CLIP (a size effect is claim 8b's)
    size_norm = float(size_z[zs] @ size_z[zs])
    calib_pattern = (
        _standardise(source_pattern - size_z * float(source_pattern[zs] @ size_z[zs]) / size_norm, zs)
        if size_norm > 0
        else source_pattern
    )
    ece = (
        ECE_BASE
        + ECE_SD * noise()
        + np.where(zs, stats.norm.ppf(q) * ECE_SD + e["8a"] * calib_pattern + e["8b"] * size_z, 0.0)
    )
    ece = np.abs(ece)
    add(id_test, "ece", ece)
    add(id_test, "nll", 0.8 + 0.05 * ece + 0.02 * rng.standard_normal(n))
    spread = np.where(zs, e["6b"], 1.0)
    line = 1.2 + 3.0 * (acc - 0.75)
    ece_ts = line + np.where(zs, e["6a"], 0.0) + ECE_TS_SD * spread * noise()
    add(id_test, "ece_ts", ece_ts)
    add(id_test, "nll_ts", 0.75 + 0.05 * ece_ts + 0.02 * rng.standard_normal(n))

    # shifts: ECE / NLL before and after the ID temperature (claim 7: change of zero-shot CLIP's ECE)
    for j, condition in enumerate(TEST_CONDITIONS):
        before = 8.0 + j + 2.0 * noise()
        change = np.where(zs, -e["7"], 0.0) + SHIFT_SD * noise()
        add(condition, "top1", np.clip(acc - 0.2 - 0.05 * j + 0.01 * rng.standard_normal(n), 0.01, 0.99))
        add(condition, "ece", before)
        add(condition, "ece_ts", before + change)
        add(condition, "nll", 1.5 + 0.05 * before + 0.02 * rng.standard_normal(n))
        add(condition, "nll_ts", 1.5 + 0.05 * (before + change) + 0.02 * rng.standard_normal(n))

    # shape bias on the cue-conflict stimuli (claim 10: zero-shot CLIP's shift); drawn last, so the tables above are
    # the same as before claim 10 was added
    add(
        CUE_CONFLICT[0],
        "shape_bias",
        np.clip(SHAPE_BIAS_BASE + np.where(zs, e["10"], 0.0) + noise(SHAPE_BIAS_SD), 0.0, 1.0),
    )

    metrics = pd.DataFrame(rows, columns=["model", "dataset", "metric", "value", "factor", "score"])
    return SimulatedStudy(metrics=metrics, registry=reg)


def _standardise(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    v = values[mask & np.isfinite(values)]
    sd = v.std() if len(v) > 1 else 0.0
    return np.where(mask & np.isfinite(values), (values - (v.mean() if len(v) else 0.0)) / (sd if sd > 0 else 1.0), 0.0)


def _sd_within(values: np.ndarray, blocks: np.ndarray) -> np.ndarray:
    """Each row's block SD of ``values`` (a block of one row: the SD of all rows)."""
    out = np.full(len(values), float(np.std(values, ddof=1)))
    for b in pd.unique(blocks):
        mask = blocks == b
        if mask.sum() > 1:
            out[mask] = np.std(values[mask], ddof=1)
    return out


def _pattern_within(family: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """:func:`_pattern` of the source families of the ``mask`` rows (0 elsewhere)."""
    out = np.zeros(len(family))
    if mask.any():
        out[mask] = _pattern(family[mask])
    return out
