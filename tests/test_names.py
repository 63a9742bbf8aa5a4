"""The study's shared names (clip_robustness.names) are defined once and used where they used to be spelled out."""

from __future__ import annotations

import ast
from pathlib import Path

import pandas as pd
import pytest

from clip_robustness import names
from clip_robustness.datasets.label_spaces import N_IMAGENET_CLASSES
from clip_robustness.datasets.registry import load_dataset_registry
from clip_robustness.figures import figure_options
from clip_robustness.figures.style import GROUP_LABELS, GROUP_ORDER, GROUP_PALETTE
from clip_robustness.logits.cutting import LogitsGroups
from clip_robustness.metrics.findings import DEFAULT_GROUPS
from clip_robustness.models.adapters.final_layer import N_CLASSES
from clip_robustness.models.registry import GROUPS

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "clip_robustness"


def test_imagenet_c_ids_match_their_pattern_and_the_dataset_registry_template():
    ids = names.imagenet_c_dataset_ids(["fog", "gaussian_noise"], [1, 5])
    assert ids == ["imagenet_c_fog_1", "imagenet_c_fog_5", "imagenet_c_gaussian_noise_1", "imagenet_c_gaussian_noise_5"]
    match = names.IMAGENET_C_PATTERN.match("imagenet_c_gaussian_noise_5")
    assert match is not None and match["corruption"] == "gaussian_noise" and match["severity"] == "5"
    assert names.IMAGENET_C_PATTERN.match(names.IMAGENET_C_DATASET) is None
    assert names.IMAGENET_C_SEVERITY_PATTERN.fullmatch(names.imagenet_c_severity(3)).group(1) == "3"
    registry = load_dataset_registry(ROOT / "config" / "datasets.yaml")
    assert registry.resolve(names.imagenet_c_id("fog", 3)).id == "imagenet_c_fog_3"


def test_the_logits_groups_write_imagenet_c_ids_and_patterns_with_the_shared_format():
    groups = LogitsGroups.from_study(["imagenet_val", "imagenet_c_fog_3"], {"corruptions": ["fog"], "severities": [3]})
    assert groups.all_imagenet_c_ids() == [names.imagenet_c_id("fog", 3)]
    assert groups.condition_patterns("group") == ["imagenet_c_fog_{group}"]
    per_corruption = LogitsGroups.from_study([], {"corruptions": ["fog"], "severities": [3]}, cut="per_corruption")
    assert per_corruption.condition_patterns("group") == ["imagenet_c_{group}_3"]


def test_path_templates_and_their_functions_agree():
    assert names.cache_path("m", "d") == "results/logits/m/d.parquet" == names.cache_path(model="m", dataset="d")
    assert names.LOGITS.format(model="m", dataset="d") == names.cache_path("m", "d")
    assert names.manifest_path("imagenet_r") == "data/manifests/imagenet_r.parquet"
    assert names.skipped_path("imagenet_r") == "data/manifests/imagenet_r.skipped.csv"
    assert names.extraction_marker("blur.tar") == "data/extracted/blur.tar.complete"
    assert names.archive_path("blur.tar") == "data/archives/blur.tar"
    assert names.decoded_path("d", "g") == "data/decoded/d/g.npy"
    assert names.decoded_metadata_path("d", "g") == "data/decoded/d/g.json"
    assert names.weights_record_path("m") == "data/weights/m.json"
    assert names.head_path("m") == "results/heads/m.pt"
    assert names.figure_path("calibration", "pdf") == "results/figures/calibration.pdf"
    assert names.id_test_dataset("imagenet_val") == "imagenet_val_id_test"
    assert names.marker_archive(names.extraction_marker("blur.tar")) == "blur.tar"
    assert names.archive_path("{archive}") == names.ARCHIVE  # a Snakemake pattern stays a pattern
    with pytest.raises(TypeError, match="takes 2 wildcard"):
        names.cache_path("m", "d", "extra")
    with pytest.raises(KeyError):
        names.cache_path("m")  # a wildcard left unfilled


def test_groups_and_class_count_are_the_shared_ones():
    assert GROUPS == names.GROUPS and GROUP_ORDER == names.PAPER_GROUPS
    assert set(GROUP_LABELS) == set(GROUP_PALETTE) == set(names.PAPER_GROUPS)
    assert DEFAULT_GROUPS["reference"] == names.REFERENCE_GROUP == "standard"
    assert N_CLASSES == N_IMAGENET_CLASSES == names.NUM_CLASSES == 1000


def test_factor_figures_take_the_reference_group_as_a_study_option():
    assert figure_options("factor_robustness", "imagenet_val", [], []) == {"reference_group": names.REFERENCE_GROUP}
    assert figure_options("factor_robustness", "imagenet_val", [], [], "more_data") == {"reference_group": "more_data"}


def test_the_factor_figure_fits_its_trend_to_the_configured_reference_group():
    pytest.importorskip("matplotlib")
    from clip_robustness.figures.factor import plot_factor_robustness
    from clip_robustness.figures.style import Style

    models = {"a": "standard", "b": "standard", "c": "more_data", "d": "more_data"}
    registry = pd.DataFrame(
        {
            "model_id": list(models),
            "group": list(models.values()),
            "training_source": "ImageNet-1k",
            "finetune_route": "none",
        }
    )
    rows = []
    for i, model in enumerate(models):
        rows.append({"model": model, "dataset": "imagenet_x", "metric": "top1", "value": 0.5 + 0.1 * i, "factor": None})
        rows.append(
            {
                "model": model,
                "dataset": "imagenet_x",
                "metric": "factor_accuracy",
                "value": 0.4 + 0.1 * i,
                "factor": "pose",
            }
        )
    metrics = pd.DataFrame(rows).assign(score=None)
    style = Style.from_registry(registry)
    for reference, label in (
        ("standard", "Standard models' trend (logit fit)"),
        ("more_data", "More data models' trend (logit fit)"),
    ):
        fig = plot_factor_robustness(metrics, registry, style, reference_group=reference)
        legend = [t.get_text() for lg in fig.legends for t in lg.get_texts()]
        assert label in legend


def _string_literals(path: Path) -> set[str]:
    """The string constants of a module, f-string parts included, docstrings left out."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and ast.get_docstring(node, clean=False) is not None
    }
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    }


def test_no_production_module_spells_out_a_group_or_the_imagenet_c_format():
    """The paper's group names and the ImageNet-C id format and pattern are written only in names.py."""
    spelled = {*names.PAPER_GROUPS, names.IMAGENET_C_ID, names.IMAGENET_C_PATTERN.pattern}
    found = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if path.name == "names.py" or rel.parts[0] == "demo":
            continue
        hits = _string_literals(path) & spelled
        if hits:
            found[str(rel)] = sorted(hits)
    assert found == {}


#: Modules of the shared-cache work that still write a few output folders themselves (to move to names.py with it).
PATHS_NOT_YET_NAMED = {"workflow/share.py", "workflow/currency.py"}


def test_no_module_or_rule_file_spells_out_an_output_folder():
    """Every stage output's folder is written only in names.py: modules, scripts and rule files use its templates."""
    folders = {
        names.ARCHIVES_DIR,
        names.EXTRACTED_DIR,
        names.MANIFESTS_DIR,
        names.DECODED_DIR,
        names.WEIGHTS_DIR,
        names.HEADS_DIR,
        names.LOGITS_DIR,
        names.FIGURES_DIR,
        names.METRICS_DIR,
        names.TABLES_DIR,
        names.QC_DIR,
        names.REPORT_CARDS_DIR,
        names.CHECKSUMS_DIR,
        names.USER_SUPPLIED_DIR,
        names.LOGS_DIR,
        names.BENCHMARKS_DIR,
    }
    found = {}
    for path in PACKAGE.rglob("*.py"):
        rel = str(path.relative_to(PACKAGE))
        if path.name == "names.py" or rel.startswith("demo/") or rel in PATHS_NOT_YET_NAMED:
            continue
        hits = {folder for text in _string_literals(path) for folder in folders if folder in text}
        if hits:
            found[rel] = sorted(hits)
    for path in (ROOT / "workflow" / "rules").glob("*.smk"):
        code = "\n".join(line.split("#", 1)[0] for line in path.read_text(encoding="utf-8").splitlines())
        code = "\n".join(part for i, part in enumerate(code.split('"""')) if i % 2 == 0)  # docstrings aside
        hits = {folder for folder in folders if folder in code}
        if hits:
            found[path.name] = sorted(hits)
    assert found == {}
