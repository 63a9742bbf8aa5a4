"""The paper's findings as checkable results: one row per claim, with an effect, its cluster-bootstrap interval, a
p-value and a verdict.

Computed only from the aggregate tidy metrics table and the model registry table (no GPU, no cache). Every
statistic, threshold and verdict rule is written down in ``docs/methods.md`` ("Findings statistics") and
``docs/assumptions.md`` (section 1); this module implements that text. Resampling is vectorised
(:mod:`clip_robustness.metrics.resampling`): every fit is re-estimated inside every resample.

- Interval: BCa interval of a cluster bootstrap (clusters of near-duplicate checkpoints, drawn with replacement
  within each group compared; acceleration from the delete-one-cluster jackknife), at level ``findings.confidence``.
- p-value: a permutation test over clusters (labels shuffled among clusters; sign flips for paired claims), or,
  for a claim whose null is not "no difference" (claim 5), the bootstrap test of its threshold.
- Verdict: ``supported`` when the whole interval lies on the claim's side of the threshold *and* p <
  ``findings.alpha``; ``not supported`` when the whole interval lies on the other side; ``undetermined``
  otherwise (too few models, a group that cannot be scored, an interval across the threshold, or p >= alpha);
  ``reason`` says which.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from clip_robustness.metrics.correlation import source_family
from clip_robustness.metrics.imagenet_x import IMAGENET_X_FACTORS, _logit, _sigmoid
from clip_robustness.metrics.resampling import (
    bca_interval,
    cluster_bootstrap_weights,
    cluster_ids,
    cluster_permutations,
    cluster_sign_flips,
    distinct_models,
    holm,
    jackknife_weights,
    nan_median_rows,
    omega_squared,
    weighted_line,
    weighted_mean,
    weighted_median,
    weighted_pearson,
    within_block_shuffles,
)
from clip_robustness.metrics.tidy import IMAGENET_X_DATASET
from clip_robustness.models.registry import paper_rows
from clip_robustness.names import (
    FINE_TUNED_GROUP,
    IMAGENET_C_DATASET,
    MORE_DATA_GROUP,
    REFERENCE_GROUP,
    STANDARD_GROUP,
    ZERO_SHOT_GROUP,
    figure_path,
    id_test_dataset,
    table_path,
)
from clip_robustness.workflow.study import fold_imagenet_c

log = logging.getLogger(__name__)

#: Columns of ``results/tables/findings.csv``, in order.
FINDINGS_COLUMNS: tuple[str, ...] = (
    "claim_id",
    "claim",
    "statistic",
    "value",
    "n_models",
    "ci_low",
    "ci_high",
    "threshold",
    "p_value",
    "test",
    "verdict",
    "reason",
    "notes",
    "figure",
)
SUPPORTED, NOT_SUPPORTED, UNDETERMINED = "supported", "not supported", "undetermined"
#: ``findings.ood_score`` value of the journal extension's protocol: MCM for zero-shot CLIP, MSP for every other model.
PAPER_OOD_SCORE = "paper"
#: Tests named in the ``test`` column.
PERMUTATION, SIGN_FLIP, BOOTSTRAP_TEST, WITHIN_SHUFFLE = (
    "cluster permutation",
    "cluster sign flip",
    "bootstrap test of the threshold",
    "within-source shuffle",
)
#: More than this share of resamples without a value: no interval.
MAX_UNDEFINED_SHARE = 0.1
#: Points of the grid on which claim 6 averages the gap between two lines over the overlapping accuracy range.
GAP_GRID_POINTS = 21

#: Defaults of the ``findings`` config keys (the JSON schema carries the same defaults; one place here for code).
DEFAULT_GROUPS: dict[str, Any] = {
    "zero_shot": ZERO_SHOT_GROUP,
    "fine_tuned": FINE_TUNED_GROUP,
    "others": [STANDARD_GROUP, MORE_DATA_GROUP],
    "reference": REFERENCE_GROUP,
}
DEFAULT_THRESHOLDS: dict[str, float] = {
    "majority_of_factors": 6,  # claim 1a: "6 of the 10 factors"
    "strong_correlation": 0.7,  # claim 3: "strongly correlated"
    "variance_explained": 0.01,  # claims 2, 4, 8a, 9: omega squared (Cohen's "small")
    "share_better_calibrated": 0.25,  # claim 5
    "trend_gap_ece": 0.5,  # claim 6a: mean |gap| between the two post-TS lines, ECE points
    "spread_ratio": 1.0,  # claim 6b: CLIP's residual SD / the others' residual SD
}


@dataclass(frozen=True)
class FindingsSettings:
    """What the findings need besides the tables (config ``findings`` and the study's dataset roles).

    ``in_distribution``: ImageNet val's dataset id. ``test_conditions``: dataset ids of the shifts (ImageNet-C ids
    fold into the one ``imagenet_c`` condition). ``ood_sets``: OOD dataset ids. ``ood_score``: ``paper`` (MCM for
    zero-shot CLIP, MSP for the rest) or one score for every model. ``groups``: registry groups by role;
    ``thresholds``: see :data:`DEFAULT_THRESHOLDS`; ``out_of_range``: ``keep`` or ``drop`` the models outside the
    reference models' accuracy range of the effective-robustness fit.
    """

    in_distribution: str
    test_conditions: tuple[str, ...]
    ood_sets: tuple[str, ...]
    ood_score: str
    bootstrap_samples: int
    seed: int
    min_models: int
    permutations: int = 1000
    alpha: float = 0.05
    confidence: float = 0.95
    groups: Mapping[str, Any] = field(default_factory=lambda: dict(DEFAULT_GROUPS))
    thresholds: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    out_of_range: str = "keep"
    #: Cue-conflict dataset ids (claim 10, shape bias); empty: no row.
    cue_conflict: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, config: Mapping[str, Any], roles: Mapping[str, Any]) -> "FindingsSettings":
        """From the validated config (``findings``) and the dataset roles of the study."""
        findings = config["findings"]
        return cls(
            in_distribution=str(roles["in_distribution"]),
            test_conditions=tuple(roles["test_conditions"]),
            ood_sets=tuple(roles["ood"]),
            ood_score=str(findings.get("ood_score", PAPER_OOD_SCORE)),
            bootstrap_samples=int(findings["bootstrap_samples"]),
            seed=int(findings["seed"]),
            min_models=int(findings["min_models"]),
            permutations=int(findings.get("permutations", 1000)),
            alpha=float(findings.get("alpha", 0.05)),
            confidence=float(findings.get("confidence", 0.95)),
            groups={**DEFAULT_GROUPS, **dict(findings.get("groups", {}))},
            thresholds={**DEFAULT_THRESHOLDS, **dict(findings.get("thresholds", {}))},
            out_of_range=str(findings.get("out_of_range", "keep")),
            cue_conflict=tuple(roles.get("cue_conflict", ())),
        )

    @property
    def zero_shot(self) -> str:
        return str(self.groups["zero_shot"])

    @property
    def fine_tuned(self) -> str:
        return str(self.groups["fine_tuned"])

    @property
    def others(self) -> tuple[str, ...]:
        return tuple(str(g) for g in self.groups["others"])

    @property
    def reference(self) -> str:
        return str(self.groups["reference"])


# ---------------------------------------------------------------------------------------------- verdicts


def verdict(
    ci_low: float, ci_high: float, threshold: float, side: str, p_value: float = 0.0, alpha: float = 1.0
) -> str:
    """The verdict of an interval against a threshold, and of a p-value against ``alpha``.

    ``side``: where the claim lies: ``"above"`` (values > threshold), ``"at_least"`` (>= threshold), ``"below"``
    (< threshold), ``"outside"`` (|value| > threshold, either sign). ``supported`` needs the whole interval on the
    claim's side and ``p_value < alpha``; ``not supported`` the whole interval on the other side. NaN: undetermined.
    """
    if not (np.isfinite(ci_low) and np.isfinite(ci_high)):
        return UNDETERMINED
    if side == "above":
        on, off = ci_low > threshold, ci_high <= threshold
    elif side == "at_least":
        on, off = ci_low >= threshold, ci_high < threshold
    elif side == "below":
        on, off = ci_high < threshold, ci_low >= threshold
    elif side == "outside":
        on, off = ci_low > threshold or ci_high < -threshold, -threshold <= ci_low and ci_high <= threshold
    else:
        raise ValueError(f"verdict: unknown side {side!r}")
    if on and np.isfinite(p_value) and p_value < alpha:
        return SUPPORTED
    return NOT_SUPPORTED if off else UNDETERMINED


# ---------------------------------------------------------------------------------------------- designs


#: A statistic over resamples: ``(weights (B, n), draw (B, n)) -> (B,)``; ``draw`` is the design's identity row
#: (point estimate, bootstrap) or a null draw (permuted labels, shuffled indices or signs).
Statistic = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class Design:
    """The models of one claim and how they are resampled.

    ``strata``: bootstrap strata (one per model); ``clusters``: cluster ids (nested in strata); ``identity``:
    the observed draw (labels, indices or signs); ``null``: ``(samples, rng) -> (samples, n)`` null draws, or
    None when the p-value is the bootstrap test of the threshold; ``test``: the test's name."""

    models: pd.DataFrame
    strata: np.ndarray
    clusters: np.ndarray
    identity: np.ndarray
    null: Callable[[int, np.random.Generator], np.ndarray] | None
    test: str
    n_models: str
    too_few: str = ""
    notes: str = ""


@dataclass(frozen=True)
class Claim:
    """One row of the findings table before evaluation."""

    claim_id: str
    claim: str
    statistic: str
    figure: str
    threshold: float
    side: str
    #: The statistic's range (a count of factors, a share): an interval is clipped to it.
    bounds: tuple[float, float] = (-np.inf, np.inf)


def _row(
    claim: Claim, value: float, design: Design | None, ci: tuple[float, float], p: float, verdict_: str, reason: str
) -> dict[str, Any]:
    return {
        "claim_id": claim.claim_id,
        "claim": claim.claim,
        "statistic": claim.statistic,
        "value": float(value),
        "n_models": design.n_models if design is not None else "",
        "ci_low": float(ci[0]),
        "ci_high": float(ci[1]),
        "threshold": float(claim.threshold),
        "p_value": float(p),
        "test": design.test if design is not None else "",
        "verdict": verdict_,
        "reason": reason,
        "notes": design.notes if design is not None else "",
        "figure": claim.figure,
    }


def _one_sided_p(null: np.ndarray, observed: float, side: str) -> float:
    null = null[np.isfinite(null)]
    if len(null) == 0 or not np.isfinite(observed):
        return float("nan")
    tol = 1e-12 * max(1.0, abs(observed))
    if side in ("above", "at_least"):
        hits = np.sum(null >= observed - tol)
    elif side == "below":
        hits = np.sum(null <= observed + tol)
    else:
        hits = np.sum(np.abs(null) >= abs(observed) - tol)
    return float((1 + hits) / (1 + len(null)))


def evaluate(
    claim: Claim,
    design: Design,
    statistic: Statistic,
    settings: FindingsSettings,
    salt: int = 0,
    components: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    need: int = 1,
) -> dict[str, Any]:
    """One row: the statistic on every model, its cluster-bootstrap interval, its p-value and the verdict.

    ``components``: for a count claim (1a), ``(weights, draws) -> (k, B)`` per-component differences, each tested
    one-sided (> 0) with the same null draws; the row's p-value is then the ``need``-th smallest Holm-adjusted
    p-value (p < alpha exactly when at least ``need`` components differ significantly)."""
    n = len(design.models)
    nan2 = (float("nan"), float("nan"))
    if n == 0:
        return _row(
            claim, float("nan"), design, nan2, float("nan"), UNDETERMINED, design.too_few or "no model has the values"
        )
    value = float(statistic(np.ones((1, n)), design.identity[None, :])[0])
    if design.too_few:
        return _row(claim, value, design, nan2, float("nan"), UNDETERMINED, design.too_few)
    if not np.isfinite(value):
        return _row(
            claim, value, design, nan2, float("nan"), UNDETERMINED, "the statistic cannot be computed from these models"
        )
    rng = np.random.default_rng([settings.seed, salt])
    weights = cluster_bootstrap_weights(design.strata, design.clusters, settings.bootstrap_samples, rng)
    boot = statistic(weights, np.broadcast_to(design.identity, weights.shape))
    finite = boot[np.isfinite(boot)]
    if len(finite) < (1.0 - MAX_UNDEFINED_SHARE) * len(boot):
        return _row(
            claim,
            value,
            design,
            nan2,
            float("nan"),
            UNDETERMINED,
            f"{len(boot) - len(finite)} of {len(boot)} bootstrap resamples give no value",
        )
    ci = _clipped_bca_interval(claim, design, statistic, value, boot, settings)
    p = _p_value(claim, design, statistic, value, finite, settings, rng, components, need)
    judged, reason = _judged(claim, ci, p, settings)
    return _row(claim, value, design, ci, p, judged, reason)


def _clipped_bca_interval(
    claim: Claim, design: Design, statistic: Statistic, value: float, boot: np.ndarray, settings: FindingsSettings
) -> tuple[float, float]:
    """The BCa interval from the bootstrap values and the cluster jackknife, clipped to the claim's bounds."""
    jackknife = jackknife_weights(design.clusters)
    low, high = bca_interval(
        value, boot, statistic(jackknife, np.broadcast_to(design.identity, jackknife.shape)), settings.confidence
    )
    return (float(np.clip(low, *claim.bounds)), float(np.clip(high, *claim.bounds)))


def _p_value(
    claim: Claim,
    design: Design,
    statistic: Statistic,
    value: float,
    finite: np.ndarray,
    settings: FindingsSettings,
    rng: np.random.Generator,
    components: Callable[[np.ndarray, np.ndarray], np.ndarray] | None,
    need: int,
) -> float:
    """The claim's p-value: Holm over components, the design's null draws, or the bootstrap test of the threshold."""
    n = len(design.models)
    if design.null is not None and components is not None:
        draws = design.null(settings.permutations, rng)
        observed = components(np.ones((1, n)), design.identity[None, :])[:, 0]
        null = components(np.ones(draws.shape), draws)
        adjusted = np.sort(holm([_one_sided_p(null[i], observed[i], "above") for i in range(len(observed))]))
        return float(adjusted[need - 1]) if 0 < need <= len(adjusted) else float("nan")
    if design.null is not None:
        draws = design.null(settings.permutations, rng)
        return _one_sided_p(statistic(np.ones(draws.shape), draws), value, claim.side)
    # the bootstrap test of the threshold: share of resamples on the other side
    return _one_sided_p(
        finite,
        claim.threshold,
        {"above": "below", "at_least": "below", "below": "above"}.get(claim.side, claim.side),
    )


def _judged(claim: Claim, ci: tuple[float, float], p: float, settings: FindingsSettings) -> tuple[str, str]:
    """The verdict of the interval and p-value, and the reason when it is undetermined."""
    judged = verdict(ci[0], ci[1], claim.threshold, claim.side, p, settings.alpha)
    reason = ""
    if judged == UNDETERMINED:
        on_side = verdict(ci[0], ci[1], claim.threshold, claim.side) == SUPPORTED
        reason = (
            f"p = {p:.3g} is not below alpha = {settings.alpha:g}"
            if on_side
            else "the interval straddles the threshold"
        )
    return judged, reason


# ---------------------------------------------------------------------------------------------- the per-model table


def _key(metric: str, dataset: str, factor: object = None, score: object = None) -> str:
    parts = (
        [metric, dataset] + ([str(factor)] if factor is not None else []) + ([str(score)] if score is not None else [])
    )
    return "|".join(parts)


def model_table(metrics: pd.DataFrame, registry: pd.DataFrame) -> pd.DataFrame:
    """Registry columns ``group, training_source, source_family, finetune_route, architecture, training_size`` of
    the paper's models (:func:`~clip_robustness.models.registry.paper_rows`) that have rows in ``metrics``, and one
    column per metric value (``metric|dataset[|factor][|score]``), indexed by model id. Only the paper's models: a
    user's own models and catalogue checkpoints never change a finding."""
    paper = paper_rows(registry)
    meta = paper.set_index(paper["model_id"].astype(str))
    meta = meta.reindex(sorted(set(metrics["model"].dropna().astype(str)) & set(meta.index)))
    out = pd.DataFrame(index=pd.Index(meta.index.to_numpy(dtype=object), name="model"))
    out["group"] = meta["group"].astype(str).to_numpy()
    out["training_source"] = meta["training_source"].astype(str).to_numpy()
    out["source_family"] = out["training_source"].map(source_family)
    route = meta["finetune_route"] if "finetune_route" in meta.columns else pd.Series("none", index=meta.index)
    out["finetune_route"] = route.fillna("none").astype(str).replace("", "none").to_numpy()
    arch = meta["architecture"] if "architecture" in meta.columns else pd.Series(meta.index, index=meta.index)
    out["architecture"] = arch.astype(str).to_numpy()
    size = meta["training_size"] if "training_size" in meta.columns else pd.Series(np.nan, index=meta.index)
    out["training_size"] = pd.to_numeric(size, errors="coerce").to_numpy(dtype=float)
    picked = metrics[metrics["model"].astype(str).isin(out.index)]
    keys = [
        _key(m, d, f if isinstance(f, str) else None, s if isinstance(s, str) else None)
        for m, d, f, s in zip(picked["metric"], picked["dataset"], picked["factor"], picked["score"])
    ]
    values = pd.DataFrame(
        {
            "model": picked["model"].astype(str).to_numpy(),
            "key": keys,
            "value": pd.to_numeric(picked["value"], errors="coerce").to_numpy(dtype=float),
        }
    )
    wide = values.drop_duplicates(["model", "key"]).pivot(index="model", columns="key", values="value")
    return out.join(wide)


def _column(table: pd.DataFrame, key: str) -> np.ndarray:
    return table[key].to_numpy(dtype=float) if key in table.columns else np.full(len(table), np.nan)


def _counts(labels: pd.Series, clusters: np.ndarray) -> str:
    parts = []
    for name in sorted(pd.unique(labels.astype(str))):
        mask = (labels.astype(str) == name).to_numpy()
        parts.append(f"{name}={int(mask.sum())} ({len(np.unique(clusters[mask]))} clusters)")
    return "; ".join(parts)


def _too_few(labels: pd.Series, required: Sequence[str], min_models: int) -> str:
    counts = labels.astype(str).value_counts()
    short = [f"{g} ({int(counts.get(g, 0))})" for g in required if counts.get(g, 0) < min_models]
    return f"fewer than {min_models} models in {', '.join(short)}" if short else ""


def _eligible(labels: pd.Series, min_models: int) -> list[str]:
    counts = labels.astype(str).value_counts()
    return sorted(str(g) for g in counts.index if counts[g] >= min_models)


def _missing(table: pd.DataFrame, groups: Sequence[str], has: np.ndarray, what: str) -> str:
    """Names the groups with models that lack ``what`` (so a setting never drops a group silently)."""
    parts = []
    for group in groups:
        mask = (table["group"] == group).to_numpy()
        lacking = int((mask & ~has).sum())
        if lacking:
            parts.append(f"{group}: {lacking} of {int(mask.sum())} models have no {what}")
    return "; ".join(parts)


def _design(
    table: pd.DataFrame,
    labels: pd.Series,
    strata: pd.Series,
    test: str,
    null: Callable[[np.ndarray, np.ndarray], Callable[[int, np.random.Generator], np.ndarray]] | None,
    too_few: str = "",
    notes: str = "",
    shown: pd.Series | None = None,
    identity: np.ndarray | None = None,
) -> Design:
    clusters = cluster_ids(table) if len(table) else np.zeros(0, dtype=np.int64)
    codes = labels.to_numpy()
    shown = labels if shown is None else shown
    return Design(
        models=table,
        strata=strata.astype(str).to_numpy(),
        clusters=clusters,
        identity=codes if identity is None else identity,
        null=null(codes, clusters) if null is not None else None,
        test=test,
        n_models=_counts(shown, clusters) if len(table) else "",
        too_few=too_few,
        notes=notes,
    )


def _permute(blocks: np.ndarray | None = None):
    def make(codes: np.ndarray, clusters: np.ndarray):
        b = np.zeros(len(codes), dtype=np.int64) if blocks is None else blocks
        return lambda samples, rng: cluster_permutations(codes, clusters, b, samples, rng)

    return make


# ---------------------------------------------------------------------------------------------- effective robustness


def _effective_robustness(
    table: pd.DataFrame, factors: Sequence[str], reference: np.ndarray
) -> Callable[[np.ndarray], list[np.ndarray]]:
    """``weights -> [ (B, n) ER per factor ]``: the logit-space line of each factor's accuracy on the accuracy over
    all annotated images is fitted on the reference models *as drawn in each resample*, then each model's factor
    accuracy minus the line's prediction (fraction)."""
    x_acc = _column(table, _key("top1", IMAGENET_X_DATASET))
    x = _logit(x_acc)
    ys = [_column(table, _key("factor_accuracy", IMAGENET_X_DATASET, f)) for f in factors]

    logit_ys = [_logit(y) for y in ys]

    def er(weights: np.ndarray) -> list[np.ndarray]:
        if len(weights) > 1 and (weights == weights[:1]).all():  # one fit serves every row (permutations)
            return [v[0] for v in er(weights[:1])]
        ref_w = weights * reference
        out = []
        for y, logit_y in zip(ys, logit_ys):
            slope, intercept = weighted_line(x, logit_y, ref_w)
            out.append(y - _sigmoid(slope[:, None] * x + intercept[:, None]))
        return out

    return er


def _range_note(table: pd.DataFrame, reference: np.ndarray, settings: FindingsSettings) -> tuple[np.ndarray, str]:
    """Which models lie outside the reference models' ImageNet-X accuracy range, and the note saying what is done."""
    acc = _column(table, _key("top1", IMAGENET_X_DATASET))
    ref = acc[reference & np.isfinite(acc)]
    if len(ref) == 0:
        return np.zeros(len(table), dtype=bool), ""
    lo, hi = float(ref.min()), float(ref.max())
    outside = ~reference & np.isfinite(acc) & ((acc < lo) | (acc > hi))
    per_group = table.loc[outside, "group"].value_counts()
    what = "left out" if settings.out_of_range == "drop" else "kept (the reference line extrapolated)"
    detail = ", ".join(f"{g}={int(c)}" for g, c in sorted(per_group.items()))
    note = (
        f"{int(outside.sum())} of {int((~reference).sum())} compared models outside the reference models' accuracy "
        f"range [{lo:.3f}, {hi:.3f}]{' (' + detail + ')' if detail else ''}: {what} (findings.out_of_range)"
    )
    return outside, note


def _factor_frame(
    models: pd.DataFrame, groups: Sequence[str], settings: FindingsSettings
) -> tuple[pd.DataFrame, list[str], str]:
    """Models of ``groups`` plus the reference models, with ImageNet-X values; the factors present; the range note."""
    factors = [f for f in IMAGENET_X_FACTORS if _key("factor_accuracy", IMAGENET_X_DATASET, f) in models.columns]
    keep = models["group"].isin([*groups, settings.reference]).to_numpy()
    has = np.isfinite(_column(models, _key("top1", IMAGENET_X_DATASET)))
    table = models[keep & has]
    reference = (table["group"] == settings.reference).to_numpy()
    outside, note = _range_note(table, reference, settings)
    if settings.out_of_range == "drop":
        table = table[~outside]
    return table, factors, note


# ---------------------------------------------------------------------------------------------- claims

FIGURE_FACTOR = figure_path("factor_effective_robustness")
FIGURE_FACTOR_SOURCE = figure_path("factor_robustness_by_source")
FIGURE_FACTOR_ROUTE = figure_path("factor_robustness_by_finetuning")
FIGURE_OOD = f"{figure_path('ood_detection')}; {table_path('ood_correlations.csv')}"
FIGURE_OOD_FT = f"{figure_path('ood_detection')} (CLIP-FT by route)"
FIGURE_CALIBRATION = figure_path("calibration")
FIGURE_SHIFT = figure_path("calibration_shift")


# Longer than 60 lines: the factor claims share one factor frame and its label; each claim is a short block.
def _factor_claims(models: pd.DataFrame, settings: FindingsSettings) -> list[dict[str, Any]]:
    zs, others, thr = settings.zero_shot, settings.others, settings.thresholds
    table, factors, note = _factor_frame(models, [zs, *others], settings)
    label = pd.Series(np.where(table["group"] == zs, 0, 1), index=table.index)
    shown = table["group"].where(table["group"] == zs, "others")
    too_few = _too_few(shown, [zs, "others"], settings.min_models)
    if not factors or (table["group"] == settings.reference).sum() < 2:
        too_few = too_few or f"no ImageNet-X factor accuracies or fewer than 2 {settings.reference} models"
    design = _design(table, label, table["group"], PERMUTATION, _permute(), too_few, note, shown)
    er = _effective_robustness(table, factors, (table["group"] == settings.reference).to_numpy())

    def differences(weights: np.ndarray, labels: np.ndarray) -> list[np.ndarray]:
        return [
            weighted_median(v, weights * (labels == 0)) - weighted_median(v, weights * (labels == 1))
            for v in er(weights)
        ]

    def stacked(weights: np.ndarray, labels: np.ndarray) -> np.ndarray:
        return np.vstack(differences(weights, labels)) if factors else np.full((1, len(weights)), np.nan)

    def count_better(weights: np.ndarray, labels: np.ndarray) -> np.ndarray:
        diffs = stacked(weights, labels)
        return np.where(np.isfinite(diffs).all(axis=0), (diffs > 0).sum(axis=0), np.nan).astype(float)

    pose_at = factors.index("pose") if "pose" in factors else None

    def pose(weights: np.ndarray, labels: np.ndarray) -> np.ndarray:
        if pose_at is None:
            return np.full(len(weights), np.nan)
        v = er(weights)[pose_at]
        return weighted_median(v, weights * (labels == 0)) - weighted_median(v, weights * (labels == 1))

    others_text = " + ".join(others)
    rows = [
        evaluate(
            Claim(
                "1a",
                "Zero-shot CLIP is more robust than other ImageNet classifiers on 6 of the 10 ImageNet-X factors",
                f"number of factors (of {len(factors)}) where the median effective robustness of zero-shot CLIP exceeds "
                f"that of the other classifiers ({others_text}); reference line refitted on {settings.reference} in every resample"
                f"; p: the {int(np.ceil(thr['majority_of_factors']))}th smallest Holm-adjusted one-sided "
                "permutation p of the per-factor differences",
                FIGURE_FACTOR,
                thr["majority_of_factors"],
                "at_least",
                (0.0, float(len(factors))),
            ),
            design,
            count_better,
            settings,
            salt=1,
            components=stacked,
            need=int(np.ceil(thr["majority_of_factors"])),
        ),
        evaluate(
            Claim(
                "1b",
                "... and less robust on pose",
                f"median effective robustness on pose: zero-shot CLIP minus the other classifiers ({others_text}) (fraction)",
                FIGURE_FACTOR,
                0.0,
                "below",
            ),
            design,
            pose,
            settings,
            salt=2,
        ),
    ]

    # claim 2: zero-shot CLIP grouped by training source (eligible sources), reference models only refit the line
    table, _, note = _factor_frame(models, [zs], settings)
    zs_rows = table["group"] == zs
    sources = _eligible(table.loc[zs_rows, "source_family"], settings.min_models)
    keep = (zs_rows & table["source_family"].isin(sources)) | (table["group"] == settings.reference)
    part = table[keep]
    codes = pd.Series(
        np.where(
            part["group"] == zs, part["source_family"].map({s: i for i, s in enumerate(sources)}).fillna(-1), -1
        ).astype(int),
        index=part.index,
    )
    too_few = (
        ""
        if len(sources) >= 2
        else f"fewer than 2 training sources with >= {settings.min_models} zero-shot CLIP models"
    )
    shown = part["source_family"].where(part["group"] == zs, f"reference {settings.reference}")
    rows.append(
        _group_effect_over(
            Claim(
                "2",
                "Training source changes factor robustness",
                "zero-shot CLIP, per factor: omega squared of effective robustness by training source; median over factors "
                "(share of variance explained)",
                FIGURE_FACTOR_SOURCE,
                thr["variance_explained"],
                "above",
            ),
            part,
            codes,
            part["group"].where(part["group"] != zs, part["source_family"]),
            _permute(),
            too_few,
            note,
            shown,
            lambda w: _effective_robustness(part, factors, (part["group"] == settings.reference).to_numpy())(w),
            len(sources),
            settings,
            salt=3,
        )
    )

    # claim 9: CLIP-FT routes within a pretraining source
    table, _, note = _factor_frame(models, [settings.fine_tuned], settings)
    rows.append(
        _route_effect(
            Claim(
                "9",
                "The fine-tuning route changes factor robustness",
                "CLIP-FT, per factor: effective robustness centred within each pretraining source, omega squared by "
                "fine-tuning route; median over factors",
                FIGURE_FACTOR_ROUTE,
                thr["variance_explained"],
                "above",
            ),
            table,
            lambda part: _effective_robustness(part, factors, (part["group"] == settings.reference).to_numpy()),
            note,
            settings,
            salt=9,
            keep_reference=True,
        )
    )
    return rows


def _group_effect_over(
    claim: Claim,
    part: pd.DataFrame,
    codes: pd.Series,
    strata: pd.Series,
    null,
    too_few: str,
    notes: str,
    shown: pd.Series,
    values: Callable[[np.ndarray], list[np.ndarray]],
    n_labels: int,
    settings: FindingsSettings,
    salt: int,
) -> dict[str, Any]:
    """A group-effect row: omega squared of each of ``values(weights)`` by ``codes``, median over them."""
    design = _design(part, codes, strata, PERMUTATION, null, too_few, notes, shown)

    def effect(weights: np.ndarray, labels: np.ndarray) -> np.ndarray:
        return nan_median_rows(
            [omega_squared(v, weights, labels, max(n_labels, 1)) for v in values(weights)]
            or [np.full(len(weights), np.nan)]
        )

    return evaluate(claim, design, effect, settings, salt)


def _route_effect(
    claim: Claim,
    table: pd.DataFrame,
    values_of: Callable[[pd.DataFrame], Callable[[np.ndarray], list[np.ndarray]]],
    notes: str,
    settings: FindingsSettings,
    salt: int,
    keep_reference: bool = False,
    unscorable: str = "",
) -> dict[str, Any]:
    """Claims 4b and 9: CLIP-FT models, values centred within each pretraining source, omega squared by route;
    routes permuted among clusters within each source. Only sources with >= 2 routes take part."""
    ft_rows = table["group"] == settings.fine_tuned
    ft = table[ft_rows]
    routes_per_source = ft.groupby("source_family")["finetune_route"].nunique()
    sources = sorted(routes_per_source.index[routes_per_source >= 2])
    in_ft = ft_rows & table["source_family"].isin(sources)
    keep = in_ft | ((table["group"] == settings.reference) if keep_reference else False)
    part = table[keep]
    is_ft = (part["group"] == settings.fine_tuned).to_numpy()
    routes = _eligible(part.loc[is_ft, "finetune_route"], settings.min_models)
    route_code = part["finetune_route"].map({r: i for i, r in enumerate(routes)}).fillna(-1).astype(int)
    codes = pd.Series(np.where(is_ft, route_code, -1), index=part.index)
    source_code = pd.factorize(part["source_family"].where(is_ft, "reference"))[0]
    too_few = unscorable or (
        ""
        if len(routes) >= 2
        else (
            f"fewer than 2 fine-tuning routes with >= {settings.min_models} {settings.fine_tuned} models within "
            "pretraining sources that have both"
        )
    )
    shown = (part["finetune_route"] + " / " + part["source_family"]).where(is_ft, f"reference {settings.reference}")
    strata = (part["finetune_route"] + "|" + part["source_family"]).where(is_ft, part["group"])
    design = _design(part, codes, strata, PERMUTATION, _permute(source_code), too_few, notes, shown)
    values = values_of(part)
    source_masks = [(source_code == s) & is_ft for s in np.unique(source_code[is_ft])]

    def effect(weights: np.ndarray, labels: np.ndarray) -> np.ndarray:
        out = []
        for v in values(weights):
            centred = np.broadcast_to(v, weights.shape).copy()
            for mask in source_masks:
                centred[:, mask] -= weighted_mean(centred, weights * mask)[:, None]
            out.append(omega_squared(centred, weights, labels, max(len(routes), 1)))
        return nan_median_rows(out or [np.full(len(weights), np.nan)])

    return evaluate(claim, design, effect, settings, salt)


def _auroc_key(dataset: str, score: str, metric: str = "auroc") -> str:
    return _key(metric, dataset, None, score)


def _scored(models: pd.DataFrame, sets: Sequence[str], settings: FindingsSettings, metric: str) -> pd.DataFrame:
    """One column per OOD set: each model's ``metric`` under its score (``paper``: MCM for zero-shot CLIP, MSP else)."""
    out = pd.DataFrame(index=models.index)
    is_zs = (models["group"] == settings.zero_shot).to_numpy()
    for d in sets:
        if settings.ood_score == PAPER_OOD_SCORE:
            out[d] = np.where(
                is_zs, _column(models, _auroc_key(d, "mcm", metric)), _column(models, _auroc_key(d, "msp", metric))
            )
        else:
            out[d] = _column(models, _auroc_key(d, settings.ood_score, metric))
    return out


def _score_text(settings: FindingsSettings) -> str:
    return "MCM for zero-shot CLIP, MSP for the rest" if settings.ood_score == PAPER_OOD_SCORE else settings.ood_score


# Longer than 60 lines: the OOD claims share one scored frame and their designs; each claim is a short block.
def _ood_claims(models: pd.DataFrame, settings: FindingsSettings, metric: str, suffix: str) -> list[dict[str, Any]]:
    sets = [d for d in settings.ood_sets if any(c.startswith(f"{metric}|{d}|") for c in models.columns)]
    scored = _scored(models, sets, settings, metric)
    accuracy = _column(models, _key("top1", settings.in_distribution))
    has = np.isfinite(accuracy) & (
        np.isfinite(scored.to_numpy()).any(axis=1) if sets else np.zeros(len(models), dtype=bool)
    )
    what = f"{metric} under {_score_text(settings)}"
    missing = _missing(models, [settings.zero_shot, settings.fine_tuned], has, what)
    unscorable = {g: _unscorable(models, g, has, what) for g in (settings.zero_shot, settings.fine_tuned)}
    table = models[has].assign(accuracy=accuracy[has]).join(scored[has])
    thr = settings.thresholds
    strong = thr["strong_correlation"]
    name = "AUROC" if metric == "auroc" else "FPR@95"
    # FPR@95 is lower-is-better: a strong positive link of accuracy with detection is a strong negative r
    sign = 1.0 if metric == "auroc" else -1.0
    rows = []

    zs = table[table["group"] == settings.zero_shot]
    sources = _eligible(zs["source_family"], settings.min_models)
    zs = zs[zs["source_family"].isin(sources)]
    too_few = (
        ""
        if sources and sets
        else f"no training source with >= {settings.min_models} zero-shot CLIP models and {name} rows"
    )
    block = pd.factorize(zs["source_family"])[0]
    masks = [block == b for b in np.unique(block)]
    x = zs["accuracy"].to_numpy(dtype=float)
    ys = [zs[d].to_numpy(dtype=float) for d in sets]
    design = _design(
        zs,
        pd.Series(np.arange(len(zs)), index=zs.index),
        zs["source_family"],
        WITHIN_SHUFFLE,
        lambda codes, clusters: lambda samples, rng: within_block_shuffles(block, samples, rng),
        unscorable[settings.zero_shot] or too_few,
        missing,
        zs["source_family"],
    )

    def pooled_r(weights: np.ndarray, index: np.ndarray) -> np.ndarray:
        # sources with fewer than min_models distinct models in this resample take no part (a 2-model r is +-1)
        enough = [distinct_models(weights, mask) >= settings.min_models for mask in masks]
        used = (
            sum((weights * mask) * ok[:, None] for mask, ok in zip(masks, enough)) if masks else np.zeros_like(weights)
        )
        x_c = np.broadcast_to(x, weights.shape).copy()
        for mask in masks:
            x_c[:, mask] -= weighted_mean(x, weights * mask)[:, None]
        rs = []
        for y in ys:
            y_c = y[index].copy()
            for mask in masks:
                y_c[:, mask] -= weighted_mean(y_c, weights * mask)[:, None]
            rs.append(sign * weighted_pearson(x_c, y_c, used))
        return nan_median_rows(rs or [np.full(len(weights), np.nan)])

    rows.append(
        evaluate(
            Claim(
                f"3{suffix}",
                f"Within a training source, zero-shot CLIP's ImageNet accuracy is strongly correlated with OOD detection ({name})",
                f"pooled within-source Pearson r of ImageNet accuracy vs {name} ({_score_text(settings)}): both centred on "
                f"each training source's mean, sources with >= {settings.min_models} distinct models in the resample; "
                f"{'sign flipped (lower FPR is better); ' if sign < 0 else ''}median over OOD sets",
                FIGURE_OOD,
                strong,
                "above",
                (-1.0, 1.0),
            ),
            design,
            pooled_r,
            settings,
            salt=30 + len(suffix),
        )
    )

    # claim 4a: zero-shot CLIP by training source, residual from one line of the metric on accuracy (refit per resample)
    codes = pd.Series(zs["source_family"].map({s: i for i, s in enumerate(sources)}).astype(int), index=zs.index)
    too_few4 = (
        ""
        if len(sources) >= 2 and sets
        else f"fewer than 2 training sources with >= {settings.min_models} zero-shot CLIP models"
    )

    def residuals_of(part: pd.DataFrame, mask: np.ndarray | None = None) -> Callable[[np.ndarray], list[np.ndarray]]:
        xp = part["accuracy"].to_numpy(dtype=float)
        yps = [part[d].to_numpy(dtype=float) for d in sets]
        fit_mask = np.ones(len(part)) if mask is None else mask

        def residuals(weights: np.ndarray) -> list[np.ndarray]:
            out = []
            for y in yps:
                slope, intercept = weighted_line(xp, y, weights * fit_mask)
                out.append(y - (slope[:, None] * xp + intercept[:, None]))
            return out

        return residuals

    rows.append(
        _group_effect_over(
            Claim(
                f"4a{suffix}",
                f"Training source strongly affects OOD detection ({name})",
                f"zero-shot CLIP: {name} residual from one line of {name} on ImageNet accuracy (refitted per resample), per OOD "
                "set; omega squared by training source; median over OOD sets",
                FIGURE_OOD,
                thr["variance_explained"],
                "above",
            ),
            zs,
            codes,
            zs["source_family"],
            _permute(),
            unscorable[settings.zero_shot] or too_few4,
            missing,
            zs["source_family"],
            residuals_of(zs),
            len(sources),
            settings,
            salt=40 + len(suffix),
        )
    )

    ft_table = table[table["group"] == settings.fine_tuned]
    rows.append(
        _route_effect(
            Claim(
                f"4b{suffix}",
                f"Fine-tuning procedure strongly affects OOD detection ({name})",
                f"CLIP-FT: {name} residual from one line on ImageNet accuracy over CLIP-FT (refitted per resample), centred "
                "within each pretraining source; omega squared by fine-tuning route; median over OOD sets",
                FIGURE_OOD_FT,
                thr["variance_explained"],
                "above",
            ),
            ft_table,
            lambda part: residuals_of(part),
            missing,
            settings,
            salt=50 + len(suffix),
            unscorable=unscorable[settings.fine_tuned],
        )
    )
    return rows


def _unscorable(models: pd.DataFrame, group: str, has: np.ndarray, what: str) -> str:
    """A reason naming ``group`` when it has models but none of them has ``what`` (the group cannot be scored)."""
    mask = (models["group"] == group).to_numpy()
    return (
        f"group {group} cannot be scored: none of its {int(mask.sum())} models has {what}"
        if mask.any() and not (mask & has).any()
        else ""
    )


def _calibration_claims(models: pd.DataFrame, settings: FindingsSettings) -> list[dict[str, Any]]:
    id_test = id_test_dataset(settings.in_distribution)
    zs, others, thr = settings.zero_shot, settings.others, settings.thresholds
    rows = []
    pair = models[models["group"].isin([zs, *others])]
    shown = pair["group"].where(pair["group"] == zs, "others")
    label = pd.Series(np.where(pair["group"] == zs, 0, 1), index=pair.index)
    for metric, suffix, unit in (("ece", "", "ECE"), ("nll", "-nll", "NLL")):
        values = _column(pair, _key(metric, id_test))
        has = np.isfinite(values)
        part, lab, sh = pair[has], label[has], shown[has]
        v = values[has]
        design = _design(
            part, lab, part["group"], BOOTSTRAP_TEST, None, _too_few(sh, [zs, "others"], settings.min_models), "", sh
        )

        def share(weights: np.ndarray, labels: np.ndarray, v=v) -> np.ndarray:
            clip_median = weighted_median(v, weights * (labels == 0))
            others_w = weights * (labels == 1)
            with np.errstate(invalid="ignore", divide="ignore"):
                return (others_w * (v < clip_median[:, None])).sum(axis=1) / others_w.sum(axis=1)

        rows.append(
            evaluate(
                Claim(
                    f"5{suffix}",
                    f"CLIP models are not consistently better calibrated than other ImageNet classifiers ({unit})",
                    f"pre-TS {unit} on {id_test}: share of the other classifiers ({' + '.join(others)}) with {unit} below the "
                    "median zero-shot CLIP's",
                    FIGURE_CALIBRATION,
                    thr["share_better_calibrated"],
                    "above",
                    (0.0, 1.0),
                ),
                design,
                share,
                settings,
                salt=60 + len(suffix),
            )
        )

    rows += _trend_claims(pair, label, shown, id_test, settings)
    rows += _shift_claims(models, settings)
    rows += _clip_calibration_claims(models, id_test, settings)
    return rows


def _trend_claims(
    pair: pd.DataFrame, label: pd.Series, shown: pd.Series, id_test: str, settings: FindingsSettings
) -> list[dict[str, Any]]:
    zs, thr = settings.zero_shot, settings.thresholds
    x_all, y_all = _column(pair, _key("top1", id_test)), _column(pair, _key("ece_ts", id_test))
    keep, lo, hi, note = _overlapping_range(x_all, y_all, (label == 0).to_numpy())
    part, lab, sh = pair[keep], label[keep], shown[keep]
    x, y = x_all[keep], y_all[keep]
    overlap = bool(hi > lo)  # NaN bounds (a group without values) compare False
    too_few = (_too_few(sh, [zs, "others"], settings.min_models) if overlap else "") or (
        "" if overlap else f"no overlapping accuracy range of {zs} and the other classifiers on {id_test}"
    )
    design = _design(part, lab, part["group"], PERMUTATION, _permute(), too_few, note, sh)
    grid = np.linspace(lo, hi, GAP_GRID_POINTS) if overlap else np.zeros(GAP_GRID_POINTS)
    mean_gap, spread_ratio = _trend_statistics(x, y, grid)
    return [
        evaluate(
            Claim(
                "6a",
                "After temperature scaling, CLIP models follow a trend separate from the other models",
                f"post-TS ECE vs accuracy on {id_test}, one least-squares line per side (zero-shot CLIP; others), both "
                "fitted over the overlapping accuracy range (refitted per resample): mean |gap| between the lines "
                "over that range (ECE points; intercept and slope together)",
                FIGURE_CALIBRATION,
                thr["trend_gap_ece"],
                "above",
                (0.0, np.inf),
            ),
            design,
            mean_gap,
            settings,
            salt=70,
        ),
        evaluate(
            Claim(
                "6b",
                "... and a consistent one: CLIP sits tightly on its own post-TS trend",
                "residual SD of zero-shot CLIP around its own post-TS ECE line / residual SD of the others around theirs",
                FIGURE_CALIBRATION,
                thr["spread_ratio"],
                "below",
                (0.0, np.inf),
            ),
            design,
            spread_ratio,
            settings,
            salt=71,
        ),
    ]


def _overlapping_range(x_all: np.ndarray, y_all: np.ndarray, is_zs: np.ndarray) -> tuple[np.ndarray, float, float, str]:
    """Models with both values inside the two groups' overlapping accuracy range, its bounds (NaN: a group lacks
    values) and the note saying how many were left out."""
    has = np.isfinite(x_all) & np.isfinite(y_all)
    note, keep = "", has
    if (has & is_zs).any() and (has & ~is_zs).any():
        lo = max(x_all[has & is_zs].min(), x_all[has & ~is_zs].min())
        hi = min(x_all[has & is_zs].max(), x_all[has & ~is_zs].max())
        keep = has & (x_all >= lo) & (x_all <= hi)
        note = (
            (
                f"overlapping accuracy range [{lo:.3f}, {hi:.3f}]; {int((has & ~keep).sum())} of {int(has.sum())} models "
                "outside it left out"
            )
            if hi > lo
            else "the two groups' accuracy ranges do not overlap"
        )
    else:
        lo = hi = float("nan")
    return keep, lo, hi, note


def _trend_statistics(x: np.ndarray, y: np.ndarray, grid: np.ndarray) -> tuple[Statistic, Statistic]:
    """Claims 6a/6b's statistics: the mean |gap| between the two groups' lines over ``grid``, the residual SD ratio."""

    def lines(weights: np.ndarray, labels: np.ndarray):
        return [weighted_line(x, y, weights * (labels == g)) for g in (0, 1)]

    def mean_gap(weights: np.ndarray, labels: np.ndarray) -> np.ndarray:
        (s0, i0), (s1, i1) = lines(weights, labels)
        gap = (i0 - i1)[:, None] + (s0 - s1)[:, None] * grid[None, :]
        return np.abs(gap).mean(axis=1)

    def spread_ratio(weights: np.ndarray, labels: np.ndarray) -> np.ndarray:
        sds = []
        for g, (slope, intercept) in zip((0, 1), lines(weights, labels)):
            w = weights * (labels == g)
            resid = y - (slope[:, None] * x + intercept[:, None])
            with np.errstate(invalid="ignore", divide="ignore"):
                sds.append(np.sqrt((w * resid**2).sum(axis=1) / (w.sum(axis=1) - 2)))
        with np.errstate(invalid="ignore", divide="ignore"):
            return sds[0] / sds[1]

    return mean_gap, spread_ratio


def _shift_claims(models: pd.DataFrame, settings: FindingsSettings) -> list[dict[str, Any]]:
    """Claim 7: the change of ECE (and NLL) that the ID temperature brings under each shift, zero-shot CLIP."""
    conditions = list(dict.fromkeys(fold_imagenet_c(settings.test_conditions)))
    zs = models[models["group"] == settings.zero_shot]
    rows = []
    for metric, suffix, unit in (("ece", "", "ECE points"), ("nll", "-nll", "nats")):
        design, present, deltas = _shift_design(zs, conditions, metric, settings)

        def median_change(weights: np.ndarray, signs: np.ndarray, deltas=deltas) -> np.ndarray:
            return nan_median_rows(
                [weighted_mean(signs * d, weights) for d in deltas] or [np.full(len(weights), np.nan)]
            )

        name = metric.upper()
        rows.append(
            evaluate(
                Claim(
                    f"7{suffix}",
                    f"A temperature fitted on ImageNet keeps zero-shot CLIP's uncertainty reasonable under shift ({name})",
                    f"per test condition ({', '.join(present) or 'none'}; {IMAGENET_C_DATASET} = mean over corruptions and "
                    f"severities): mean over zero-shot CLIP of {name} after ID temperature scaling minus before ({unit}); "
                    "median over conditions",
                    FIGURE_SHIFT,
                    0.0,
                    "below",
                ),
                design,
                median_change,
                settings,
                salt=80 + len(suffix),
            )
        )
        if metric == "ece":
            rows += _per_condition_shift_claims(design, present, deltas, settings)
    return rows


def _shift_design(
    zs: pd.DataFrame, conditions: Sequence[str], metric: str, settings: FindingsSettings
) -> tuple[Design, list[str], list[np.ndarray]]:
    """The sign-flip design of zero-shot CLIP models with ``metric`` before and after TS on every present condition,
    the present conditions, and each one's per-model change (after minus before)."""
    changes = {c: _column(zs, _key(f"{metric}_ts", c)) - _column(zs, _key(metric, c)) for c in conditions}
    present = [c for c in conditions if np.isfinite(changes[c]).any()]
    has = (
        np.isfinite(np.vstack([changes[c] for c in present])).all(axis=0) if present else np.zeros(len(zs), dtype=bool)
    )
    part = zs[has]
    too_few = _too_few(part["group"], [settings.zero_shot], settings.min_models) or (
        "" if present else f"no {metric} / {metric}_ts rows of a test condition"
    )
    design = _design(
        part,
        pd.Series(np.ones(len(part)), index=part.index),
        part["group"],
        SIGN_FLIP,
        lambda codes, clusters: lambda samples, rng: cluster_sign_flips(clusters, samples, rng),
        too_few,
        "",
        part["group"],
        identity=np.ones(len(part)),
    )
    return design, present, [changes[c][has] for c in present]


def _per_condition_shift_claims(
    design: Design, present: Sequence[str], deltas: Sequence[np.ndarray], settings: FindingsSettings
) -> list[dict[str, Any]]:
    """Claims 7:{condition}: the mean ECE change under each condition, p Holm-adjusted over the conditions."""
    per = []
    for i, c in enumerate(present):

        def one(weights: np.ndarray, signs: np.ndarray, d=deltas[i]) -> np.ndarray:
            return weighted_mean(signs * d, weights)

        per.append(
            evaluate(
                Claim(
                    f"7:{c}",
                    f"... under {c} (ECE)",
                    f"mean over zero-shot CLIP of post-TS minus pre-TS ECE on {c} "
                    "(ECE points); p Holm-adjusted over the conditions",
                    FIGURE_SHIFT,
                    0.0,
                    "below",
                ),
                design,
                one,
                settings,
                salt=90 + i,
            )
        )
    adjusted = holm([r["p_value"] for r in per])
    for r, p in zip(per, adjusted):
        r["p_value"] = float(p)
        if r["verdict"] == SUPPORTED and not p < settings.alpha:
            r["verdict"], r["reason"] = (
                UNDETERMINED,
                f"Holm-adjusted p = {p:.3g} is not below alpha = {settings.alpha:g}",
            )
    return per


def _clip_calibration_claims(models: pd.DataFrame, id_test: str, settings: FindingsSettings) -> list[dict[str, Any]]:
    """Claims 8a/8b: training source and training-set size drive zero-shot CLIP's calibration (pre-TS ECE, ID test)."""
    zs = models[models["group"] == settings.zero_shot]
    zs = zs[np.isfinite(_column(zs, _key("ece", id_test)))]
    return [_source_calibration_claim(zs, id_test, settings), _size_calibration_claim(zs, id_test, settings)]


def _source_calibration_claim(zs: pd.DataFrame, id_test: str, settings: FindingsSettings) -> dict[str, Any]:
    """Claim 8a: omega squared of zero-shot CLIP's pre-TS ECE by training source."""
    sources = _eligible(zs["source_family"], settings.min_models)
    part = zs[zs["source_family"].isin(sources)]
    codes = pd.Series(part["source_family"].map({s: i for i, s in enumerate(sources)}).astype(int), index=part.index)
    ece = _column(part, _key("ece", id_test))
    too_few = (
        ""
        if len(sources) >= 2
        else f"fewer than 2 training sources with >= {settings.min_models} zero-shot CLIP models"
    )
    return _group_effect_over(
        Claim(
            "8a",
            "Training source changes zero-shot CLIP's calibration",
            f"zero-shot CLIP: omega squared of pre-TS ECE on {id_test} by training source (share of variance explained)",
            FIGURE_CALIBRATION,
            settings.thresholds["variance_explained"],
            "above",
        ),
        part,
        codes,
        part["source_family"],
        _permute(),
        too_few,
        "",
        part["source_family"],
        lambda w: [ece],
        len(sources),
        settings,
        salt=100,
    )


def _size_calibration_claim(zs: pd.DataFrame, id_test: str, settings: FindingsSettings) -> dict[str, Any]:
    """Claim 8b: Pearson r of log10 training-set size vs zero-shot CLIP's pre-TS ECE (sizes permuted among clusters)."""
    sized = zs[np.isfinite(zs["training_size"].to_numpy(dtype=float)) & (zs["training_size"].to_numpy(dtype=float) > 0)]
    log_size = np.log10(sized["training_size"].to_numpy(dtype=float))
    ece_s = _column(sized, _key("ece", id_test))
    n_sizes = len(np.unique(log_size))
    too_few = _too_few(sized["group"], [settings.zero_shot], settings.min_models) or (
        "" if n_sizes >= 3 else f"fewer than 3 distinct training-set sizes ({n_sizes})"
    )
    size_code = pd.Series(pd.factorize(log_size)[0], index=sized.index)
    design = _design(sized, size_code, sized["group"], PERMUTATION, _permute(), too_few, "", sized["group"])
    sizes_by_code = (
        pd.Series(log_size).groupby(size_code.to_numpy()).first().sort_index().to_numpy() if len(sized) else np.zeros(0)
    )

    def size_r(weights: np.ndarray, labels: np.ndarray) -> np.ndarray:
        return weighted_pearson(sizes_by_code[labels] if len(sizes_by_code) else labels, ece_s, weights)

    return evaluate(
        Claim(
            "8b",
            "Training-set size drives zero-shot CLIP's calibration",
            f"zero-shot CLIP: Pearson r of log10 training-set size vs pre-TS ECE on {id_test} (either sign; sizes "
            "permuted among clusters)",
            FIGURE_CALIBRATION,
            0.0,
            "outside",
            (-1.0, 1.0),
        ),
        design,
        size_r,
        settings,
        salt=101,
    )


def findings_table(metrics: pd.DataFrame, registry: pd.DataFrame, settings: FindingsSettings) -> pd.DataFrame:
    """The findings table (columns :data:`FINDINGS_COLUMNS`), one row per claim, from the aggregate tidy
    ``metrics`` table and the model ``registry`` table (``model_id, group, training_source, finetune_route``)."""
    missing = [c for c in ("model_id", "group", "training_source") if c not in registry.columns]
    if missing:
        raise ValueError(f"model registry lacks column(s) {missing} needed for the findings")
    models = model_table(metrics, registry)
    rows = [
        *_factor_claims(models, settings),
        *_ood_claims(models, settings, "auroc", ""),
        *_ood_claims(models, settings, "fpr95", "-fpr95"),
        *_calibration_claims(models, settings),
        *_shape_bias_claims(models, settings),
    ]
    table = pd.DataFrame(rows, columns=list(FINDINGS_COLUMNS))
    order = {c: i for i, c in enumerate(CLAIM_ORDER)}
    table = table.iloc[
        sorted(range(len(table)), key=lambda i: (order.get(table["claim_id"].iat[i].split(":")[0], 99), i))
    ]
    table = table.reset_index(drop=True)
    for row in table.itertuples():
        log.info(
            "finding %s: %s (value %.4g, p %.3g, %s) [%s]",
            row.claim_id,
            row.verdict,
            row.value,
            row.p_value,
            row.n_models,
            row.reason,
        )
    return table


#: Order of the rows (claim ids; per-condition rows follow their claim).
CLAIM_ORDER: tuple[str, ...] = (
    "1a",
    "1b",
    "2",
    "9",
    "3",
    "3-fpr95",
    "4a",
    "4a-fpr95",
    "4b",
    "4b-fpr95",
    "5",
    "5-nll",
    "6a",
    "6b",
    "7",
    "7-nll",
    "8a",
    "8b",
    "10",
)


# ---------------------------------------------------------------------------------------------- shape bias (journal extension)

FIGURE_SHAPE_BIAS = figure_path("shape_bias")


def _shape_bias_claims(models: pd.DataFrame, settings: FindingsSettings) -> list[dict[str, Any]]:
    """Claim 10 (the journal extension): zero-shot CLIP is more shape-biased than the other ImageNet classifiers. One
    row per cue-conflict dataset: the difference of the group means of shape bias, a cluster-bootstrap interval (within
    group) and a cluster permutation p-value (group labels shuffled among clusters)."""
    zs, others = settings.zero_shot, settings.others
    rows = []
    for k, dataset in enumerate(settings.cue_conflict):
        pair = models[models["group"].isin([zs, *others])]
        values = _column(pair, _key("shape_bias", dataset))
        has = np.isfinite(values)
        part, v = pair[has], values[has]
        shown = part["group"].where(part["group"] == zs, "others")
        label = pd.Series(np.where(part["group"] == zs, 0, 1), index=part.index)
        design = _design(
            part,
            label,
            part["group"],
            PERMUTATION,
            _permute(),
            _too_few(shown, [zs, "others"], settings.min_models),
            _missing(pair, [zs, *others], has, f"shape bias on {dataset}"),
            shown,
        )

        def difference(weights: np.ndarray, labels: np.ndarray, v=v) -> np.ndarray:
            return weighted_mean(v, weights * (labels == 0)) - weighted_mean(v, weights * (labels == 1))

        rows.append(
            evaluate(
                Claim(
                    "10" if k == 0 else f"10:{dataset}",
                    "Zero-shot CLIP models are more shape-biased than other ImageNet classifiers (journal extension)",
                    f"mean shape bias on {dataset} (16-category decision; images whose shape and texture agree left out): "
                    f"zero-shot CLIP minus the other classifiers ({' + '.join(others)})",
                    FIGURE_SHAPE_BIAS,
                    0.0,
                    "above",
                    (-1.0, 1.0),
                ),
                design,
                difference,
                settings,
                salt=110 + k,
            )
        )
    return rows
