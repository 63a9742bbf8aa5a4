"""The findings table (docs/assumptions.md, section 1): constructed metric tables whose answers are known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clip_robustness.demo.metrics import synthetic_metrics, synthetic_registry
from clip_robustness.metrics.findings import (
    FINDINGS_COLUMNS,
    NOT_SUPPORTED,
    SUPPORTED,
    UNDETERMINED,
    FindingsSettings,
    bootstrap_interval,
    findings_table,
    spread_ratio,
    verdict,
)

SETTINGS = FindingsSettings(
    in_distribution="imagenet_val",
    test_conditions=("imagenet_r", "imagenet_c_fog_1", "imagenet_c_snow_1"),
    ood_sets=("textures",),
    ood_score="msp",
    bootstrap_samples=200,
    seed=0,
    min_models=4,
)


def calibration_study(n_per_group: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Zero-shot CLIP badly calibrated before TS (ECE 8-9 %) and worse than the others after TS under every shift
    (ECE_ts 6-7 % vs 1-2 %); standard models well calibrated (ECE 1-2 %)."""
    rng = np.random.default_rng(3)
    registry = pd.DataFrame({
        "model_id": [f"clip{i}" for i in range(n_per_group)] + [f"std{i}" for i in range(n_per_group)],
        "group": ["clip_zeroshot"] * n_per_group + ["standard"] * n_per_group,
        "training_source": ["LAION-2B"] * n_per_group + ["ImageNet-1k"] * n_per_group,
        "finetune_route": ["none"] * (2 * n_per_group),
    })
    rows = []
    for model, group in zip(registry["model_id"], registry["group"]):
        clip = group == "clip_zeroshot"
        rows.append((model, "imagenet_val_id_test", "top1", rng.uniform(0.6, 0.8)))
        rows.append((model, "imagenet_val_id_test", "ece", rng.uniform(8, 9) if clip else rng.uniform(1, 2)))
        rows.append((model, "imagenet_val_id_test", "ece_ts", rng.uniform(1, 2)))
        for dataset in ("imagenet_r", "imagenet_c"):
            rows.append((model, dataset, "ece_ts", rng.uniform(6, 7) if clip else rng.uniform(1, 2)))
    metrics = pd.DataFrame(rows, columns=["model", "dataset", "metric", "value"]).assign(factor=None, score=None)
    return metrics, registry


def row(table: pd.DataFrame, claim_id: str) -> pd.Series:
    return table.set_index("claim_id").loc[claim_id]


def test_findings_table_has_the_documented_columns_and_one_row_per_claim():
    metrics, registry = calibration_study(6)
    table = findings_table(metrics, registry, SETTINGS)
    assert tuple(table.columns) == FINDINGS_COLUMNS
    assert list(table["claim_id"]) == ["1a", "1b", "2", "3", "4a", "4b", "5", "6", "7"]
    assert set(table["verdict"]) <= {SUPPORTED, NOT_SUPPORTED, UNDETERMINED}


def test_standard_models_better_calibrated_than_clip_supports_claim_5():
    metrics, registry = calibration_study(8)
    finding = row(findings_table(metrics, registry, SETTINGS), "5")
    assert finding["value"] == pytest.approx(1.0)  # every standard model beats the median CLIP
    assert finding["verdict"] == SUPPORTED
    assert finding["n_models"] == "clip_zeroshot=8; standard=8"
    assert finding["ci_low"] <= finding["value"] <= finding["ci_high"]


def test_clip_worse_calibrated_after_ts_under_shift_does_not_support_claim_7():
    metrics, registry = calibration_study(8)
    finding = row(findings_table(metrics, registry, SETTINGS), "7")
    assert finding["value"] > 4
    assert finding["verdict"] == NOT_SUPPORTED
    assert "imagenet_c" in finding["statistic"]


def test_too_few_models_make_every_verdict_undetermined_and_say_why():
    metrics, registry = calibration_study(2)
    table = findings_table(metrics, registry, SETTINGS)
    assert set(table["verdict"]) == {UNDETERMINED}
    assert "fewer than 4 models" in row(table, "5")["reason"]
    assert np.isnan(row(table, "5")["ci_low"])


def test_findings_of_a_study_sized_synthetic_table_compute_every_claim():
    registry = synthetic_registry({"clip_zeroshot": 40, "clip_ft": 8, "standard": 12, "more_data": 6}, seed=5)
    metrics = synthetic_metrics(registry, test_conditions=["imagenet_r"], corruptions=["fog"], severities=[1],
                                ood_sets=["textures"], seed=5)
    table = findings_table(metrics, registry, SETTINGS)
    assert table["value"].notna().all(), table[["claim_id", "value", "reason"]]
    assert (table["reason"] == "").sum() + (table["reason"] == "the interval straddles the threshold").sum() == len(table)


def test_verdict_follows_the_interval_against_the_threshold():
    assert verdict(0.8, 0.9, 0.7, "above") == SUPPORTED
    assert verdict(0.2, 0.6, 0.7, "above") == NOT_SUPPORTED
    assert verdict(0.6, 0.8, 0.7, "above") == UNDETERMINED
    assert verdict(6, 9, 6, "at_least") == SUPPORTED and verdict(2, 5, 6, "at_least") == NOT_SUPPORTED
    assert verdict(-2, -1, 0, "below") == SUPPORTED and verdict(1, 2, 0, "below") == NOT_SUPPORTED
    assert verdict(-3, -1, 0.5, "outside") == SUPPORTED and verdict(-0.2, 0.3, 0.5, "outside") == NOT_SUPPORTED
    assert verdict(float("nan"), 1, 0, "below") == UNDETERMINED


def test_bootstrap_is_seeded_and_keeps_each_stratum_size():
    frame = pd.DataFrame({"v": np.arange(10.0), "g": ["a"] * 3 + ["b"] * 7})
    sizes = []

    def statistic(part):
        sizes.append(tuple(part["g"].value_counts().sort_index()))
        return part["v"].mean()

    first = bootstrap_interval(frame, frame["g"], statistic, 200, seed=1)
    assert first == bootstrap_interval(frame, frame["g"], statistic, 200, seed=1)
    # every resample keeps both group sizes; the only other calls are BCa's leave-one-out (jackknife) ones
    assert sizes.count((3, 7)) >= 2 * 200
    assert set(sizes) <= {(3, 7), (2, 7), (3, 6)}
    assert first[0] < frame["v"].mean() < first[1]


def test_spread_ratio_is_large_when_groups_differ_and_small_when_they_do_not():
    groups = pd.Series(["a"] * 5 + ["b"] * 5)
    apart = pd.Series([0.0, 0.1, 0.2, 0.1, 0.0, 5.0, 5.1, 5.2, 5.1, 5.0])
    mixed = pd.Series([0.0, 5.0, 0.1, 5.1, 2.5, 5.0, 0.0, 5.1, 0.1, 2.5])
    assert spread_ratio(apart, groups) > 10
    assert spread_ratio(mixed, groups) < 1
