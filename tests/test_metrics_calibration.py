"""ECE, NLL, temperature scaling and the calibration split (docs/methods.md, "Calibration split and temperature")."""

import numpy as np
import pytest
import torch

from clip_robustness.datasets.label_spaces import LabelSpace
from clip_robustness.metrics.accuracy import top1_correct
from clip_robustness.metrics.calibration import (
    calibration_split,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    predict,
)


def _overconfident(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits that are right ~60% of the time yet very peaked: the fitted temperature is > 1."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 1000, n)
    logits = rng.standard_normal((n, 1000)).astype(np.float32) * 2
    right = rng.random(n) < 0.6
    logits[np.arange(n)[right], labels[right]] += 12
    logits[np.arange(n)[~right], rng.integers(0, 1000, (~right).sum())] += 12
    return logits, labels


def test_ece_matches_hand_computed_example():
    # 4 bins over (0, 1]: (0, .25], (.25, .5], (.5, .75], (.75, 1]
    # (.75, 1]: conf .9, .9 -> mean conf .9, acc 1/2 -> |.5 - .9| = .4, weight 2/4 -> .2
    # (.5, .75]: conf .7, correct -> |1 - .7| = .3, weight 1/4 -> .075
    # (.25, .5]: conf .3, wrong -> |0 - .3| = .3, weight 1/4 -> .075
    # ECE = .2 + .075 + .075 = .35 -> 35 %
    ece = expected_calibration_error(np.array([0.9, 0.9, 0.7, 0.3]), np.array([True, False, True, False]), n_bins=4)
    assert ece == pytest.approx(35.0)


def test_ece_bins_are_open_below_and_closed_above():
    # 4 bins: .5 lies in (.25, .5] -> |1 - .5| * 1/2 = .25; .51 lies in (.5, .75] -> |0 - .51| * 1/2 = .255
    # total 50.5 %. With [lo, hi) bins both would share (.5, .75]: |.5 - .505| = .005 -> 0.5 %.
    ece = expected_calibration_error(np.array([0.5, 0.51]), np.array([True, False]), n_bins=4)
    assert ece == pytest.approx(50.5)


def test_ece_matches_torchmetrics_binned_calibration_error():
    torchmetrics = pytest.importorskip("torchmetrics")
    rng = np.random.default_rng(1)
    n, classes = 3000, 1000
    logits = rng.standard_normal((n, classes)).astype(np.float32) * 3
    labels = rng.integers(0, classes, n)
    logits[np.arange(n)[: n // 2], labels[: n // 2]] += 6
    ours = predict(logits, labels)
    theirs = torchmetrics.functional.classification.multiclass_calibration_error(
        torch.softmax(torch.from_numpy(logits).double(), dim=1),
        torch.from_numpy(labels),
        num_classes=classes,
        n_bins=15,
        norm="l1",
    )
    assert expected_calibration_error(ours.confidence, ours.correct, 15) == pytest.approx(100 * float(theirs), abs=1e-6)


def test_nll_matches_torch_cross_entropy_with_and_without_temperature():
    logits, labels = _overconfident(500)
    for temperature in (1.0, 2.5):
        expected = torch.nn.functional.cross_entropy(
            torch.from_numpy(logits).double() / temperature, torch.from_numpy(labels)
        ).item()
        assert negative_log_likelihood(logits, labels, temperature=temperature) == pytest.approx(expected, rel=1e-12)


def test_nll_on_a_subset_is_cross_entropy_over_the_subset_columns():
    logits, _ = _overconfident(300, seed=2)
    space = LabelSpace("subset", np.arange(0, 1000, 5))
    rng = np.random.default_rng(3)
    column = rng.integers(0, 200, 300)
    labels = space.class_indices[column]
    expected = torch.nn.functional.cross_entropy(
        torch.from_numpy(logits[:, ::5]).double(), torch.from_numpy(column)
    ).item()
    assert negative_log_likelihood(logits, labels, space) == pytest.approx(expected, rel=1e-12)


def _grouped_case():
    # classes 1, 2 form group 0 and class 5 group 1
    logits, _ = _overconfident(200, seed=4)
    space = LabelSpace("objectnet_like", np.array([1, 2, 5]), np.array([0, 0, 1]))
    labels = np.where(np.arange(200) % 2 == 0, 2, 5)
    return logits, labels, space, torch.from_numpy(logits[:, [1, 2, 5]]).double()


def test_sum_probability_pooling_scores_top1_and_calibration_on_each_groups_total_probability():
    logits, labels, space, z = _grouped_case()
    log_groups = torch.stack([torch.logsumexp(z[:, :2], dim=1), z[:, 2]], dim=1)  # log p(group) up to the same constant
    probs = torch.softmax(log_groups, dim=1).numpy()  # p(group 0) = p(1) + p(2) within {1, 2, 5}
    truth = np.where(labels == 2, 0, 1)
    out = predict(logits, labels, space, pooling="sum_probability")
    np.testing.assert_allclose(out.nll, -np.log(probs[np.arange(200), truth]), rtol=1e-10)
    np.testing.assert_allclose(out.confidence, probs.max(axis=1), rtol=1e-12)
    np.testing.assert_array_equal(out.correct, np.argmax(probs, axis=1) == truth)


def test_max_logit_pooling_predicts_the_group_of_the_top1_class_and_calibrates_that_same_outcome():
    logits, labels, space, z = _grouped_case()
    group_scores = torch.stack([z[:, :2].max(dim=1).values, z[:, 2]], dim=1)
    probs = torch.softmax(group_scores, dim=1).numpy()
    truth = np.where(labels == 2, 0, 1)
    out = predict(logits, labels, space)  # max_logit is the default
    np.testing.assert_array_equal(out.correct, top1_correct(logits, labels, space))
    np.testing.assert_allclose(out.confidence, probs.max(axis=1), rtol=1e-12)
    np.testing.assert_allclose(out.nll, -np.log(probs[np.arange(200), truth]), rtol=1e-10)
    assert negative_log_likelihood(logits, labels, space) == pytest.approx(out.nll.mean(), rel=1e-12)


def test_unknown_pooling_is_refused_naming_the_choices():
    logits, labels, space, _ = _grouped_case()
    with pytest.raises(ValueError, match="sum_probability"):
        predict(logits, labels, space, pooling="mean")


def test_nll_stays_finite_when_the_true_class_probability_underflows():
    logits = np.zeros((1, 1000), dtype=np.float32)
    logits[0, 0] = 2000.0  # true class 1 has log p = -2000: exp underflows float64
    assert negative_log_likelihood(logits, np.array([1])) == pytest.approx(2000.0)


def test_fitted_temperature_minimises_nll():
    logits, labels = _overconfident(2000)
    t_star = fit_temperature(logits, labels, (0.01, 10.0))
    assert t_star > 1  # overconfident logits are softened
    at_best = negative_log_likelihood(logits, labels, temperature=t_star)
    assert at_best < negative_log_likelihood(logits, labels, temperature=0.9 * t_star)
    assert at_best < negative_log_likelihood(logits, labels, temperature=1.1 * t_star)


def test_fitted_temperature_stays_inside_the_search_range():
    logits, labels = _overconfident(500)
    assert fit_temperature(logits, labels, (0.01, 1.5)) == pytest.approx(1.5)


def test_temperature_scaling_leaves_predictions_unchanged():
    logits, labels = _overconfident(1000)
    before, after = predict(logits, labels), predict(logits, labels, temperature=3.7)
    np.testing.assert_array_equal(before.correct, after.correct)
    assert not np.allclose(before.confidence, after.confidence)


def test_calibration_split_gives_disjoint_halves_independent_of_row_order():
    names = [f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, 102)]  # 101 images
    mask = calibration_split(names, seed=0)
    assert mask.sum() == 50 and (~mask).sum() == 51
    shuffled = np.random.default_rng(9).permutation(101)
    mask_shuffled = calibration_split([names[i] for i in shuffled], seed=0)
    assert set(np.asarray(names)[mask]) == set(np.asarray(names)[shuffled][mask_shuffled])
    assert not np.array_equal(mask, calibration_split(names, seed=1))


def test_calibration_split_rejects_duplicate_file_names():
    with pytest.raises(ValueError, match="not unique"):
        calibration_split(["a.JPEG", "a.JPEG", "b.JPEG"], seed=0)
