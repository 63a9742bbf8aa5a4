"""Vectorised resampling for the findings table: cluster bootstrap weights, cluster permutations, and weighted
statistics computed for every resample at once (numpy over a leading resample axis).

A resample is a row of a weight matrix ``w`` of shape ``(B, n)``: ``w[b, i]`` is how many times model ``i`` is
drawn in resample ``b`` (0, 1, 2, ...). Every statistic below takes such weights, so one call evaluates all
resamples; the point estimate is the same call with one row of ones. Fits (least-squares lines, correlations,
group means and medians) are therefore re-estimated inside every resample at no extra cost in Python.

The methods are written down in docs/methods.md ("Findings statistics").
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

#: A trailing input resolution in an architecture name (``vit_base_patch16_clip_384``, ``convnext_large_mlp_320``):
#: checkpoints that differ only by it are near-duplicates (one network fine-tuned or evaluated at another size).
RESOLUTION_SUFFIX = re.compile(r"[_-](\d{3})$")


def architecture_stem(architecture: object) -> str:
    """``architecture`` without a trailing 3-digit resolution suffix (``vit_base_patch16_clip_384`` ->
    ``vit_base_patch16_clip``) and without open_clip's ``-quickgelu`` variant marker."""
    text = str(architecture).replace("-quickgelu", "")
    return RESOLUTION_SUFFIX.sub("", text)


def cluster_ids(models: pd.DataFrame) -> np.ndarray:
    """Integer cluster of each model (row): near-duplicate checkpoints share one.

    Rule: same ``group``, same ``training_source``, same ``finetune_route`` and the same architecture stem
    (:func:`architecture_stem`). Checkpoints of one network at several resolutions, epochs or tags of one source
    are thus resampled and permuted together, never as independent models.
    """
    key = (
        models["group"].astype(str)
        + "|"
        + models["training_source"].astype(str)
        + "|"
        + models["finetune_route"].astype(str)
        + "|"
        + models["architecture"].map(architecture_stem)
    )
    return pd.factorize(key, sort=True)[0].astype(np.int64)


def cluster_bootstrap_weights(
    strata: np.ndarray, clusters: np.ndarray, samples: int, rng: np.random.Generator
) -> np.ndarray:
    """``(samples, n)`` weights of a cluster bootstrap: within each stratum, its ``K`` clusters are drawn ``K`` times
    with replacement (a multinomial count per cluster) and every model of a drawn cluster gets that count.

    ``strata``, ``clusters``: one value per model; a cluster must lie within one stratum."""
    strata = np.asarray(strata)
    clusters = np.asarray(clusters)
    weights = np.zeros((samples, len(clusters)), dtype=np.float64)
    for stratum in pd.unique(strata):
        rows = np.flatnonzero(strata == stratum)
        members, inverse = np.unique(clusters[rows], return_inverse=True)
        k = len(members)
        counts = rng.multinomial(k, np.full(k, 1.0 / k), size=samples)
        weights[:, rows] = counts[:, inverse]
    return weights


def cluster_permutations(
    labels: np.ndarray, clusters: np.ndarray, blocks: np.ndarray, samples: int, rng: np.random.Generator
) -> np.ndarray:
    """``(samples, n)`` labels with the clusters' labels shuffled among the clusters of each block.

    ``labels``: one integer per model, constant within a cluster; a negative label (a reference model that is
    not compared) is never moved. ``blocks``: the permutation stays within each block (e.g. a pretraining source)."""
    labels = np.asarray(labels)
    clusters = np.asarray(clusters)
    out = np.broadcast_to(labels, (samples, len(labels))).copy()
    for block in pd.unique(np.asarray(blocks)[labels >= 0]):
        rows = np.flatnonzero((np.asarray(blocks) == block) & (labels >= 0))
        members, first, inverse = np.unique(clusters[rows], return_index=True, return_inverse=True)
        per_cluster = np.broadcast_to(labels[rows][first], (samples, len(members)))
        out[:, rows] = rng.permuted(per_cluster, axis=1)[:, inverse]
    return out


def within_block_shuffles(blocks: np.ndarray, samples: int, rng: np.random.Generator) -> np.ndarray:
    """``(samples, n)`` row indices: each row's index is shuffled among the rows of its block (model level)."""
    blocks = np.asarray(blocks)
    n = len(blocks)
    out = np.broadcast_to(np.arange(n), (samples, n)).copy()
    for block in pd.unique(blocks):
        rows = np.flatnonzero(blocks == block)
        out[:, rows] = rng.permuted(np.broadcast_to(rows, (samples, len(rows))), axis=1)
    return out


def cluster_sign_flips(clusters: np.ndarray, samples: int, rng: np.random.Generator) -> np.ndarray:
    """``(samples, n)`` signs +-1, one random sign per cluster (a paired test's null: the two values of each
    model, e.g. ECE before and after scaling, are exchangeable)."""
    _, inverse = np.unique(np.asarray(clusters), return_inverse=True)
    signs = rng.choice(np.array([-1.0, 1.0]), size=(samples, inverse.max() + 1))
    return signs[:, inverse]


def jackknife_weights(clusters: np.ndarray) -> np.ndarray:
    """``(K, n)`` weights of the delete-one-cluster jackknife: row ``k`` leaves out every model of cluster ``k``."""
    _, inverse = np.unique(np.asarray(clusters), return_inverse=True)
    return (inverse[None, :] != np.arange(inverse.max() + 1)[:, None]).astype(np.float64)


def bca_interval(estimate: float, boot: np.ndarray, jackknife: np.ndarray, level: float) -> tuple[float, float]:
    """Bias-corrected and accelerated percentile interval (Efron 1987) from the bootstrap values ``boot`` and the
    delete-one-cluster jackknife values ``jackknife`` (NaN entries ignored). The bias correction ``z0`` centres the
    interval on the estimate where resampling shifts the statistic (an absolute gap, a share of variance); the
    acceleration comes from the jackknife. Falls back to the percentile interval where ``z0`` is not finite."""
    boot = boot[np.isfinite(boot)]
    jack = jackknife[np.isfinite(jackknife)]
    tail = (1.0 - level) / 2.0
    share_below = (np.sum(boot < estimate) + 0.5 * np.sum(boot == estimate)) / len(boot)
    z0 = stats.norm.ppf(share_below)
    quantiles = np.array([tail, 1.0 - tail])
    if np.isfinite(z0):
        spread = jack.mean() - jack if len(jack) >= 3 else np.zeros(1)
        denominator = 6.0 * np.sum(spread**2) ** 1.5
        a = float(np.sum(spread**3) / denominator) if denominator > 0 else 0.0
        z = stats.norm.ppf(quantiles)
        quantiles = stats.norm.cdf(z0 + (z0 + z) / (1.0 - a * (z0 + z)))
    low, high = np.quantile(boot, np.clip(quantiles, 0.0, 1.0))
    return float(low), float(high)


# ---------------------------------------------------------------------------------------------- weighted statistics


def _prepare(values: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    v = np.broadcast_to(np.asarray(values, dtype=np.float64), weights.shape)
    finite = np.isfinite(v)
    return np.where(finite, v, 0.0), np.where(finite, weights, 0.0)


def weighted_median(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``(B,)`` median of ``values`` (``(n,)`` or ``(B, n)``) with integer ``weights`` ``(B, n)`` (a bootstrap
    resample's multiplicities): the median of the multiset, the mean of the two middle values when the total is
    even. NaN values carry no weight; NaN where the total weight is 0."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:  # one order for every resample
        finite = np.isfinite(values)
        order = np.argsort(np.where(finite, values, np.inf), kind="stable")
        vs = np.broadcast_to(np.where(finite, values, np.inf)[order], weights.shape)
        cw = np.cumsum(np.where(finite, weights, 0.0)[:, order], axis=1)
    else:
        v = np.broadcast_to(values, weights.shape)
        w = np.where(np.isfinite(v), weights, 0.0)
        v = np.where(np.isfinite(v), v, np.inf)
        order = np.argsort(v, axis=1, kind="stable")
        vs = np.take_along_axis(v, order, axis=1)
        cw = np.cumsum(np.take_along_axis(w, order, axis=1), axis=1)
    half = cw[:, -1:] / 2.0
    last = vs.shape[1] - 1
    low = np.minimum((cw < half).sum(axis=1), last)
    high = np.minimum((cw <= half).sum(axis=1), last)
    rows = np.arange(vs.shape[0])
    with np.errstate(invalid="ignore"):
        med = (vs[rows, low] + vs[rows, high]) / 2.0
    return np.where(cw[:, -1] > 0, med, np.nan)


def weighted_mean(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``(B,)`` weighted mean; NaN values carry no weight; NaN where the total weight is 0."""
    v, w = _prepare(values, weights)
    total = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (w * v).sum(axis=1) / total, np.nan)


def _moments(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, ...]:
    """Weighted sums ``(S_w, mean_x, mean_y, S_xx, S_yy, S_xy)`` per resample (centred), NaN pairs carrying no weight.
    One-dimensional ``x``/``y`` go through matrix products (no ``(B, n)`` copies)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    both = np.isfinite(x) & np.isfinite(y)
    w = np.where(both, weights, 0.0)
    x0, y0 = np.where(both, x, 0.0), np.where(both, y, 0.0)
    # centre on a fixed point first: the sums of squares below then lose no precision
    cx = float(np.nanmean(np.where(both, x, np.nan))) if np.any(both) else 0.0
    cy = float(np.nanmean(np.where(both, y, np.nan))) if np.any(both) else 0.0
    xc, yc = np.where(both, x0 - cx, 0.0), np.where(both, y0 - cy, 0.0)
    total = w.sum(axis=1)
    if xc.ndim == 1 and yc.ndim == 1:
        sx, sy = w @ xc, w @ yc
        sxx, syy, sxy = w @ (xc * xc), w @ (yc * yc), w @ (xc * yc)
    else:
        sx, sy = (w * xc).sum(axis=1), (w * yc).sum(axis=1)
        sxx, syy, sxy = (w * xc * xc).sum(axis=1), (w * yc * yc).sum(axis=1), (w * xc * yc).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx, my = sx / total, sy / total
        return total, mx + cx, my + cy, sxx - sx * mx, syy - sy * my, sxy - sx * my


def weighted_line(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(slope, intercept)``, each ``(B,)``: the weighted least-squares line of ``y`` on ``x`` per resample (NaN
    where fewer than 2 distinct x carry weight)."""
    total, mx, my, sxx, _, sxy = _moments(x, y, weights)
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = np.where(sxx > 1e-12 * np.maximum(total, 1.0), sxy / sxx, np.nan)
    return slope, my - slope * mx


def weighted_pearson(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``(B,)`` Pearson r of ``x`` and ``y`` under ``weights`` (NaN without spread in either)."""
    total, _, _, sxx, syy, sxy = _moments(x, y, weights)
    scale = np.maximum(total, 1.0) * 1e-12
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((sxx > scale) & (syy > scale), sxy / np.sqrt(sxx * syy), np.nan)


def omega_squared(values: np.ndarray, weights: np.ndarray, labels: np.ndarray, n_labels: int) -> np.ndarray:
    """``(B,)`` omega squared of a one-way ANOVA of ``values`` by ``labels`` (ints ``0..n_labels-1``; negative
    labels are left out): the share of the variance explained by the grouping, corrected for the number of groups
    (Hays' estimator, ``(SSB - (k - 1) MSW) / (SST + MSW)``; 0 expected under no effect, may be slightly negative).
    NaN with fewer than 2 groups present or no within-group degrees of freedom."""
    v, w = _prepare(values, weights)
    lab = np.broadcast_to(labels, w.shape)
    w = np.where(lab >= 0, w, 0.0)
    onehot = lab[..., None] == np.arange(n_labels)
    n_g = np.einsum("bn,bnk->bk", w, onehot)
    s_g = np.einsum("bn,bnk->bk", w * v, onehot)
    q = (w * v * v).sum(axis=1)
    n = n_g.sum(axis=1)
    s = s_g.sum(axis=1)
    present = n_g > 0
    k = present.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        group_part = np.where(present, s_g**2 / np.where(present, n_g, 1.0), 0.0).sum(axis=1)
        ssb = group_part - s * s / n
        ssw = q - group_part
        sst = q - s * s / n
        msw = ssw / (n - k)
        omega = (ssb - (k - 1) * msw) / (sst + msw)
    return np.where((k >= 2) & (n - k > 0) & (sst > 0), omega, np.nan)


def distinct_models(weights: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``(B,)`` number of distinct models (weight > 0) among the rows where ``mask`` holds."""
    return ((weights > 0) & np.broadcast_to(mask, weights.shape)).sum(axis=1)


def nan_median_rows(stack: Sequence[np.ndarray]) -> np.ndarray:
    """Median over a list of ``(B,)`` arrays, ignoring NaN (NaN where all are NaN)."""
    arr = np.vstack([np.asarray(a, dtype=np.float64) for a in stack])
    finite = np.isfinite(arr)
    out = np.full(arr.shape[1], np.nan)
    some = finite.any(axis=0)
    if some.any():
        out[some] = np.nanmedian(arr[:, some], axis=0)
    return out


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error rate), NaN kept in place."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full_like(p, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    if len(finite) == 0:
        return out
    order = finite[np.argsort(p[finite], kind="stable")]
    m = len(order)
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out[order] = adjusted
    return out
