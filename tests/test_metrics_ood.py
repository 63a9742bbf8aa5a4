"""OOD scores, AUROC and FPR@95 (docs/methods.md, "OOD scores and polarity"). ID is the positive class."""

import numpy as np
import pytest
import torch
from scipy.stats import mannwhitneyu
from sklearn.metrics import roc_curve

from clip_robustness.metrics.ood import auroc, fpr_at_tpr, max_logit, max_softmax_probability, mcm_score, ood_scores


def _sklearn_fpr_at_tpr(id_scores, ood, tpr=0.95):
    """Independent FPR@TPR: the first ROC point (thresholds decreasing, score >= threshold) reaching the TPR."""
    truth = np.r_[np.ones(len(id_scores)), np.zeros(len(ood))]
    fpr, tpr_curve, _ = roc_curve(truth, np.r_[id_scores, ood], drop_intermediate=False)
    return fpr[np.argmax(tpr_curve >= tpr)]


def test_auroc_equals_mann_whitney_u_statistic():
    rng = np.random.default_rng(0)
    id_scores, ood = rng.normal(1, 1, 400), rng.normal(0, 1, 300)
    id_scores[:50] = np.round(id_scores[:50])  # some ties between the two sets
    ood[:50] = np.round(ood[:50])
    u = mannwhitneyu(id_scores, ood).statistic  # counts ties as one half
    assert auroc(id_scores, ood) == pytest.approx(u / (400 * 300), rel=1e-12)


def test_identical_id_and_ood_scores_give_auroc_one_half():
    scores = np.random.default_rng(1).random(100)
    assert auroc(scores, scores) == pytest.approx(0.5)


def test_fpr95_matches_hand_computed_example():
    # 20 ID scores 1..20: keeping 95% = 19 images puts the threshold at the 19th highest score, 2.
    # OOD scores 1, 2, 3, 0.5: those >= 2 are 2 and 3 -> FPR = 2 / 4 = 0.5
    id_scores = np.arange(1, 21, dtype=float)
    ood = np.array([1.0, 2.0, 3.0, 0.5])
    assert fpr_at_tpr(id_scores, ood) == 0.5


def test_fpr95_keeps_tied_id_images_and_counts_ood_at_the_threshold():
    # ID: ten scores of 1.0 and ten of 0.0: keeping 19 reaches into the 0.0 ties, so the threshold
    # is 0.0 and every ID image is kept; an OOD image scored exactly 0.0 is a false positive.
    id_scores = np.r_[np.ones(10), np.zeros(10)]
    assert fpr_at_tpr(id_scores, np.array([0.0, -0.1])) == 0.5
    assert fpr_at_tpr(id_scores, np.array([0.0, -0.1])) == _sklearn_fpr_at_tpr(id_scores, np.array([0.0, -0.1]))


def test_fpr95_matches_scikit_learn_roc_curve_on_random_scores_with_ties():
    rng = np.random.default_rng(2)
    for n_id, n_ood in ((1000, 700), (37, 11), (20, 5)):
        id_scores = np.round(rng.normal(1, 1, n_id), 1)
        ood = np.round(rng.normal(0, 1, n_ood), 1)
        assert fpr_at_tpr(id_scores, ood) == pytest.approx(_sklearn_fpr_at_tpr(id_scores, ood))


def test_msp_matches_torch_softmax_and_keeps_confident_scores_distinct():
    rng = np.random.default_rng(3)
    logits = (rng.standard_normal((64, 1000)) * 3).astype(np.float32)
    expected = torch.softmax(torch.from_numpy(logits).double(), dim=1).max(dim=1).values.numpy()
    np.testing.assert_allclose(max_softmax_probability(logits), expected, rtol=1e-12)
    confident = np.zeros((2, 1000), dtype=np.float32)
    confident[0, 0], confident[1, 0] = 25.0, 26.0  # MSP 1 - ~1e-8 and 1 - ~5e-9: equal in float32
    msp = max_softmax_probability(confident)
    assert msp[1] > msp[0]


def test_mcm_is_the_softmax_of_cosine_similarities():
    # zero-shot CLIP logits = logit_scale * cosine similarity; MCM = max softmax(cosine)
    rng = np.random.default_rng(4)
    cosine = rng.uniform(-0.3, 0.4, (16, 1000))
    logits = (100.0 * cosine).astype(np.float32)
    expected = torch.softmax(torch.from_numpy(logits.astype(np.float64) / 100.0), dim=1).max(dim=1).values.numpy()
    np.testing.assert_allclose(mcm_score(logits, 100.0), expected, rtol=1e-12)


def test_ood_scores_include_mcm_only_with_a_logit_scale():
    logits = np.zeros((3, 1000), dtype=np.float32)
    assert list(ood_scores(logits)) == ["msp", "max_logit"]
    assert list(ood_scores(logits, logit_scale=100.0)) == ["msp", "mcm", "max_logit"]
    np.testing.assert_array_equal(max_logit(logits), [0.0, 0.0, 0.0])


def test_mcm_without_positive_logit_scale_is_refused():
    with pytest.raises(ValueError, match="logit_scale"):
        mcm_score(np.zeros((1, 1000), dtype=np.float32), 0.0)


def test_empty_ood_set_is_refused():
    with pytest.raises(ValueError, match="0 OOD"):
        auroc(np.ones(3), np.array([]))
