"""Out-of-distribution detection: scores, AUROC and FPR@95 (docs/methods.md, "Metric definitions").

A score is higher for images the model believes in-distribution (ID). ID (ImageNet val) is the
positive class. Scores, all over the 1000 ImageNet classes:

- ``msp``: maximum softmax probability, in (0, 1] (the primary score by default);
- ``mcm``: maximum concept matching (Ming et al. 2022), the MSP of ``logits / logit_scale``, i.e. the
  softmax of the image-text cosine similarities; zero-shot CLIP only, where ``logit_scale`` (the
  exponentiated CLIP temperature, ~100) is known;
- ``max_logit``: the largest logit (unbounded).
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import roc_auc_score

from clip_robustness.datasets.label_spaces import N_IMAGENET_CLASSES

#: Names of the OOD scores, in the order rows are written.
OOD_SCORES = ("msp", "mcm", "max_logit")

_BLOCK_ROWS = 4096


def _check_logits(logits: np.ndarray) -> None:
    if logits.ndim != 2 or logits.shape[1] != N_IMAGENET_CLASSES:
        raise ValueError(f"OOD score: expected logits of shape [n, {N_IMAGENET_CLASSES}], got {list(logits.shape)}")


def max_softmax_probability(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """MSP of ``logits / temperature`` over the 1000 classes: float64 [n] in (0, 1].

    Computed as ``1 / sum(exp(z - max z))`` in float64, so confident images keep distinct scores
    (float32 would round many of them to exactly 1.0 and create ties).
    """
    logits = np.asarray(logits)
    _check_logits(logits)
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
    out = np.empty(len(logits), dtype=np.float64)
    for start in range(0, len(logits), _BLOCK_ROWS):
        z = logits[start : start + _BLOCK_ROWS].astype(np.float64) / temperature
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        out[start : start + len(z)] = 1.0 / z.sum(axis=1)
    return out


def max_logit(logits: np.ndarray) -> np.ndarray:
    """The largest of the 1000 logits per image, float64 [n]."""
    logits = np.asarray(logits)
    _check_logits(logits)
    return logits.max(axis=1).astype(np.float64)


def mcm_score(logits: np.ndarray, logit_scale: float) -> np.ndarray:
    """Maximum concept matching: MSP of ``logits / logit_scale`` (float64 [n] in (0, 1]).

    ``logit_scale``: the factor zero-shot CLIP multiplied its cosine similarities by
    (``model.logit_scale.exp()``, about 100 for trained models).
    """
    if not (math.isfinite(logit_scale) and logit_scale > 0):
        raise ValueError(f"MCM needs a positive logit_scale (the exponentiated CLIP logit scale), got {logit_scale!r}")
    return max_softmax_probability(logits, temperature=logit_scale)


def ood_scores(
    logits: np.ndarray, logit_scale: float | None = None, msp: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Every applicable OOD score per image: ``msp``, ``max_logit`` and, given ``logit_scale``, ``mcm``.

    ``msp``: the MSP over the 1000 classes if already computed (e.g. the confidence of
    :func:`~clip_robustness.metrics.calibration.predict` at temperature 1 on the full label space).
    """
    if msp is None:
        msp = max_softmax_probability(logits)
    elif np.shape(msp) != (len(logits),):
        raise ValueError(f"msp has shape {list(np.shape(msp))}, expected [{len(logits)}]")
    scores = {"msp": np.asarray(msp, dtype=np.float64), "max_logit": max_logit(logits)}
    if logit_scale is not None:
        scores["mcm"] = mcm_score(logits, logit_scale)
    return {name: scores[name] for name in OOD_SCORES if name in scores}


def _check_scores(id_scores: np.ndarray, ood_scores_: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    id_scores = np.asarray(id_scores, dtype=np.float64).ravel()
    ood_scores_ = np.asarray(ood_scores_, dtype=np.float64).ravel()
    if len(id_scores) == 0 or len(ood_scores_) == 0:
        raise ValueError(f"OOD detection needs ID and OOD images, got {len(id_scores)} ID and {len(ood_scores_)} OOD")
    if not (np.isfinite(id_scores).all() and np.isfinite(ood_scores_).all()):
        raise ValueError("OOD detection: scores must be finite")
    return id_scores, ood_scores_


def auroc(id_scores: np.ndarray, ood_scores_: np.ndarray) -> float:
    """Area under the ROC curve in [0, 1], ID positive (scikit-learn's ``roc_auc_score``).

    Equals the probability that a random ID image scores above a random OOD image, ties counted
    one half: 0.5 for indistinguishable scores, 1 for perfect separation.
    """
    id_scores, ood_scores_ = _check_scores(id_scores, ood_scores_)
    truth = np.concatenate([np.ones(len(id_scores), dtype=np.int8), np.zeros(len(ood_scores_), dtype=np.int8)])
    return float(roc_auc_score(truth, np.concatenate([id_scores, ood_scores_])))


def fpr_at_tpr(id_scores: np.ndarray, ood_scores_: np.ndarray, tpr: float = 0.95) -> float:
    """False-positive rate at ``tpr`` true-positive rate ("FPR@95" for 0.95), fraction in [0, 1].

    ID is positive and an image is declared ID when ``score >= threshold``. The threshold is the
    largest score that keeps at least ``tpr`` of the ID images: the ``ceil(tpr * n_id)``-th highest
    ID score. Ties: every ID image scored exactly at the threshold is kept (the kept fraction may
    exceed ``tpr``), and every OOD image scored exactly at the threshold counts as a false positive.
    FPR = fraction of OOD images with ``score >= threshold``. Lower is better.
    """
    id_scores, ood_scores_ = _check_scores(id_scores, ood_scores_)
    if not 0 < tpr <= 1:
        raise ValueError(f"tpr must be in (0, 1], got {tpr}")
    # round() guards against 0.95 * n landing a hair above an integer in binary floating point
    n_keep = max(1, math.ceil(round(tpr * len(id_scores), 9)))
    threshold = np.sort(id_scores)[::-1][n_keep - 1]
    return float(np.mean(ood_scores_ >= threshold))
