"""The findings' verdicts on simulated studies whose truth is known (clip_robustness.metrics.simulate): for each claim,
a clearly planted effect at the paper's registry (210 models, its groups, sources, routes and clusters) is
``supported``, and its null (the claim false) is not. Seeded; the validation at scale is benchmarks/findings_check.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from clip_robustness.metrics.findings import SUPPORTED, findings_table
from clip_robustness.metrics.simulate import (
    CLAIM_ROWS,
    CLEAR_EFFECTS,
    NULL_EFFECTS,
    simulate_study,
    simulation_settings,
)
from clip_robustness.models.registry import load_model_registry

REGISTRY = Path(__file__).resolve().parents[1] / "config" / "models.tsv"
#: Fewer resamples than the config's 1000: the verdicts of a clear effect and of a null do not hinge on them.
SETTINGS = simulation_settings(bootstrap_samples=200, permutations=200)


@pytest.fixture(scope="module")
def registry():
    table = load_model_registry(REGISTRY).table
    assert len(table) == 210
    return table


@pytest.fixture(scope="module")
def null_table(registry):
    study = simulate_study(registry, NULL_EFFECTS, seed=101)
    return findings_table(study.metrics, study.registry, SETTINGS).set_index("claim_id")


@pytest.mark.parametrize("claim", sorted(CLAIM_ROWS))
def test_a_clearly_planted_effect_is_supported_and_its_null_is_not(claim, registry, null_table):
    study = simulate_study(
        registry, {**NULL_EFFECTS, claim: CLEAR_EFFECTS[claim]}, seed=200 + sorted(CLAIM_ROWS).index(claim)
    )
    planted = findings_table(study.metrics, study.registry, SETTINGS).set_index("claim_id")
    for row in CLAIM_ROWS[claim]:
        assert planted.loc[row, "verdict"] == SUPPORTED, (row, planted.loc[row].to_dict())
        assert null_table.loc[row, "verdict"] != SUPPORTED, (row, null_table.loc[row].to_dict())
