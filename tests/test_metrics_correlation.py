"""Correlation of ImageNet accuracy with AUROC per model group (docs/methods.md, "Correlations (OOD table)")."""

import numpy as np
import pandas as pd
import pytest

from clip_robustness.metrics.correlation import accuracy_auroc_correlations, correlate, source_family


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


def _table(models: dict, registry: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for model, (acc, auc) in models.items():
        rows.append(
            {"model": model, "dataset": "imagenet_val", "metric": "top1", "value": acc, "factor": None, "score": None}
        )
        rows.append({"model": model, "dataset": "sun", "metric": "auroc", "value": auc, "factor": None, "score": "msp"})
    return accuracy_auroc_correlations(pd.DataFrame(rows), registry, "imagenet_val")


def test_correlations_are_computed_per_model_group_and_training_source_with_n():
    # three zero-shot CLIP models on one source whose AUROC rises with accuracy, two standard models
    models = {"c1": (0.6, 0.80), "c2": (0.7, 0.85), "c3": (0.8, 0.90), "s1": (0.7, 0.9), "s2": (0.8, 0.8)}
    registry = pd.DataFrame(
        {
            "model_id": list(models),
            "group": ["clip_zeroshot"] * 3 + ["standard"] * 2,
            "training_source": ["LAION-2B"] * 3 + ["ImageNet-1k"] * 2,
        }
    )
    table = _table(models, registry)
    clip = table[(table["model_group"] == "clip_zeroshot") & (table["training_source"] == "LAION-2B")].iloc[0]
    assert (clip["dataset"], clip["score"], clip["n"]) == ("sun", "msp", 3)
    assert clip["pearson_r"] == pytest.approx(1.0) and clip["spearman_r"] == pytest.approx(1.0)
    standard = table[(table["model_group"] == "standard") & (table["training_source"] == "all")].iloc[0]
    assert standard["n"] == 2 and np.isnan(standard["pearson_r"])
    assert set(zip(table["model_group"], table["training_source"])) == {
        ("clip_zeroshot", "all"),
        ("clip_zeroshot", "LAION-2B"),
        ("standard", "all"),
        ("standard", "ImageNet-1k"),
    }


def test_zero_shot_and_fine_tuned_clip_of_one_source_are_never_pooled():
    models = {f"z{i}": (0.5 + 0.05 * i, 0.7 + 0.05 * i) for i in range(3)} | {
        f"f{i}": (0.8 + 0.02 * i, 0.9 - 0.05 * i) for i in range(3)
    }
    registry = pd.DataFrame(
        {
            "model_id": list(models),
            "group": ["clip_zeroshot"] * 3 + ["clip_ft"] * 3,
            "training_source": ["LAION-2B"] * 6,
            "finetune_route": ["none"] * 3 + ["in1k"] * 3,
        }
    )
    table = _table(models, registry)
    laion = table[table["training_source"] == "LAION-2B"].set_index(["model_group", "finetune_route"])
    assert laion.loc[("clip_zeroshot", "all"), "n"] == 3 and laion.loc[
        ("clip_zeroshot", "all"), "pearson_r"
    ] == pytest.approx(1.0)
    assert laion.loc[("clip_ft", "all"), "n"] == 3 and laion.loc[("clip_ft", "all"), "pearson_r"] == pytest.approx(-1.0)


def test_datacomp_scales_form_one_source_family():
    models = {"d1": (0.5, 0.7), "d2": (0.6, 0.75), "d3": (0.7, 0.8)}
    registry = pd.DataFrame(
        {
            "model_id": list(models),
            "group": ["clip_zeroshot"] * 3,
            "training_source": ["DataComp-S", "DataComp-M", "DataComp-1B"],
        }
    )
    table = _table(models, registry)
    family = table[table["training_source"] == "DataComp"].iloc[0]
    assert family["n"] == 3 and family["pearson_r"] == pytest.approx(1.0)
    assert source_family("DataComp-L") == "DataComp" and source_family("LAION-2B") == "LAION-2B"


def test_clip_ft_is_split_by_fine_tuning_route():
    models = {f"a{i}": (0.7 + 0.01 * i, 0.8) for i in range(3)} | {f"b{i}": (0.8 + 0.01 * i, 0.9) for i in range(4)}
    registry = pd.DataFrame(
        {
            "model_id": list(models),
            "group": ["clip_ft"] * 7,
            "training_source": ["WIT-400M"] * 7,
            "finetune_route": ["in1k"] * 3 + ["in12k->in1k"] * 4,
        }
    )
    table = _table(models, registry)
    routes = table[(table["training_source"] == "all") & (table["finetune_route"] != "all")].set_index(
        "finetune_route"
    )["n"]
    assert routes.to_dict() == {"in12k->in1k": 4, "in1k": 3}
    assert set(table.loc[table["training_source"] == "WIT-400M", "finetune_route"]) == {"all", "in1k", "in12k->in1k"}


def test_registry_without_grouping_column_is_named_in_the_error():
    with pytest.raises(ValueError, match="training_source"):
        accuracy_auroc_correlations(
            pd.DataFrame(columns=["model", "dataset", "metric", "value", "score"]),
            pd.DataFrame({"model_id": [], "group": []}),
            "imagenet_val",
        )
