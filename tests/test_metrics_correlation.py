"""Correlation of ImageNet accuracy with AUROC per model group (SPEC section 4, 'Correlations')."""

import numpy as np
import pandas as pd
import pytest

from clip_robustness.metrics.correlation import accuracy_auroc_correlations, correlate


def test_correlate_matches_numpy_pearson_and_rank_pearson():
    rng = np.random.default_rng(0)
    x = rng.random(12)
    y = 0.5 * x + rng.normal(0, 0.1, 12)
    result = correlate(x, y)
    assert result["n"] == 12
    assert result["pearson_r"] == pytest.approx(np.corrcoef(x, y)[0, 1], rel=1e-12)
    # Spearman's rho is Pearson's r of the ranks (no ties here)
    ranks = np.corrcoef(pd.Series(x).rank(), pd.Series(y).rank())[0, 1]
    assert result["spearman_r"] == pytest.approx(ranks, rel=1e-12)
    assert 0 <= result["pearson_p"] <= 1


def test_correlate_is_nan_below_three_models_or_for_constant_input():
    assert np.isnan(correlate([0.1, 0.2], [0.3, 0.5])["pearson_r"])
    assert np.isnan(correlate([0.1, 0.2, 0.3], [0.5, 0.5, 0.5])["spearman_r"])
    assert correlate([0.1, np.nan, 0.3, 0.4], [1, 2, 3, 4])["n"] == 3


def test_correlations_are_computed_per_group_and_per_training_source():
    # three CLIP models on one source whose AUROC rises with accuracy, two standard models
    models = {"c1": (0.6, 0.80), "c2": (0.7, 0.85), "c3": (0.8, 0.90), "s1": (0.7, 0.9), "s2": (0.8, 0.8)}
    rows = []
    for model, (acc, auc) in models.items():
        rows.append({"model": model, "dataset": "imagenet_val", "metric": "top1", "value": acc, "factor": None, "score": None})
        rows.append({"model": model, "dataset": "sun", "metric": "auroc", "value": auc, "factor": None, "score": "msp"})
    registry = pd.DataFrame(
        {
            "model_id": list(models),
            "group": ["clip_zeroshot"] * 3 + ["standard"] * 2,
            "training_source": ["LAION-2B"] * 3 + ["ImageNet-1k"] * 2,
        }
    )
    table = accuracy_auroc_correlations(pd.DataFrame(rows), registry, "imagenet_val")
    clip = table[(table["grouping"] == "group") & (table["group"] == "clip_zeroshot")].iloc[0]
    assert (clip["dataset"], clip["score"], clip["n"]) == ("sun", "msp", 3)
    assert clip["pearson_r"] == pytest.approx(1.0) and clip["spearman_r"] == pytest.approx(1.0)
    standard = table[(table["grouping"] == "group") & (table["group"] == "standard")].iloc[0]
    assert standard["n"] == 2 and np.isnan(standard["pearson_r"])
    assert set(table.loc[table["grouping"] == "training_source", "group"]) == {"LAION-2B", "ImageNet-1k"}


def test_registry_without_grouping_column_is_named_in_the_error():
    with pytest.raises(ValueError, match="training_source"):
        accuracy_auroc_correlations(pd.DataFrame(columns=["model", "dataset", "metric", "value", "score"]), pd.DataFrame({"model_id": [], "group": []}), "imagenet_val")
