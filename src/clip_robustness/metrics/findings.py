"""The paper's findings as checkable results: one row per claim, with a statistic, a bootstrap interval and a verdict.

Computed only from the aggregate tidy metrics table and the model registry table (no GPU, no cache).
The statistic of each claim, its threshold and the verdict rules are written down in
``docs/assumptions.md`` (section 1); this module implements exactly that text.

- Interval: BCa bootstrap over models (``scipy.stats.bootstrap``), models resampled with replacement
  within each group compared (strata), the whole statistic recomputed per resample; seeded.
- Verdict: ``undetermined`` when a group compared has fewer than ``min_models`` models, when the
  statistic cannot be computed, or when the interval straddles the threshold; ``supported`` when the
  whole interval lies on the claim's side of the threshold; ``not supported`` when it lies on the other side.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from clip_robustness.metrics.correlation import source_family
from clip_robustness.metrics.imagenet_x import IMAGENET_X_FACTORS
from clip_robustness.metrics.tables import IMAGENET_X_DATASET
from clip_robustness.models.registry import paper_rows
from clip_robustness.workflow.study import IMAGENET_C_DATASET, fold_imagenet_c, id_test_dataset

log = logging.getLogger(__name__)

#: Columns of ``results/tables/findings.csv``, in order.
FINDINGS_COLUMNS: tuple[str, ...] = (
    "claim_id", "claim", "statistic", "value", "n_models", "ci_low", "ci_high", "threshold", "verdict", "reason", "figure",
)
SUPPORTED, NOT_SUPPORTED, UNDETERMINED = "supported", "not supported", "undetermined"
VERDICTS: tuple[str, ...] = (SUPPORTED, NOT_SUPPORTED, UNDETERMINED)

#: Registry groups (column ``group``).
ZERO_SHOT, CLIP_FT, STANDARD = "clip_zeroshot", "clip_ft", "standard"
CLIP_GROUPS: tuple[str, ...] = (ZERO_SHOT, CLIP_FT)

#: Thresholds of the verdicts (docs/assumptions.md, section 1): the paper states its findings in words.
MAJORITY_OF_FACTORS = 6  # claim 1a: "6 of the 10 factors"
SPREAD_RATIO = 1.0  # claims 2, 4: between-group SD / pooled within-group SD
STRONG_CORRELATION = 0.7  # claim 3: "strongly correlated"
SHARE_BETTER_CALIBRATED = 0.25  # claim 5: share of standard models better calibrated than the median CLIP
TREND_GAP_ECE = 0.5  # claim 6: ECE points between the two post-TS trends
#: Interval level of the bootstrap.
CONFIDENCE = 0.95


@dataclass(frozen=True)
class FindingsSettings:
    """What the findings need besides the tables.

    ``in_distribution``: ImageNet val's dataset id (accuracy axis of the OOD claims; its ID test half
    holds the calibration rows). ``test_conditions``: dataset ids of the shifts (ImageNet-C ids are
    folded into the one ``imagenet_c`` condition). ``ood_sets``: OOD dataset ids. ``ood_score``: the
    OOD score the claims use (config ``metrics.ood_score``). ``bootstrap_samples``, ``seed``,
    ``min_models``: config ``findings``.
    """

    in_distribution: str
    test_conditions: tuple[str, ...]
    ood_sets: tuple[str, ...]
    ood_score: str
    bootstrap_samples: int
    seed: int
    min_models: int

    @classmethod
    def from_config(cls, config: Mapping[str, Any], roles: Mapping[str, Any]) -> "FindingsSettings":
        """From the validated config (``metrics.ood_score``, ``findings``) and the dataset roles of the study."""
        findings = config["findings"]
        return cls(
            in_distribution=str(roles["in_distribution"]),
            test_conditions=tuple(roles["test_conditions"]),
            ood_sets=tuple(roles["ood"]),
            ood_score=str(config["metrics"]["ood_score"]),
            bootstrap_samples=int(findings["bootstrap_samples"]),
            seed=int(findings["seed"]),
            min_models=int(findings["min_models"]),
        )


# ---------------------------------------------------------------------------------------------- verdicts


def verdict(ci_low: float, ci_high: float, threshold: float, side: str) -> str:
    """The verdict of an interval against a threshold.

    ``side``: where the claim lies: ``"above"`` (values > threshold), ``"at_least"`` (>= threshold),
    ``"below"`` (< threshold), ``"outside"`` (|value| > threshold, either sign). A NaN bound is undetermined.
    """
    if not (np.isfinite(ci_low) and np.isfinite(ci_high)):
        return UNDETERMINED
    if side == "above":
        return SUPPORTED if ci_low > threshold else NOT_SUPPORTED if ci_high <= threshold else UNDETERMINED
    if side == "at_least":
        return SUPPORTED if ci_low >= threshold else NOT_SUPPORTED if ci_high < threshold else UNDETERMINED
    if side == "below":
        return SUPPORTED if ci_high < threshold else NOT_SUPPORTED if ci_low >= threshold else UNDETERMINED
    if side == "outside":
        if ci_low > threshold or ci_high < -threshold:
            return SUPPORTED
        return NOT_SUPPORTED if -threshold <= ci_low and ci_high <= threshold else UNDETERMINED
    raise ValueError(f"verdict: unknown side {side!r}")


def bootstrap_interval(
    frame: pd.DataFrame,
    strata: Sequence[object],
    statistic: Callable[[pd.DataFrame], float],
    samples: int,
    seed: int,
    level: float = CONFIDENCE,
) -> tuple[float, float]:
    """Bootstrap interval of ``statistic`` over ``samples`` resamples of the rows (models) of ``frame``.

    Rows are resampled with replacement within each value of ``strata`` (one per row), so every group keeps
    its size (``scipy.stats.bootstrap`` with one sample per stratum). The interval is BCa (bias-corrected and
    accelerated: a statistic such as a spread ratio is biased under resampling, and BCa corrects for it);
    where BCa is undefined (every resample on one side of the estimate, or some resamples undefined) it falls
    back to the basic interval ``2 * estimate - quantiles`` of the finite resamples, which corrects a constant
    bias. NaN when more than 10% of the resamples give no finite value.
    """
    strata = np.asarray(list(strata), dtype=object)
    if len(strata) != len(frame):
        raise ValueError(f"bootstrap_interval: {len(strata)} strata for {len(frame)} rows")
    positions = tuple(np.flatnonzero(strata == s) for s in pd.unique(strata))

    def on_positions(*parts: np.ndarray) -> float:
        return statistic(frame.iloc[np.concatenate(parts).astype(np.int64)])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (stats.DegenerateDataWarning, RuntimeWarning))
        result = stats.bootstrap(positions, on_positions, n_resamples=samples, vectorized=False, paired=False,
                                 confidence_level=level, method="BCa", rng=np.random.default_rng(seed))
    values = np.asarray(result.bootstrap_distribution, dtype=float)
    finite = values[np.isfinite(values)]
    if len(finite) == 0 or len(finite) < 0.9 * samples:
        return float("nan"), float("nan")
    low, high = result.confidence_interval
    if np.isfinite(low) and np.isfinite(high):
        return float(low), float(high)
    # BCa undefined (e.g. every resample lies above the estimate): the basic interval, which corrects a constant bias
    alpha = (1.0 - level) / 2.0
    q_low, q_high = np.quantile(finite, [alpha, 1.0 - alpha])
    estimate = statistic(frame)
    return float(2 * estimate - q_high), float(2 * estimate - q_low)


# ---------------------------------------------------------------------------------------------- statistics


def spread_ratio(values: Sequence[float], groups: Sequence[object]) -> float:
    """SD (ddof 1) of the group means divided by the pooled within-group SD; NaN below 2 groups or without spread."""
    v = np.asarray(values, dtype=float)
    g = np.asarray(groups, dtype=object).astype(str)
    keep = np.isfinite(v)
    v, g = v[keep], g[keep]
    _, inverse = np.unique(g, return_inverse=True)
    counts = np.bincount(inverse)
    if len(counts) < 2 or len(v) <= len(counts):
        return float("nan")
    means = np.bincount(inverse, weights=v) / counts
    within = float(np.sqrt(((v - means[inverse]) ** 2).sum() / (len(v) - len(counts))))
    return float(np.std(means, ddof=1) / within) if within > 0 else float("nan")


def _line(x: np.ndarray, y: np.ndarray) -> tuple[float, float] | None:
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 2 or np.ptp(x) == 0:
        return None
    slope, intercept = np.polyfit(x, y, 1)
    return float(slope), float(intercept)


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def _median_difference(frame: pd.DataFrame, column: str, side: pd.Series) -> float:
    """Median of ``column`` where ``side`` is True minus its median where False."""
    values = frame[column].to_numpy(dtype=float)
    mask = np.asarray(side, dtype=bool)
    a, b = values[mask], values[~mask]
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    return float(np.median(a) - np.median(b)) if len(a) and len(b) else float("nan")


# ---------------------------------------------------------------------------------------------- per-model tables


def _wide(metrics: pd.DataFrame, rows: pd.Series, column: str) -> pd.DataFrame:
    picked = metrics[rows]
    wide = picked.pivot_table(index="model", columns=column, values="value", aggfunc="first")
    wide.index = pd.Index(wide.index.astype(str).to_numpy(dtype=object), name="model")
    wide.columns = [str(c) for c in wide.columns]
    return wide


def model_table(metrics: pd.DataFrame, registry: pd.DataFrame) -> pd.DataFrame:
    """Registry columns ``group, training_source, source_family, finetune_route`` indexed by model id, for
    the paper's models (:func:`~clip_robustness.models.registry.paper_rows`) that have rows in ``metrics``: every
    claim is tested on these, so a user's own models and catalogue checkpoints never change a finding."""
    paper = paper_rows(registry)
    meta = paper.set_index(paper["model_id"].astype(str))
    meta = meta.reindex(sorted(set(metrics["model"].dropna().astype(str)) & set(meta.index)))
    out = pd.DataFrame(index=meta.index)
    out["group"] = meta["group"].astype(str)
    out["training_source"] = meta["training_source"].astype(str)
    out["source_family"] = out["training_source"].map(source_family)
    route = meta["finetune_route"] if "finetune_route" in meta.columns else pd.Series("none", index=meta.index)
    out["finetune_route"] = route.fillna("none").astype(str).replace("", "none")
    out.index = pd.Index(out.index.astype(str).to_numpy(dtype=object), name="model")
    return out.astype(object)  # plain object columns: bootstrap resampling of arrow strings is ~10x slower


def _counts(groups: pd.Series) -> str:
    counts = groups.value_counts()
    return "; ".join(f"{g}={int(counts[g])}" for g in sorted(counts.index, key=str))


def _eligible(groups: pd.Series, min_models: int) -> list[object]:
    counts = groups.value_counts()
    return sorted((g for g in counts.index if counts[g] >= min_models), key=str)


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


def _row(claim: Claim, value: float, n_models: str, ci: tuple[float, float], reason: str = "") -> dict[str, Any]:
    judged = verdict(ci[0], ci[1], claim.threshold, claim.side) if not reason else UNDETERMINED
    if not reason and judged == UNDETERMINED:
        reason = "the interval straddles the threshold"
    return {
        "claim_id": claim.claim_id, "claim": claim.claim, "statistic": claim.statistic, "value": float(value),
        "n_models": n_models, "ci_low": float(ci[0]), "ci_high": float(ci[1]), "threshold": float(claim.threshold),
        "verdict": judged, "reason": reason, "figure": claim.figure,
    }


def _evaluate(
    claim: Claim,
    frame: pd.DataFrame,
    strata: pd.Series,
    statistic: Callable[[pd.DataFrame], float],
    settings: FindingsSettings,
    too_few: str,
    n_models: str,
) -> dict[str, Any]:
    """One row: the statistic on ``frame``, its bootstrap interval, the verdict (``too_few``: why n is too small, or "")."""
    value = statistic(frame) if len(frame) else float("nan")
    if too_few:
        return _row(claim, value, n_models, (float("nan"), float("nan")), too_few)
    if not np.isfinite(value):
        return _row(claim, value, n_models, (float("nan"), float("nan")), "the statistic cannot be computed from these rows")
    ci = bootstrap_interval(frame, strata, statistic, settings.bootstrap_samples, settings.seed)
    ci = (float(np.clip(ci[0], *claim.bounds)), float(np.clip(ci[1], *claim.bounds)))
    if not np.isfinite(ci[0]):
        return _row(claim, value, n_models, ci, "most bootstrap resamples give no value")
    return _row(claim, value, n_models, ci)


def _too_few(groups: pd.Series, required: Sequence[object], min_models: int) -> str:
    counts = groups.value_counts()
    short = [f"{g} ({int(counts.get(g, 0))})" for g in required if counts.get(g, 0) < min_models]
    return f"fewer than {min_models} models in {', '.join(short)}" if short else ""


# ---------------------------------------------------------------------------------------------- claims

FIGURE_FACTOR = "results/figures/factor_effective_robustness.png"
FIGURE_FACTOR_SOURCE = "results/figures/factor_robustness_by_source.png"
FIGURE_OOD = "results/figures/ood_detection.png; results/tables/ood_correlations.csv"
FIGURE_OOD_FT = "results/figures/ood_detection.png (CLIP-FT by route)"
FIGURE_CALIBRATION = "results/figures/calibration.png"
FIGURE_SHIFT = "results/figures/calibration_shift.png"


def _factor_claims(metrics: pd.DataFrame, models: pd.DataFrame, settings: FindingsSettings) -> list[dict[str, Any]]:
    er = _wide(metrics, (metrics["dataset"] == IMAGENET_X_DATASET) & (metrics["metric"] == "effective_robustness"), "factor")
    factors = [f for f in IMAGENET_X_FACTORS if f in er.columns]
    frame = models[models["group"].isin([ZERO_SHOT, STANDARD])].join(er.reindex(columns=factors), how="inner")
    too_few = _too_few(frame["group"], [ZERO_SHOT, STANDARD], settings.min_models)
    if not factors:
        too_few = too_few or "no effective_robustness rows (fewer than 2 standard models?)"
    n_models = _counts(frame["group"])

    def count_better(part: pd.DataFrame) -> float:
        side = part["group"] == ZERO_SHOT
        diffs = [_median_difference(part, f, side) for f in factors]
        return float(sum(d > 0 for d in diffs)) if diffs and all(np.isfinite(diffs)) else float("nan")

    def pose(part: pd.DataFrame) -> float:
        return _median_difference(part, "pose", part["group"] == ZERO_SHOT) if "pose" in part else float("nan")

    rows = [
        _evaluate(Claim("1a", "Zero-shot CLIP is more robust than other ImageNet classifiers on 6 of the 10 ImageNet-X factors",
                        "number of factors where median effective robustness of zero-shot CLIP minus that of the standard "
                        f"models is > 0 (of {len(factors)})", FIGURE_FACTOR, MAJORITY_OF_FACTORS, "at_least", (0.0, float(len(factors)))),
                  frame, frame["group"], count_better, settings, too_few, n_models),
        _evaluate(Claim("1b", "... and less robust on pose",
                        "median effective robustness on pose: zero-shot CLIP minus standard models (fraction)",
                        FIGURE_FACTOR, 0.0, "below"),
                  frame, frame["group"], pose, settings, too_few, n_models),
    ]

    clip = models[models["group"] == ZERO_SHOT].join(er.reindex(columns=factors), how="inner")
    sources = _eligible(clip["source_family"], settings.min_models)
    clip = clip[clip["source_family"].isin(sources)]
    too_few = "" if len(sources) >= 2 else f"fewer than 2 training sources with >= {settings.min_models} zero-shot CLIP models"

    def source_spread(part: pd.DataFrame) -> float:
        ratios = [spread_ratio(part[f], part["source_family"]) for f in factors]
        ratios = [r for r in ratios if np.isfinite(r)]
        return float(np.median(ratios)) if ratios else float("nan")

    rows.append(_evaluate(
        Claim("2", "Training source changes factor robustness",
              "zero-shot CLIP, per factor: SD of per-source mean effective robustness / pooled within-source SD; "
              "median over factors", FIGURE_FACTOR_SOURCE, SPREAD_RATIO, "above"),
        clip, clip["source_family"], source_spread, settings, too_few, _counts(clip["source_family"]),
    ))
    return rows


def _ood_frame(metrics: pd.DataFrame, models: pd.DataFrame, settings: FindingsSettings) -> tuple[pd.DataFrame, list[str]]:
    accuracy = metrics[(metrics["metric"] == "top1") & (metrics["dataset"] == settings.in_distribution)
                       & metrics["factor"].isna()].set_index("model")["value"].rename("accuracy")
    auroc = _wide(metrics, (metrics["metric"] == "auroc") & (metrics["score"] == settings.ood_score), "dataset")
    sets = [d for d in settings.ood_sets if d in auroc.columns]
    return models.join(accuracy, how="inner").join(auroc.reindex(columns=sets), how="inner"), sets


def _ood_claims(metrics: pd.DataFrame, models: pd.DataFrame, settings: FindingsSettings) -> list[dict[str, Any]]:
    frame, sets = _ood_frame(metrics, models, settings)
    clip = frame[frame["group"] == ZERO_SHOT]
    sources = _eligible(clip["source_family"], settings.min_models)
    clip = clip[clip["source_family"].isin(sources)]
    too_few = "" if sources and sets else f"no training source with >= {settings.min_models} zero-shot CLIP models and AUROC rows"

    def median_r(part: pd.DataFrame) -> float:
        rs = [_pearson(g["accuracy"].to_numpy(), g[d].to_numpy()) for _, g in part.groupby("source_family") for d in sets]
        rs = [r for r in rs if np.isfinite(r)]
        return float(np.median(rs)) if rs else float("nan")

    rows = [_evaluate(
        Claim("3", "Within a training source, zero-shot CLIP's ImageNet accuracy is strongly correlated with OOD detection",
              f"Pearson r of ImageNet accuracy vs AUROC ({settings.ood_score}) per training source and OOD set; median r",
              FIGURE_OOD, STRONG_CORRELATION, "above", (-1.0, 1.0)),
        clip, clip["source_family"], median_r, settings, too_few, _counts(clip["source_family"]),
    )]

    all_clip = frame[frame["group"].isin(CLIP_GROUPS)]

    def residual_spread(part: pd.DataFrame, by: str, among: pd.Series) -> float:
        ratios = []
        for d in sets:
            fit = _line(part["accuracy"].to_numpy(), part[d].to_numpy())
            if fit is None:
                continue
            residual = part[d] - (fit[0] * part["accuracy"] + fit[1])
            ratios.append(spread_ratio(residual[among.to_numpy()], part.loc[among.to_numpy(), by]))
        ratios = [r for r in ratios if np.isfinite(r)]
        return float(np.median(ratios)) if ratios else float("nan")

    sources = _eligible(all_clip.loc[all_clip["group"] == ZERO_SHOT, "source_family"], settings.min_models)
    zs_strata = all_clip["source_family"].where(all_clip["group"] == ZERO_SHOT, CLIP_FT)
    by_source = all_clip[(all_clip["group"] == CLIP_FT) | all_clip["source_family"].isin(sources)]
    too_few = "" if len(sources) >= 2 and sets else f"fewer than 2 training sources with >= {settings.min_models} zero-shot CLIP models"
    rows.append(_evaluate(
        Claim("4a", "Training source strongly affects OOD detection",
              "AUROC residual from one line of AUROC on ImageNet accuracy over all CLIP models, per OOD set; zero-shot CLIP "
              "by training source: SD of source means / pooled within-source SD; median over OOD sets", FIGURE_OOD,
              SPREAD_RATIO, "above"),
        by_source, zs_strata[by_source.index],
        lambda part: residual_spread(part, "source_family", part["group"] == ZERO_SHOT),
        settings, too_few, _counts(zs_strata[by_source.index]),
    ))
    routes = _eligible(all_clip["finetune_route"], settings.min_models)
    by_route = all_clip[all_clip["finetune_route"].isin(routes)]
    too_few = "" if len(routes) >= 2 and sets else f"fewer than 2 fine-tuning routes with >= {settings.min_models} CLIP models"
    rows.append(_evaluate(
        Claim("4b", "Fine-tuning procedure strongly affects OOD detection",
              "the same AUROC residuals, all CLIP models grouped by finetune_route (none = zero-shot): "
              "SD of route means / pooled within-route SD; median over OOD sets", FIGURE_OOD_FT, SPREAD_RATIO, "above"),
        by_route, by_route["finetune_route"],
        lambda part: residual_spread(part, "finetune_route", pd.Series(True, index=part.index)),
        settings, too_few, _counts(by_route["finetune_route"]),
    ))
    return rows


def _calibration_claims(metrics: pd.DataFrame, models: pd.DataFrame, settings: FindingsSettings) -> list[dict[str, Any]]:
    id_test = id_test_dataset(settings.in_distribution)
    plain = metrics["factor"].isna() & metrics["score"].isna()
    at_id = _wide(metrics, plain & (metrics["dataset"] == id_test) & metrics["metric"].isin(["top1", "ece", "ece_ts"]), "metric")
    frame = models.join(at_id.reindex(columns=["top1", "ece", "ece_ts"]), how="inner")

    pair = frame[frame["group"].isin([ZERO_SHOT, STANDARD])]

    def share_standard_better(part: pd.DataFrame) -> float:
        clip, standard = part.loc[part["group"] == ZERO_SHOT, "ece"].dropna(), part.loc[part["group"] == STANDARD, "ece"].dropna()
        return float((standard < clip.median()).mean()) if len(clip) and len(standard) else float("nan")

    rows = [_evaluate(
        Claim("5", "CLIP models are not consistently better calibrated than other ImageNet classifiers",
              f"pre-TS ECE on {id_test}: share of standard models with ECE below the median zero-shot CLIP's",
              FIGURE_CALIBRATION, SHARE_BETTER_CALIBRATED, "above", (0.0, 1.0)),
        pair, pair["group"], share_standard_better, settings,
        _too_few(pair["group"], [ZERO_SHOT, STANDARD], settings.min_models), _counts(pair["group"]),
    )]

    both = frame[frame["group"] != CLIP_FT]
    side = both["group"].where(both["group"] == ZERO_SHOT, "others")

    def trend_gap(part: pd.DataFrame) -> float:
        is_clip = (part["group"] == ZERO_SHOT).to_numpy()
        fits = [_line(part.loc[mask, "top1"].to_numpy(), part.loc[mask, "ece_ts"].to_numpy()) for mask in (is_clip, ~is_clip)]
        if fits[0] is None or fits[1] is None:
            return float("nan")
        x0 = float(part["top1"].median())
        return (fits[0][0] * x0 + fits[0][1]) - (fits[1][0] * x0 + fits[1][1])

    rows.append(_evaluate(
        Claim("6", "After temperature scaling, CLIP models follow a consistent trend, separate from the other models",
              f"post-TS ECE vs accuracy on {id_test}: zero-shot CLIP's line minus the other classifiers' line at the "
              "median accuracy (ECE points)", FIGURE_CALIBRATION, TREND_GAP_ECE, "outside"),
        both, side, trend_gap, settings, _too_few(side, [ZERO_SHOT, "others"], settings.min_models), _counts(side),
    ))

    conditions = list(dict.fromkeys(fold_imagenet_c(settings.test_conditions)))
    shifted = _wide(metrics, plain & metrics["dataset"].isin(conditions) & (metrics["metric"] == "ece_ts"), "dataset")
    present = [c for c in conditions if c in shifted.columns]
    frame7 = models.join(shifted.reindex(columns=present), how="inner")
    frame7 = frame7[frame7["group"] != CLIP_FT]
    side7 = frame7["group"].where(frame7["group"] == ZERO_SHOT, "others")

    def shift_gap(part: pd.DataFrame) -> float:
        is_clip = part["group"] == ZERO_SHOT
        gaps = [_median_difference(part, c, is_clip) for c in present]
        gaps = [g for g in gaps if np.isfinite(g)]
        return float(np.median(gaps)) if gaps else float("nan")

    too_few = _too_few(side7, [ZERO_SHOT, "others"], settings.min_models) or ("" if present else "no post-TS ECE rows of a test condition")
    rows.append(_evaluate(
        Claim("7", "A temperature fitted on ImageNet keeps CLIP's uncertainty reasonable under distribution shift",
              f"per test condition ({', '.join(present) or 'none'}; {IMAGENET_C_DATASET} = mean over corruptions and "
              "severities): median post-TS ECE of zero-shot CLIP minus that of the other classifiers; median over "
              "conditions (ECE points)", FIGURE_SHIFT, 0.0, "below"),
        frame7, side7, shift_gap, settings, too_few, _counts(side7),
    ))
    return rows


def findings_table(metrics: pd.DataFrame, registry: pd.DataFrame, settings: FindingsSettings) -> pd.DataFrame:
    """The findings table (columns :data:`FINDINGS_COLUMNS`), one row per claim, from the aggregate tidy
    ``metrics`` table and the model ``registry`` table (``model_id, group, training_source, finetune_route``)."""
    missing = [c for c in ("model_id", "group", "training_source") if c not in registry.columns]
    if missing:
        raise ValueError(f"model registry lacks column(s) {missing} needed for the findings")
    models = model_table(metrics, registry)
    rows = [
        *_factor_claims(metrics, models, settings),
        *_ood_claims(metrics, models, settings),
        *_calibration_claims(metrics, models, settings),
    ]
    table = pd.DataFrame(rows, columns=list(FINDINGS_COLUMNS))
    for row in table.itertuples():
        log.info("finding %s: %s (value %.4g, %s) [%s]", row.claim_id, row.verdict, row.value, row.n_models, row.reason)
    return table
