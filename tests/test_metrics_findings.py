"""The findings table (docs/methods.md, "Findings statistics"): its resampling, statistics, verdict rules and the
OOD score protocol, on constructed data whose answers are known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from clip_robustness.metrics.findings import (
    FINDINGS_COLUMNS,
    NOT_SUPPORTED,
    SUPPORTED,
    UNDETERMINED,
    FindingsSettings,
    findings_table,
    verdict,
)
from clip_robustness.metrics.resampling import (
    architecture_stem,
    cluster_bootstrap_weights,
    cluster_ids,
    cluster_permutations,
    cluster_sign_flips,
    distinct_models,
    holm,
    omega_squared,
    weighted_line,
    weighted_median,
    weighted_pearson,
)
from clip_robustness.metrics.simulate import NULL_EFFECTS, simulate_study, simulation_settings
from clip_robustness.models.registry import load_model_registry

REGISTRY = Path(__file__).resolve().parents[1] / "config" / "models.tsv"
SETTINGS = FindingsSettings(
    in_distribution="imagenet_val",
    test_conditions=("imagenet_r", "imagenet_c_fog_1", "imagenet_c_snow_1"),
    ood_sets=("textures",),
    ood_score="msp",
    bootstrap_samples=200,
    seed=0,
    min_models=4,
    permutations=200,
)


def calibration_study(n_per_group: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Zero-shot CLIP badly calibrated before TS (ECE 8-9 %), standard models well (1-2 %); under every shift the ID
    temperature lowers CLIP's ECE by 3-4 points."""
    rng = np.random.default_rng(3)
    registry = pd.DataFrame(
        {
            "model_id": [f"clip{i}" for i in range(n_per_group)] + [f"std{i}" for i in range(n_per_group)],
            "group": ["clip_zeroshot"] * n_per_group + ["standard"] * n_per_group,
            "training_source": ["LAION-2B"] * n_per_group + ["ImageNet-1k"] * n_per_group,
            "finetune_route": ["none"] * (2 * n_per_group),
            "architecture": [f"arch{i}" for i in range(2 * n_per_group)],
        }
    )
    rows = []
    for model, group in zip(registry["model_id"], registry["group"]):
        clip = group == "clip_zeroshot"
        rows.append((model, "imagenet_val_id_test", "top1", rng.uniform(0.6, 0.8)))
        rows.append((model, "imagenet_val_id_test", "ece", rng.uniform(8, 9) if clip else rng.uniform(1, 2)))
        rows.append((model, "imagenet_val_id_test", "ece_ts", rng.uniform(1, 2)))
        for dataset in ("imagenet_r", "imagenet_c"):
            before = rng.uniform(8, 9)
            rows.append((model, dataset, "ece", before))
            rows.append((model, dataset, "ece_ts", before - rng.uniform(3, 4) if clip else before))
    metrics = pd.DataFrame(rows, columns=["model", "dataset", "metric", "value"]).assign(factor=None, score=None)
    return metrics, registry


def row(table: pd.DataFrame, claim_id: str) -> pd.Series:
    return table.set_index("claim_id").loc[claim_id]


# ---------------------------------------------------------------------------------------------- the table


def test_findings_table_has_the_documented_columns_and_a_row_per_claim():
    metrics, registry = calibration_study(6)
    table = findings_table(metrics, registry, SETTINGS)
    assert tuple(table.columns) == FINDINGS_COLUMNS
    ids = list(table["claim_id"])
    for claim in ("1a", "1b", "2", "9", "3", "3-fpr95", "4a", "4b", "5", "5-nll", "6a", "6b", "7", "7-nll", "8a", "8b"):
        assert claim in ids, claim
    assert "7:imagenet_r" in ids and "7:imagenet_c" in ids  # one row per shifted condition
    assert set(table["verdict"]) <= {SUPPORTED, NOT_SUPPORTED, UNDETERMINED}


def test_standard_models_better_calibrated_than_clip_supports_claim_5_with_an_interval_and_p():
    metrics, registry = calibration_study(8)
    finding = row(findings_table(metrics, registry, SETTINGS), "5")
    assert finding["value"] == pytest.approx(1.0)  # every standard model beats the median CLIP
    assert finding["verdict"] == SUPPORTED
    assert finding["n_models"] == "clip_zeroshot=8 (8 clusters); others=8 (8 clusters)"
    assert finding["ci_low"] <= finding["value"] <= finding["ci_high"]
    assert 0 < finding["p_value"] < SETTINGS.alpha


def test_id_temperature_lowering_clip_ece_under_every_shift_supports_claim_7_and_each_condition():
    metrics, registry = calibration_study(12)
    table = findings_table(metrics, registry, SETTINGS)
    finding = row(table, "7")
    assert -4 < finding["value"] < -3
    assert finding["verdict"] == SUPPORTED and finding["test"] == "cluster sign flip"
    # 12 clusters all lowered: only flips that keep nearly every sign reach the observed median
    assert finding["p_value"] < 0.02
    for condition in ("imagenet_r", "imagenet_c"):
        assert row(table, f"7:{condition}")["verdict"] == SUPPORTED


def test_too_few_models_make_every_verdict_undetermined_and_say_why():
    metrics, registry = calibration_study(2)
    table = findings_table(metrics, registry, SETTINGS)
    assert set(table["verdict"]) == {UNDETERMINED}
    assert "fewer than 4 models" in row(table, "5")["reason"]
    assert np.isnan(row(table, "5")["ci_low"]) and np.isnan(row(table, "5")["p_value"])


def test_verdict_needs_the_interval_on_the_claims_side_and_p_below_alpha():
    assert verdict(0.8, 0.9, 0.7, "above", 0.01, 0.05) == SUPPORTED
    assert verdict(0.8, 0.9, 0.7, "above", 0.2, 0.05) == UNDETERMINED  # interval fine, p too large
    assert verdict(0.2, 0.6, 0.7, "above", 0.01, 0.05) == NOT_SUPPORTED
    assert verdict(0.6, 0.8, 0.7, "above", 0.01, 0.05) == UNDETERMINED
    assert verdict(6, 9, 6, "at_least", 0.0, 0.05) == SUPPORTED and verdict(2, 5, 6, "at_least") == NOT_SUPPORTED
    assert verdict(-2, -1, 0, "below", 0.01, 0.05) == SUPPORTED and verdict(1, 2, 0, "below") == NOT_SUPPORTED
    assert (
        verdict(-3, -1, 0.5, "outside", 0.01, 0.05) == SUPPORTED and verdict(-0.2, 0.3, 0.5, "outside") == NOT_SUPPORTED
    )
    assert verdict(float("nan"), 1, 0, "below") == UNDETERMINED


# ---------------------------------------------------------------------------------------------- the OOD score protocol


@pytest.fixture(scope="module")
def null_study():
    return simulate_study(load_model_registry(REGISTRY).table, NULL_EFFECTS, seed=11)


def test_paper_ood_score_scores_every_group_and_mcm_names_the_group_it_cannot_score(null_study):
    quick = simulation_settings(bootstrap_samples=100, permutations=100)
    paper = findings_table(null_study.metrics, null_study.registry, quick).set_index("claim_id")
    # paper: MCM for zero-shot CLIP, MSP for CLIP-FT: both OOD rows are computed, none names a missing group
    assert np.isfinite(paper.loc["4b", "value"]) and "cannot be scored" not in paper.loc["4b", "reason"]
    assert "in1k / LAION-2B=10" in paper.loc["4b", "n_models"] and "LAION-2B=18" in paper.loc["3", "n_models"]
    mcm = findings_table(
        null_study.metrics,
        null_study.registry,
        FindingsSettings(
            quick.in_distribution, quick.test_conditions, quick.ood_sets, "mcm", 100, 0, 4, permutations=100
        ),
    ).set_index("claim_id")
    assert mcm.loc["4b", "verdict"] == UNDETERMINED
    assert "group clip_ft cannot be scored: none of its 32 models has auroc under mcm" in mcm.loc["4b", "reason"]
    assert "LAION-2B=18" in mcm.loc["3", "n_models"]  # zero-shot CLIP still scored with MCM


def test_effective_robustness_rows_count_the_models_outside_the_reference_range(null_study):
    table = findings_table(null_study.metrics, null_study.registry, simulation_settings(100, 100)).set_index("claim_id")
    note = table.loc["1a", "notes"]
    assert "outside the reference models' accuracy range" in note and "kept" in note
    assert "clip_zeroshot=" in note  # zero-shot CLIP reaches below the standard models' range in the simulation


# ---------------------------------------------------------------------------------------------- resampling


def test_weighted_statistics_equal_the_plain_ones_on_the_repeated_sample():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=12), rng.normal(size=12)
    weights = rng.integers(0, 3, size=(5, 12)).astype(float)
    weights[:, :3] += 1  # at least 3 distinct models in each resample
    medians, (slopes, intercepts), rs = (
        weighted_median(x, weights),
        weighted_line(x, y, weights),
        weighted_pearson(x, y, weights),
    )
    for b in range(5):
        xr, yr = np.repeat(x, weights[b].astype(int)), np.repeat(y, weights[b].astype(int))
        assert medians[b] == pytest.approx(np.median(xr))
        assert (slopes[b], intercepts[b]) == pytest.approx(tuple(np.polyfit(xr, yr, 1)))
        assert rs[b] == pytest.approx(np.corrcoef(xr, yr)[0, 1])


def test_omega_squared_follows_the_anova_f_of_scipy():
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1, 2], [5, 7, 6])
    values = rng.normal(size=18) + 0.8 * labels
    f = stats.f_oneway(*(values[labels == g] for g in range(3))).statistic
    k, n = 3, 18
    expected = (k - 1) * (f - 1) / ((k - 1) * (f - 1) + n)
    assert omega_squared(values, np.ones((1, 18)), labels[None, :], 3)[0] == pytest.approx(expected)
    assert np.isnan(omega_squared(values, np.ones((1, 18)), np.zeros((1, 18), dtype=int), 3)[0])  # one group only


def test_near_duplicate_checkpoints_form_one_cluster():
    models = pd.DataFrame(
        {
            "group": ["clip_ft"] * 4 + ["clip_zeroshot"] * 2,
            "training_source": ["LAION-2B", "LAION-2B", "WIT-400M", "LAION-2B", "WIT-400M", "WIT-400M"],
            "finetune_route": ["in1k", "in1k", "in1k", "in12k->in1k", "none", "none"],
            "architecture": [
                "vit_base_patch16_clip_224",
                "vit_base_patch16_clip_384",
                "vit_base_patch16_clip_224",
                "vit_base_patch16_clip_224",
                "RN50-quickgelu",
                "RN50",
            ],
        }
    )
    ids = cluster_ids(models)
    assert ids[0] == ids[1]  # resolutions of one network, one source and route
    assert len({ids[0], ids[2], ids[3]}) == 3  # another source, another route
    assert ids[4] == ids[5] and architecture_stem("convnext_large_mlp_320") == "convnext_large_mlp"


def test_cluster_bootstrap_draws_whole_clusters_within_each_stratum():
    strata = np.array(["a"] * 5 + ["b"] * 4)
    clusters = np.array([0, 0, 1, 2, 2, 3, 3, 3, 4])
    weights = cluster_bootstrap_weights(strata, clusters, 300, np.random.default_rng(2))
    assert (weights[:, 0] == weights[:, 1]).all() and (weights[:, 5] == weights[:, 7]).all()
    # each stratum draws as many clusters as it has: 3 in a, 2 in b
    assert (weights[:, [0, 2, 3]].sum(axis=1) == 3).all() and (weights[:, [5, 8]].sum(axis=1) == 2).all()


def test_cluster_permutations_move_cluster_labels_within_blocks_and_keep_reference_rows():
    labels = np.array([0, 0, 1, 1, 0, 1, -1, -1])
    clusters = np.array([0, 0, 1, 2, 3, 4, 5, 6])
    blocks = np.array([0, 0, 0, 0, 1, 1, 0, 0])
    draws = cluster_permutations(labels, clusters, blocks, 200, np.random.default_rng(3))
    assert (draws[:, 0] == draws[:, 1]).all() and (draws[:, 6:] == -1).all()
    # block 0 holds clusters labelled 0, 1, 1: every permutation keeps that multiset
    assert (np.sort(draws[:, [0, 2, 3]], axis=1) == [0, 1, 1]).all()
    assert (np.sort(draws[:, [4, 5]], axis=1) == [0, 1]).all()
    assert len({tuple(d) for d in draws}) > 3
    signs = cluster_sign_flips(clusters, 50, np.random.default_rng(4))
    assert (signs[:, 0] == signs[:, 1]).all() and set(np.unique(signs)) == {-1.0, 1.0}


def test_distinct_models_and_holm():
    weights = np.array([[2.0, 0.0, 1.0, 1.0], [4.0, 0.0, 0.0, 0.0]])
    assert list(distinct_models(weights, np.array([True, True, True, False]))) == [2, 1]
    assert holm([0.01, 0.04, 0.03, np.nan]) == pytest.approx([0.03, 0.06, 0.06, np.nan], nan_ok=True)
