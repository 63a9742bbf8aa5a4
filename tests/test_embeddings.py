"""The embeddings cache (clip_robustness.logits.embeddings), the group job writing it beside the logits, the prompt
sets of the ablation (clip_robustness.models.prompt_sets) and the ablation's statistic on simulated data with a known
answer (clip_robustness.metrics.prompt_ablation)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import open_clip
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file
from test_inference import make_manifest

from clip_robustness.logits.cache import StaleCacheError, expected_metadata, read_logits
from clip_robustness.logits.embeddings import (
    logits_from_embeddings,
    read_embeddings,
    write_embeddings,
)
from clip_robustness.logits.job import DatasetTask, cache_group_logits
from clip_robustness.metrics.findings import FINDINGS_COLUMNS, FindingsSettings
from clip_robustness.metrics.prompt_ablation import prompt_set_findings, prompt_set_range
from clip_robustness.models.adapters import row_adapter
from clip_robustness.models.prompt_sets import PromptSetError, read_prompt_file, resolve_prompt_set
from clip_robustness.models.zero_shot import build_ablation_head, build_head_for_row, load_head, save_head

REPO = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------------------------- the file contract


def unit_rows(n: int, dim: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_embeddings_round_trip_as_float16_with_their_metadata(tmp_path):
    e = unit_rows(7, 24)
    path = write_embeddings(
        tmp_path / "e.parquet",
        np.arange(7),
        np.array([0, 1, 2, -1, 4, 5, 999]),
        e,
        {"model_id": "m", "dataset": "d", "content": "image_embeddings", "embedding_dim": 24},
    )
    cached = read_embeddings(path, expect={"model_id": "m", "dataset": "d"})
    assert cached.embeddings.dtype == np.float16 and cached.embeddings.shape == (7, 24)
    assert np.max(np.abs(cached.embeddings.astype(np.float32) - e)) < 1e-3  # float16 keeps ~3 decimal digits
    assert cached.labels.tolist() == [0, 1, 2, -1, 4, 5, 999]
    with pytest.raises(StaleCacheError, match="model_id"):
        read_embeddings(path, expect={"model_id": "other"})


def test_unnormalised_embeddings_are_refused_naming_the_file(tmp_path):
    with pytest.raises(ValueError, match="e.parquet.*L2-normalised"):
        write_embeddings(tmp_path / "e.parquet", np.arange(3), np.zeros(3), 2 * unit_rows(3, 8), {})


def test_logits_from_embeddings_are_the_scaled_cosines_and_a_wrong_head_is_refused():
    e, w = unit_rows(5, 16, 1), unit_rows(10, 16, 2).T
    assert np.allclose(logits_from_embeddings(e, w, 50.0), 50.0 * e @ w, atol=1e-4)
    with pytest.raises(ValueError, match="another model"):
        logits_from_embeddings(e, unit_rows(10, 8).T, 50.0)


# ---------------------------------------------------------------------------------------------- the logits job


@pytest.fixture(scope="module")
def clip_row(tmp_path_factory):
    torch.manual_seed(0)
    model, _, _ = open_clip.create_model_and_transforms("clip_tiny_demo", pretrained=None)
    weights = tmp_path_factory.mktemp("clip") / "clip.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    return {
        "model_id": "openclip__clip_tiny_demo.local",
        "library": "open_clip",
        "architecture": "clip_tiny_demo",
        "pretrained": "demo",
        "weights_file": str(weights),
    }


def test_group_job_writes_embeddings_that_reproduce_its_logits(tmp_path, clip_row):
    manifest = make_manifest(tmp_path / "images", [0, 417, 999, 1, -1, 417, 3, 5])
    head_path = save_head(build_head_for_row(clip_row, "simple", "cpu", progress=False), tmp_path / "head.pt")
    task = DatasetTask(
        "imagenet_r",
        tmp_path / "imagenet_r.manifest.parquet",
        tmp_path / "logits.parquet",
        embeddings=tmp_path / "embeddings.parquet",
    )
    options = {"head_path": head_path, "weights_path": clip_row["weights_file"], "prompt_set": "simple"}
    options |= {"batch_size": 4, "num_workers": 0, "precision_name": "fp32", "allow_tf32": False, "device": "cpu"}
    written = cache_group_logits(clip_row, [task], **options)
    assert written == [task.output]
    expect = expected_metadata(clip_row, "imagenet_r", manifest.metadata["manifest_hash"], "simple")
    logits = read_logits(task.output, expect=expect)
    cached = read_embeddings(task.embeddings, expect=expect)
    assert cached.metadata["embedding_dim"] == cached.embeddings.shape[1]
    # make plan sizes the cache by the width the adapter reads from the library config, without building the model
    assert row_adapter(clip_row).embedding_dim(clip_row) == cached.embeddings.shape[1]
    assert cached.metadata["weights_sha256"] == logits.metadata["weights_sha256"]
    assert np.array_equal(cached.index, logits.index) and np.array_equal(cached.labels, logits.labels)
    head = load_head(head_path)
    derived = logits_from_embeddings(cached.embeddings, head.weights.numpy(), head.logit_scale)
    # float16 embeddings: |error| <= logit_scale * ~1e-3 (docs/methods.md states the demo's measured error)
    assert np.max(np.abs(derived - logits.logits)) < 1e-3 * head.logit_scale
    assert np.array_equal(derived.argmax(1), logits.logits.argmax(1))
    # both current: the next group job keeps them; a missing embeddings file recomputes the pair
    assert cache_group_logits(clip_row, [task], **options) == []
    task.embeddings.unlink()
    assert cache_group_logits(clip_row, [task], **options) == [task.output]
    assert task.embeddings.exists()


# ---------------------------------------------------------------------------------------------- prompt sets


def test_builtin_prompt_sets_and_a_user_file(tmp_path):
    assert resolve_prompt_set("one_template").templates == ("a photo of a {}.",)
    assert resolve_prompt_set("openai").builtin == "openai"
    good = tmp_path / "mine.yaml"
    good.write_text("templates: ['a blurry photo of a {}.', 'art of the {}.']\n")
    prompts = read_prompt_file(good)
    assert prompts.name == "mine" and len(prompts.templates) == 2 and prompts.classnames is None


@pytest.mark.parametrize(
    "text, match",
    [
        ("templates: ['no slot here']\n", "templates\\[0\\]"),
        ("classnames: [a, b]\n", "exactly 1000"),
        ("prompts: ['a {}']\n", "unknown key"),
        ("- a\n", "mapping"),
    ],
)
def test_a_bad_prompt_file_is_refused_naming_the_file_and_key(tmp_path, text, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(PromptSetError, match=f"bad.yaml.*{match}|{match}.*bad.yaml|bad.yaml"):
        read_prompt_file(path)
    with pytest.raises(PromptSetError, match=match):
        read_prompt_file(path)


def test_ablation_head_of_one_template_differs_from_the_openai_head_and_has_unit_columns(clip_row, tmp_path):
    one = build_ablation_head(clip_row, "one_template")
    names = tmp_path / "names.yaml"
    names.write_text(
        "templates: ['a photo of a {}.']\nclassnames: [" + ", ".join(f"'c{i}'" for i in range(1000)) + "]\n"
    )
    renamed = build_ablation_head(clip_row, str(names))
    assert one.prompt_set == "one_template" and one.n_templates == 1 and renamed.prompt_set == "names"
    assert torch.allclose(one.weights.norm(dim=0), torch.ones(1000), atol=1e-4)
    assert not torch.allclose(one.weights, renamed.weights)  # other class names, other head


# ---------------------------------------------------------------------------------------------- the statistic


def simulated(n_models: int, effects: list[float], noise: float, seed: int) -> np.ndarray:
    """Models x prompt sets: a model's level + the set's effect + noise."""
    rng = np.random.default_rng(seed)
    return (
        rng.normal(0.6, 0.1, size=(n_models, 1))
        + np.asarray(effects)[None, :]
        + rng.normal(0, noise, size=(n_models, len(effects)))
    )


def test_range_statistic_is_max_minus_min_of_the_means_and_zero_under_identical_sets():
    values = np.array([[0.5, 0.6, 0.7], [0.3, 0.2, 0.4]])
    stat = prompt_set_range(values)
    assert stat(np.ones((1, 2)), np.zeros((1, 2), dtype=int))[0] == pytest.approx(0.15)
    assert stat(np.ones((1, 2)), np.zeros((1, 2), dtype=int))[0] == pytest.approx(np.ptp(values.mean(axis=0)))
    flat = prompt_set_range(np.repeat([[0.4], [0.7]], 3, axis=1))
    assert flat(np.ones((1, 2)), np.array([[3, 5]]))[0] == pytest.approx(0.0)


def _findings(values: np.ndarray, sets: list[str], seed: int = 0) -> pd.DataFrame:
    models = [f"m{i}" for i in range(len(values))]
    registry = pd.DataFrame(
        {
            "model_id": models,
            "group": "clip_zeroshot",
            "training_source": "laion",
            "finetune_route": "none",
            "architecture": [f"arch{i}" for i in range(len(models))],
            "study": "paper",
        }
    )
    properties = pd.DataFrame(
        [
            {"model": m, "prompt_set": s, "property": "id_accuracy", "value": values[i, j]}
            for i, m in enumerate(models)
            for j, s in enumerate(sets)
        ]
    )
    settings = FindingsSettings(
        "imagenet_val", (), (), "paper", bootstrap_samples=400, seed=seed, min_models=4, permutations=400
    )
    return prompt_set_findings(properties, registry, settings)


def test_findings_row_recovers_a_known_prompt_set_effect_with_its_interval():
    effects = [0.0, 0.02, 0.05]  # the true range of the group means is 0.05
    table = _findings(simulated(40, effects, 0.01, seed=3), ["a", "b", "c"])
    assert list(table.columns) == list(FINDINGS_COLUMNS)
    row = table.iloc[0]
    assert row["claim_id"] == "prompt-id_accuracy"
    assert row["ci_low"] <= 0.05 <= row["ci_high"] and abs(row["value"] - 0.05) < 0.01
    assert row["p_value"] < 0.01 and row["verdict"] == "supported"


def test_findings_row_without_an_effect_is_not_significant_in_most_simulations():
    p_values = [
        _findings(simulated(12, [0.0, 0.0, 0.0], 0.01, seed=s), ["a", "b", "c"], seed=s).iloc[0]["p_value"]
        for s in range(20)
    ]
    # a valid test rejects about alpha = 5% of null studies: 20 studies, allow up to 4 (binomial 95% range)
    assert sum(p < 0.05 for p in p_values) <= 4
    assert np.mean(p_values) > 0.3  # p is about uniform under the null


def test_one_model_is_undetermined_with_the_reason():
    row = _findings(simulated(1, [0.0, 0.1], 0.01, seed=0), ["a", "b"]).iloc[0]
    assert row["verdict"] == "undetermined" and "fewer than 4 models" in row["reason"]


def test_plan_counts_embeddings_disk_for_zero_shot_models_only_and_none_when_off():
    from clip_robustness.logits.plan import embeddings_disk
    from clip_robustness.models.registry import load_model_registry

    registry = load_model_registry(REPO / "config/demo/models.tsv")
    on = {"inference": {"cache_embeddings": True}}
    sizes, assumed = embeddings_disk(on, registry.ids, registry, 1000)
    assert set(sizes) == {m for m in registry.ids if registry.is_zero_shot(m)} and not assumed
    assert sizes["openclip__clip_tiny_demo__demo"] > 1000 * 2 * 16  # at least float16 x a 16-wide embedding
    assert embeddings_disk({"inference": {"cache_embeddings": False}}, registry.ids, registry, 1000) == ({}, [])
