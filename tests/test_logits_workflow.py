"""The logits stage's workflow glue (clip_robustness.logits.workflow.LogitsPlan): what common.smk's input
functions hand the decode_images and cache_logits rules, from a real registry file and real adapters."""

from __future__ import annotations

import pytest

from clip_robustness.logits.geometry import decode_spec_for_row
from clip_robustness.logits.workflow import LogitsPlan
from clip_robustness.models.registry import REGISTRY_COLUMNS, load_model_registry

ROWS = [
    [
        "openclip__clip_tiny_demo__demo",
        "open_clip",
        "clip_tiny_demo",
        "demo",
        "clip_zeroshot",
        "demo",
        "1",
        "none",
        "ViT",
        "32",
        "weights/clip.safetensors",
    ],
    ["timm__test_resnet.demo", "timm", "test_resnet", "demo", "standard", "demo", "1", "none", "ResNet", "160", ""],
    [
        "timm__test_convnext.demo",
        "timm",
        "test_convnext",
        "demo",
        "standard",
        "demo",
        "1",
        "none",
        "ConvNeXt",
        "160",
        "",
    ],
    [
        "python__test_logits_workflow.no_normalize__x",
        "python",
        "test_logits_workflow:no_normalize",
        "x",
        "standard",
        "demo",
        "1",
        "none",
        "CNN",
        "8",
        "",
    ],
]


def no_normalize():
    """A factory of one's own whose transform has no Normalize step: the decoded cache cannot hold it."""
    import torch
    from torchvision import transforms

    return torch.nn.Linear(3 * 8 * 8, 1000), transforms.Compose([transforms.Resize((8, 8)), transforms.ToTensor()])


@pytest.fixture
def registry(tmp_path):
    path = tmp_path / "models.tsv"
    path.write_text("\n".join("\t".join(r) for r in [list(REGISTRY_COLUMNS), *ROWS]) + "\n", encoding="utf-8")
    return load_model_registry(path)


def plan(registry, decoded_cache=True, warnings=None):
    return LogitsPlan(
        registry, registry.ids, decoded_cache=decoded_cache, warn=None if warnings is None else warnings.append
    )


def test_zero_shot_model_inputs_are_manifest_head_weights_and_decoded_array(registry, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights/clip.safetensors").write_bytes(b"w")
    inputs = plan(registry).cache_group_inputs("openclip__clip_tiny_demo__demo", ["imagenet_r"])
    key = decode_spec_for_row(registry.row("openclip__clip_tiny_demo__demo")).key
    assert inputs == {
        "manifests": ["data/manifests/imagenet_r.parquet"],
        "head": "results/heads/openclip__clip_tiny_demo__demo.pt",
        "weights": "weights/clip.safetensors",
        "decoded": [f"data/decoded/imagenet_r/{key}.npy"],
        "decoded_metadata": [f"data/decoded/imagenet_r/{key}.json"],
    }


def test_classifier_without_decoded_cache_needs_only_its_manifest(registry):
    inputs = plan(registry, decoded_cache=False).cache_group_inputs("timm__test_resnet.demo", ["textures"])
    assert inputs == {"manifests": ["data/manifests/textures.parquet"]}


def test_transform_the_decoded_cache_cannot_hold_falls_back_to_the_reference_path_with_a_warning(registry):
    warnings: list[str] = []
    logits_plan = plan(registry, warnings=warnings)
    assert logits_plan.decode_spec("python__test_logits_workflow.no_normalize__x") is None
    inputs = logits_plan.cache_group_inputs("python__test_logits_workflow.no_normalize__x", ["textures"])
    assert inputs == {"manifests": ["data/manifests/textures.parquet"]}
    assert len(warnings) == 1 and "python__test_logits_workflow.no_normalize__x decodes its own images" in warnings[0]


def test_decode_params_are_the_recipe_of_the_first_model_by_id_with_that_geometry(registry):
    key = decode_spec_for_row(registry.row("timm__test_resnet.demo")).key
    with_key = sorted(m for m in registry.ids[:3] if decode_spec_for_row(registry.row(m)).key == key)
    assert plan(registry).decode_params(key) == decode_spec_for_row(registry.row(with_key[0])).recipe_params()


def test_unknown_geometry_key_names_it_and_the_known_keys(registry):
    logits_plan = plan(registry)
    key = decode_spec_for_row(registry.row("timm__test_resnet.demo")).key
    with pytest.raises(
        ValueError, match=f"no model of the study has preprocessing '224x224-bicubic-0000000000'.*{key}"
    ):
        logits_plan.decode_params("224x224-bicubic-0000000000")


def test_weights_are_listed_only_when_the_registry_names_a_file(registry):
    logits_plan = plan(registry)
    assert logits_plan.weights("openclip__clip_tiny_demo__demo") == ["weights/clip.safetensors"]
    assert logits_plan.weights("timm__test_resnet.demo") == []


def test_a_named_weights_file_that_is_missing_is_no_input_so_the_dag_still_builds(registry, tmp_path, monkeypatch):
    """A missing input would stop the whole run at DAG building, even under --keep-going; left out, the model's
    fetch job fails naming the file and every other model's branch goes on."""
    monkeypatch.chdir(tmp_path)
    logits_plan = plan(registry)
    assert logits_plan.weights("openclip__clip_tiny_demo__demo") == ["weights/clip.safetensors"]
    assert logits_plan.weights_input("openclip__clip_tiny_demo__demo") == []
    assert "weights" not in logits_plan.cache_group_inputs("openclip__clip_tiny_demo__demo", ["imagenet_r"])


def test_group_job_inputs_are_lists_in_dataset_order_plus_the_models_head(registry):
    key = decode_spec_for_row(registry.row("openclip__clip_tiny_demo__demo")).key
    inputs = plan(registry).cache_group_inputs("openclip__clip_tiny_demo__demo", ["imagenet_val", "imagenet_r"])
    assert inputs == {
        "manifests": ["data/manifests/imagenet_val.parquet", "data/manifests/imagenet_r.parquet"],
        "decoded": [f"data/decoded/imagenet_val/{key}.npy", f"data/decoded/imagenet_r/{key}.npy"],
        "decoded_metadata": [f"data/decoded/imagenet_val/{key}.json", f"data/decoded/imagenet_r/{key}.json"],
        "head": "results/heads/openclip__clip_tiny_demo__demo.pt",
    }
    reference = plan(registry, decoded_cache=False).cache_group_inputs("timm__test_resnet.demo", ["textures"])
    assert reference == {"manifests": ["data/manifests/textures.parquet"]}


def test_rows_are_copies_callers_cannot_change(registry):
    logits_plan = plan(registry)
    logits_plan.row("timm__test_resnet.demo")["library"] = "changed"
    assert logits_plan.row("timm__test_resnet.demo")["library"] == "timm"
