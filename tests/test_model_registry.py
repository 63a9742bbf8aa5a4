"""The model registry: the shipped 210-model table, its validation, and its check against open_clip/timm."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from clip_robustness.models.registry import (  # noqa: E402
    REGISTRY_COLUMNS,
    RegistryError,
    UnknownModelError,
    check_registry_against_libraries,
    load_model_registry,
    main,
    model_id_for,
    parse_model_id,
)

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "config" / "models.tsv"

ROWS = {
    "vitb32": [
        "openclip__ViT-B-32-quickgelu__openai",
        "open_clip",
        "ViT-B-32-quickgelu",
        "openai",
        "clip_zeroshot",
        "WIT-400M",
        "400000000",
        "none",
        "ViT",
        "224",
        "",
    ],
    "convnext": [
        "timm__convnext_tiny.fb_in1k",
        "timm",
        "convnext_tiny",
        "fb_in1k",
        "standard",
        "ImageNet-1k",
        "1281167",
        "none",
        "ConvNeXt",
        "224",
        "",
    ],
    "clipft": [
        "timm__vit_base_patch16_clip_224.openai_ft_in1k",
        "timm",
        "vit_base_patch16_clip_224",
        "openai_ft_in1k",
        "clip_ft",
        "WIT-400M",
        "400000000",
        "in1k",
        "ViT",
        "224",
        "",
    ],
}


def write_registry(path: Path, rows: list[list[str]], header: list[str] | None = None) -> Path:
    lines = ["\t".join(header or REGISTRY_COLUMNS)] + ["\t".join(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def shipped():
    return load_model_registry(SHIPPED)


# ----------------------------------------------------------------------------- the shipped registry


def test_shipped_registry_has_51_zero_shot_32_clip_ft_and_127_imagenet_classifiers(shipped):
    groups = shipped.table["group"].value_counts()
    assert groups["clip_zeroshot"] == 51
    assert groups["clip_ft"] == 32
    assert groups.get("standard", 0) + groups.get("more_data", 0) + groups.get("adversarial", 0) == 127
    assert len(shipped.ids) == 210
    assert set(shipped.table.loc[shipped.table["group"] == "clip_zeroshot", "library"]) == {"open_clip"}
    assert set(shipped.table.loc[shipped.table["group"] != "clip_zeroshot", "library"]) == {"timm"}


def test_shipped_registry_ids_are_unique_filesystem_safe_and_reversible(shipped):
    table = shipped.table
    assert table["model_id"].is_unique
    for record in table.to_dict("records"):
        model_id = record["model_id"]
        assert "/" not in model_id and not model_id.startswith((".", "-")) and model_id == model_id.strip()
        assert model_id_for(record["library"], record["architecture"], record["pretrained"]) == model_id
        assert parse_model_id(model_id) == (record["library"], record["architecture"], record["pretrained"])


def test_shipped_registry_has_every_required_field_and_columns_in_contract_order(shipped):
    assert tuple(shipped.table.columns) == REGISTRY_COLUMNS
    required = [c for c in REGISTRY_COLUMNS if c != "weights_file"]
    assert not (shipped.table[required] == "").any().any()
    assert (shipped.table["weights_file"] == "").all()
    imagenet_1k = shipped.table[shipped.table["training_source"] == "ImageNet-1k"]
    assert set(imagenet_1k["group"]) == {"standard"} and set(imagenet_1k["training_size"]) == {1281167}


def test_every_shipped_entry_resolves_in_the_pinned_open_clip_and_timm(shipped):
    import open_clip
    import timm

    assert (open_clip.__version__, timm.__version__) == ("3.3.0", "1.0.31")
    assert check_registry_against_libraries(shipped) == []


def test_registry_generator_rebuilds_the_shipped_table_from_the_libraries():
    spec = importlib.util.spec_from_file_location("build_model_registry", ROOT / "tools" / "build_model_registry.py")
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    rebuilt = builder.build_registry(ROOT / "config" / "reference" / "timm-model_metadata-in1k.csv")
    shipped = pd.read_csv(SHIPPED, sep="\t", dtype=str, keep_default_na=False)
    pd.testing.assert_frame_equal(rebuilt.astype(str), shipped)


def test_loading_the_registry_imports_neither_torch_nor_the_model_libraries():
    code = (
        "import sys; from clip_robustness.models.registry import load_model_registry; "
        f"load_model_registry({str(SHIPPED)!r}); "
        "print(sorted(m for m in ('torch', 'open_clip', 'timm') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ----------------------------------------------------------------------------- lookups


def test_select_all_keeps_file_order_and_a_list_keeps_its_order_without_duplicates(tmp_path):
    registry = load_model_registry(write_registry(tmp_path / "m.tsv", list(ROWS.values())))
    assert registry.select("all") == [row[0] for row in ROWS.values()]
    wanted = [ROWS["clipft"][0], ROWS["vitb32"][0], ROWS["clipft"][0]]
    assert registry.select(wanted) == [ROWS["clipft"][0], ROWS["vitb32"][0]]


def test_select_unknown_id_names_it_and_suggests_close_matches(tmp_path):
    registry = load_model_registry(write_registry(tmp_path / "m.tsv", list(ROWS.values())))
    with pytest.raises(UnknownModelError) as error:
        registry.select(["timm__convnext_tiny.fb_in1"])
    message = str(error.value)
    assert "'timm__convnext_tiny.fb_in1'" in message and "timm__convnext_tiny.fb_in1k" in message
    assert error.value.close_matches[0] == "timm__convnext_tiny.fb_in1k"


def test_row_returns_integers_and_is_zero_shot_follows_the_group(tmp_path):
    registry = load_model_registry(write_registry(tmp_path / "m.tsv", list(ROWS.values())))
    row = registry.row(ROWS["convnext"][0])
    assert row["training_size"] == 1281167 and isinstance(row["resolution"], int)
    assert row["weights_file"] == ""
    assert registry.is_zero_shot(ROWS["vitb32"][0]) and not registry.is_zero_shot(ROWS["clipft"][0])
    with pytest.raises(UnknownModelError):
        registry.row("openclip__nope__nope")


# ----------------------------------------------------------------------------- bad input


def test_missing_column_names_the_file_and_the_column(tmp_path):
    header = [c for c in REGISTRY_COLUMNS if c != "resolution"]
    rows = [[v for c, v in zip(REGISTRY_COLUMNS, ROWS["vitb32"]) if c != "resolution"]]
    path = write_registry(tmp_path / "m.tsv", rows, header)
    with pytest.raises(RegistryError, match=r"m\.tsv: missing column\(s\) resolution"):
        load_model_registry(path)


def test_empty_required_field_names_the_line_model_and_column(tmp_path):
    broken = list(ROWS["clipft"])
    broken[REGISTRY_COLUMNS.index("training_source")] = ""
    path = write_registry(tmp_path / "m.tsv", [ROWS["vitb32"], broken])
    with pytest.raises(RegistryError) as error:
        load_model_registry(path)
    message = str(error.value)
    assert str(path) in message and "line 3" in message
    assert ROWS["clipft"][0] in message and "'training_source' is empty" in message


def test_duplicate_id_names_both_lines(tmp_path):
    path = write_registry(tmp_path / "m.tsv", [ROWS["vitb32"], ROWS["convnext"], ROWS["vitb32"]])
    with pytest.raises(RegistryError, match=r"line 4 .*duplicate model_id, first defined on line 2"):
        load_model_registry(path)


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [
        ("library", "keras", "unknown library 'keras'"),
        ("group", "clip", "unknown group 'clip'"),
        ("resolution", "224px", "'resolution' must be a positive integer, got '224px'"),
        ("training_size", "0", "'training_size' must be a positive integer"),
        ("model_id", "timm__a/b", "filesystem-safe"),
    ],
)
def test_invalid_value_is_rejected_naming_the_column_and_value(tmp_path, column, value, expected):
    broken = list(ROWS["convnext"])
    broken[REGISTRY_COLUMNS.index(column)] = value
    path = write_registry(tmp_path / "m.tsv", [ROWS["vitb32"], broken])
    with pytest.raises(RegistryError) as error:
        load_model_registry(path)
    assert expected in str(error.value) and "line 3" in str(error.value)


def test_missing_registry_file_names_the_path(tmp_path):
    with pytest.raises(RegistryError, match=r"nowhere\.tsv: cannot read it"):
        load_model_registry(tmp_path / "nowhere.tsv")


# ----------------------------------------------------------------------------- check against the libraries


def test_check_reports_unknown_tag_quickgelu_mismatch_and_wrong_resolution(tmp_path):
    unknown_tag = list(ROWS["convnext"])
    unknown_tag[0], unknown_tag[3] = "timm__convnext_tiny.fb_in2k", "fb_in2k"
    plain_gelu = list(ROWS["vitb32"])  # the OpenAI weights were trained with QuickGELU
    plain_gelu[0], plain_gelu[2] = "openclip__ViT-B-32__openai", "ViT-B-32"
    wrong_size = list(ROWS["clipft"])
    wrong_size[REGISTRY_COLUMNS.index("resolution")] = "384"
    registry = load_model_registry(
        write_registry(tmp_path / "m.tsv", [ROWS["vitb32"], unknown_tag, plain_gelu, wrong_size])
    )
    problems = check_registry_against_libraries(registry)
    assert len(problems) == 3
    assert "timm__convnext_tiny.fb_in2k" in problems[0] and "convnext_tiny.fb_in2k is not in timm 1.0.31" in problems[0]
    assert "openclip__ViT-B-32__openai" in problems[1] and "'ViT-B-32-quickgelu'" in problems[1]
    assert "resolution 384 but the library's input size is 224" in problems[2]


def test_check_cli_exits_1_and_prints_each_problem(tmp_path, capsys):
    unknown = list(ROWS["vitb32"])
    unknown[0], unknown[3] = "openclip__ViT-B-32-quickgelu__laion9b", "laion9b"
    path = write_registry(tmp_path / "m.tsv", [ROWS["convnext"], unknown])
    assert main(["check", str(path)]) == 1
    captured = capsys.readouterr()
    assert "('ViT-B-32-quickgelu', 'laion9b') is not in open_clip 3.3.0 list_pretrained()" in captured.err
    assert "2 models" in captured.out and "1 problem(s)" in captured.out


def test_local_weights_row_needs_an_existing_architecture_and_file(tmp_path):
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"\0")
    local = list(ROWS["convnext"])
    local[0], local[3], local[-1] = "timm__convnext_tiny.mine", "mine", str(weights)
    gone = list(local)
    gone[0], gone[-1] = "timm__convnext_tiny.gone", str(tmp_path / "gone.safetensors")
    registry = load_model_registry(write_registry(tmp_path / "m.tsv", [local, gone]))
    problems = check_registry_against_libraries(registry)
    assert len(problems) == 1 and "timm__convnext_tiny.gone" in problems[0] and "does not exist" in problems[0]


# ----------------------------------------------------------------------------- adapters


@pytest.mark.parametrize(
    ("library", "architecture", "pretrained"),
    [
        ("open_clip", "ViT-B-32-quickgelu", "openai"),
        ("timm", "convnext_tiny", "fb_in1k"),
        ("python", "clip_robustness.demo.models:tiny_convnet", "demo"),
    ],
)
def test_every_adapters_model_id_is_filesystem_safe_and_parses_back(library, architecture, pretrained):
    model_id = model_id_for(library, architecture, pretrained)
    assert parse_model_id(model_id) == (library, architecture, pretrained)
    assert "/" not in model_id and ":" not in model_id


def test_zero_shot_group_and_a_library_without_text_head_are_refused_naming_the_line(tmp_path):
    zero_shot_timm = list(ROWS["convnext"])
    zero_shot_timm[REGISTRY_COLUMNS.index("group")] = "clip_zeroshot"
    with pytest.raises(RegistryError, match=r"line 3 .*group 'clip_zeroshot' but a timm model has no zero-shot"):
        load_model_registry(write_registry(tmp_path / "m.tsv", [ROWS["vitb32"], zero_shot_timm]))


def test_open_clip_model_outside_the_zero_shot_group_is_refused(tmp_path):
    clip_ft = list(ROWS["vitb32"])
    clip_ft[REGISTRY_COLUMNS.index("group")] = "clip_ft"
    with pytest.raises(RegistryError, match=r"line 2 .*group 'clip_ft' but a open_clip model needs a zero-shot"):
        load_model_registry(write_registry(tmp_path / "m.tsv", [clip_ft]))


def test_check_reports_a_python_factory_that_does_not_import(tmp_path):
    good = [
        "python__clip_robustness.demo.models.tiny_convnet__demo",
        "python",
        "clip_robustness.demo.models:tiny_convnet",
        "demo",
        "standard",
        "demo-clean",
        "1280",
        "none",
        "CNN",
        "32",
        "",
    ]
    bad = list(good)
    bad[0], bad[2] = "python__clip_robustness.demo.models.nope__demo", "clip_robustness.demo.models:nope"
    problems = check_registry_against_libraries(load_model_registry(write_registry(tmp_path / "m.tsv", [good, bad])))
    assert len(problems) == 1
    assert "python__clip_robustness.demo.models.nope__demo" in problems[0] and "no function 'nope'" in problems[0]
