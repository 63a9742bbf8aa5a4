"""`python -m clip_robustness.models.add_model` (`make add-model`): a user's own model as one validated row."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from clip_robustness.models.add_model import AddModelError, ModelSpec, main, parse_model
from clip_robustness.models.registry import load_model_registry

ROOT = Path(__file__).resolve().parents[1]
DEMO_REGISTRY = ROOT / "config" / "demo" / "models.tsv"


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, Path]:
    """Weights files saved from timm's real constructors: test_efficientnet and test_vit (random weights)."""
    import timm
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("weights")
    files = {}
    for architecture in ("test_efficientnet", "test_vit"):
        model = timm.create_model(architecture, pretrained=False)
        files[architecture] = folder / f"{architecture}_mine.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, files[architecture])
    return files


@pytest.fixture
def registry(tmp_path) -> Path:
    """A copy of the demo's model registry."""
    return Path(shutil.copy(DEMO_REGISTRY, tmp_path / "models.tsv"))


def own_args(weights_file: Path, registry: Path, *extra: str) -> list[str]:
    return [
        "timm:test_efficientnet",
        "--weights",
        str(weights_file),
        "--group",
        "standard",
        "--training-source",
        "ImageNet-1k",
        "--training-size",
        "1281167",
        "--architecture-family",
        "EfficientNet",
        "--registry",
        str(registry),
        *extra,
    ]


def test_local_weights_timm_model_is_appended_as_an_own_row_and_the_other_rows_stay_the_papers(weights, registry):
    before = registry.read_text().splitlines()
    assert main(own_args(weights["test_efficientnet"], registry)) == 0

    after = registry.read_text().splitlines()
    assert after[0] == before[0] + "\tstudy" and after[1:-1] == before[1:]
    table = load_model_registry(registry)
    new = table.ids[-1]
    assert new == "timm__test_efficientnet.test_efficientnet_mine"
    assert table.study(new) == "own" and {table.study(m) for m in table.ids[:-1]} == {"paper"}
    row = table.row(new)
    assert row["weights_file"] == str(weights["test_efficientnet"]) and row["resolution"] == 160
    assert "study" not in row  # not part of the model's definition: moving a model between studies reruns nothing


def test_weights_of_another_architecture_are_refused_naming_the_file_and_nothing_is_written(weights, registry, capsys):
    before = registry.read_bytes()
    assert main(own_args(weights["test_vit"], registry)) == 2
    message = capsys.readouterr().err
    assert "--weights" in message and "test_vit_mine.safetensors" in message and "'test_efficientnet'" in message
    assert registry.read_bytes() == before


def test_a_model_already_in_the_registry_is_refused_naming_its_line(weights, registry, capsys):
    assert main(own_args(weights["test_efficientnet"], registry)) == 0
    added_line = len(registry.read_text().splitlines())  # the row just appended (line 1 is the header)
    assert main(own_args(weights["test_efficientnet"], registry)) == 2
    assert f"duplicate model_id, first defined on line {added_line}" in capsys.readouterr().err


def test_unknown_group_is_refused_naming_the_option_and_the_choices(weights, registry, capsys):
    args = own_args(weights["test_efficientnet"], registry)
    args[args.index("--group") + 1] = "mine"
    assert main(args) == 2
    assert "--group 'mine': expected one of clip_zeroshot, clip_ft" in capsys.readouterr().err


def test_missing_training_size_is_refused_unless_the_source_is_unknown(weights, registry, capsys):
    args = own_args(weights["test_efficientnet"], registry)
    del args[args.index("--training-size") : args.index("--training-size") + 2]
    assert main(args) == 2
    assert "--training-size: required" in capsys.readouterr().err
    args[args.index("--training-source") + 1] = "unknown"
    assert main(args) == 0
    assert load_model_registry(registry).table.iloc[-1]["training_size"] == 0


def test_hub_repo_of_a_listed_timm_checkpoint_resolves_to_its_timm_name():
    assert parse_model("hf-hub:timm/resnet50.a1_in1k") == ModelSpec("timm", "resnet50", "a1_in1k")


def test_hub_repo_the_libraries_do_not_list_is_refused_saying_to_use_a_weights_file():
    with pytest.raises(AddModelError, match=r"'someone/my-model'.*--weights FILE"):
        parse_model("hf-hub:someone/my-model")


def test_open_clip_tag_trained_with_quickgelu_maps_to_the_quickgelu_config_as_in_the_paper_registry(tmp_path, capsys):
    registry = Path(shutil.copy(ROOT / "config" / "models.tsv", tmp_path / "models.tsv"))
    # open_clip lists RN50/cc12m under the plain config; its weights were trained with QuickGELU.
    assert (
        main(
            [
                "open_clip:RN50:cc12m",
                "--group",
                "clip_zeroshot",
                "--training-source",
                "CC12M",
                "--training-size",
                "12000000",
                "--registry",
                str(registry),
            ]
        )
        == 2
    )
    assert "(model_id 'openclip__RN50-quickgelu__cc12m'): duplicate model_id" in capsys.readouterr().err
