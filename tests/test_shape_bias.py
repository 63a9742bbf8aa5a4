"""Shape bias on cue-conflict stimuli: the 16-category decision, the shape-bias formula, the layout and its manifest."""

from __future__ import annotations

import tarfile

import numpy as np
import pytest

from clip_robustness.datasets.cue_conflict import (
    CategoryMapping,
    list_cue_conflict,
    load_category_mapping,
    parse_category_mapping,
    texture_category,
)
from clip_robustness.datasets.errors import ManifestError
from clip_robustness.datasets.manifest import build_manifest
from clip_robustness.datasets.registry import DatasetEntry, RegistryError, load_dataset_registry
from clip_robustness.demo.cue_conflict import demo_category_mapping, write_category_mapping, write_cue_conflict_tar
from clip_robustness.metrics.shape_bias import (
    category_decisions,
    category_probabilities,
    shape_bias,
    shape_bias_rows,
    softmax,
)


def test_the_shipped_mapping_has_model_vs_humans_16_categories():
    mapping = load_category_mapping()
    assert mapping.categories == tuple(
        sorted(
            [
                "knife",
                "keyboard",
                "elephant",
                "bicycle",
                "airplane",
                "clock",
                "oven",
                "chair",
                "bear",
                "boat",
                "cat",
                "bottle",
                "truck",
                "car",
                "bird",
                "dog",
            ]
        )
    )
    assert dict(zip(mapping.categories, mapping.indices))["knife"] == (499,)
    assert len(dict(zip(mapping.categories, mapping.indices))["dog"]) == 109
    indices, groups = mapping.label_space_arrays()
    assert len(indices) == len(set(indices)) == sum(len(i) for i in mapping.indices)
    assert np.all(np.diff(indices) > 0)


def test_mean_over_a_categorys_classes_decides_not_the_single_top_class():
    # category "a" pools classes 0..3, "b" class 10: row 0 puts 0.4 on class 10 and 0.15 on each of 0..3, so the top
    # single class is in "b" (mean 0.4) while "a"'s mean is 0.15: "b". Row 1: 0.2 each on 0..3, 0.1 on 10 -> "a".
    mapping = CategoryMapping(("a", "b"), ((0, 1, 2, 3), (10,)))
    p = np.zeros((2, 1000))
    p[0, :4], p[0, 10] = 0.15, 0.4
    p[1, :4], p[1, 10] = 0.2, 0.1
    p[1, 500] = 1 - p[1].sum()  # mass outside every category does not count
    np.testing.assert_allclose(category_probabilities(p, mapping.indices), [[0.15, 0.4], [0.2, 0.1]])
    assert category_decisions(p, mapping.indices).tolist() == [1, 0]


def test_shape_bias_counts_shape_and_texture_decisions_on_conflicting_images_only():
    shape = np.array([0, 0, 1, 1, 2, 2, 3])
    texture = np.array([1, 2, 0, 1, 0, 2, 0])  # rows 3 and 5 agree: left out, whatever is decided there
    decisions = np.array([0, 2, 1, 1, 3, 2, 0])  # shape, texture, shape, (excluded), neither, (excluded), texture
    result = shape_bias(decisions, shape, texture)
    assert (result.n_conflict, result.n_shape, result.n_texture) == (5, 2, 2)
    assert result.shape_bias == pytest.approx(2 / 4)
    assert result.shape_fraction == pytest.approx(2 / 5) and result.texture_fraction == pytest.approx(2 / 5)
    assert np.isnan(shape_bias(np.array([3]), np.array([0]), np.array([1])).shape_bias)


def test_texture_category_is_read_from_the_file_name_like_model_vs_human():
    assert texture_category("airplane1-bicycle2.png") == "bicycle"
    assert texture_category("cue-conflict/dog/XXX_dog10-bird2.png") == "bird"


@pytest.fixture(scope="module")
def demo_stimuli(tmp_path_factory):
    """The demo generator's archive, extracted: the real layout with the demo's category mapping."""
    out = tmp_path_factory.mktemp("cue")
    mapping = demo_category_mapping([1, 7, 30])
    mapping_path = write_category_mapping(mapping, out / "categories.tsv")
    archive = write_cue_conflict_tar(out, mapping, images_per_pair=2, seed=0, size=16)
    with tarfile.open(archive) as tar:
        tar.extractall(out / "x", filter="data")
    return out / "x" / "cue-conflict", mapping, mapping_path


def test_layout_parser_reads_shape_from_the_folder_and_texture_from_the_name(demo_stimuli):
    root, mapping, mapping_path = demo_stimuli
    assert mapping.categories == ("airplane", "bear", "bicycle")
    assert parse_category_mapping(mapping_path.read_text(), "x") == CategoryMapping(
        mapping.categories, mapping.indices, "x"
    )
    images = list_cue_conflict(root, mapping)
    assert len(images) == 3 * 3 * 2
    assert {(i.shape, i.texture) for i in images} == {(s, t) for s in mapping.categories for t in mapping.categories}
    for image in images:
        assert image.path.startswith(f"{image.shape}/{image.shape}") and f"-{image.texture}" in image.path
    (root / "bear" / "bear99-zebra1.png").write_bytes((root / images[0].path).read_bytes())
    with pytest.raises(ManifestError, match="zebra"):
        list_cue_conflict(root, mapping)
    (root / "bear" / "bear99-zebra1.png").unlink()


def test_manifest_labels_the_shape_and_the_rows_score_against_the_name(demo_stimuli):
    root, mapping, mapping_path = demo_stimuli
    entry = DatasetEntry(
        "cue_conflict",
        "t",
        ("cue-conflict.tar.gz",),
        "cue_conflict",
        "cue-conflict",
        "cue_conflict",
        category_mapping=str(mapping_path),
    )
    build = build_manifest(entry, root, workers=1)
    assert build.metadata["categories"] == {"airplane": [1], "bear": [7], "bicycle": [30]}
    paths, labels = build.table["path"].tolist(), build.table["label"].to_numpy()
    assert [{1: "airplane", 7: "bear", 30: "bicycle"}[int(y)] for y in labels] == [p.split("/")[0] for p in paths]
    # a model that always answers the texture class: shape bias 0, texture fraction 1 over the 12 conflicting images
    logits = np.full((len(paths), 1000), -5.0)
    for row, path in enumerate(paths):
        logits[row, mapping.indices[mapping.position(texture_category(path))][0]] = 5.0
    rows = {r["metric"]: r["value"] for r in shape_bias_rows("m", "cue_conflict", logits, paths, labels, mapping)}
    assert rows == {"shape_bias": 0.0, "shape_fraction": 0.0, "texture_fraction": 1.0, "n_cue_conflict": 12.0}
    assert np.allclose(softmax(logits).sum(axis=1), 1.0)


def test_registry_keeps_layout_and_label_space_together(tmp_path):
    text = (
        "archives:\n  a.tar: {url: 'file:///a.tar', sha256: null, source: x}\n"
        "datasets:\n  c: {title: C, archives: [a.tar], layout: cue_conflict, label_space: imagenet1k}\n"
    )
    (tmp_path / "r.yaml").write_text(text)
    with pytest.raises(RegistryError, match="cue_conflict go together"):
        load_dataset_registry(tmp_path / "r.yaml")
    (tmp_path / "r.yaml").write_text(text.replace("label_space: imagenet1k", "label_space: cue_conflict"))
    assert load_dataset_registry(tmp_path / "r.yaml").resolve("c").category_mapping == "model_vs_human_16"


def test_the_study_takes_cue_conflict_sets_in_their_own_role_only():
    from types import SimpleNamespace

    from clip_robustness.workflow.study import ConfigError, Study

    registry = load_dataset_registry("config/datasets.yaml")
    models = SimpleNamespace(select=lambda ids: ["m"])
    config = {
        "models": "all",
        "datasets": {
            "in_distribution": "imagenet_val",
            "test_conditions": ["imagenet_r"],
            "ood": ["textures"],
            "cue_conflict": ["cue_conflict"],
        },
    }
    study = Study.from_config(config, registry, models)
    assert study.cue_conflict == ("cue_conflict",) and study.dataset_ids[-1] == "cue_conflict"
    config["datasets"]["test_conditions"] = ["imagenet_r", "cue_conflict"]
    config["datasets"]["cue_conflict"] = []
    with pytest.raises(ConfigError, match="datasets.cue_conflict"):
        Study.from_config(config, registry, models)
