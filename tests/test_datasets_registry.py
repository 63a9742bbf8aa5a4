"""The real registry (config/datasets.yaml) and the label spaces it names."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clip_robustness.datasets.extract import extract_archive
from clip_robustness.datasets.label_spaces import (
    imagenet_a_indices,
    imagenet_r_indices,
    imagenet_synsets,
    label_space_named,
    objectnet_mapping,
    package_file,
)
from clip_robustness.datasets.manifest import imagenet_val_labels
from clip_robustness.datasets.registry import load_dataset_registry
from clip_robustness.demo import archives as synthetic

REPO = Path(__file__).resolve().parents[1]
REGISTRY = REPO / "config" / "datasets.yaml"
SOURCES = REPO / "config" / "dataset-sources.tsv"
#: docs/methods.md ("Datasets and label spaces"), with ImageNet-C as its 15 corruptions x 5 severities.
SPEC_DATASETS = [
    "imagenet_val",
    "imagenet_v2_threshold07",
    "imagenet_v2_matched_frequency",
    "imagenet_v2_top_images",
    "imagenet_sketch",
    "imagenet_r",
    "imagenet_a",
    "objectnet",
    "inaturalist",
    "sun",
    "places",
    "textures",
    "imagenet_o",
]
IMAGENET_C = [
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
]


@pytest.fixture(scope="module")
def registry():
    return load_dataset_registry(REGISTRY)


def sources() -> list[dict[str, str]]:
    with open(SOURCES, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def test_every_spec_dataset_resolves_with_its_role(registry):
    ids = [*SPEC_DATASETS, *(f"imagenet_c_{c}_{s}" for c in IMAGENET_C for s in range(1, 6))]
    for dataset in ids:
        entry = registry.resolve(dataset)
        assert entry.is_ood == (dataset in {"inaturalist", "sun", "places", "textures", "imagenet_o"}), dataset
    assert set(ids) <= set(registry.known_ids())


def test_every_archive_url_and_checksum_comes_from_the_sources_table(registry):
    rows = {row["file"]: row for row in sources()}
    for name, entry in registry.archives.items():
        row = rows[name]
        assert entry.urls[0] == row["url"], name
        assert entry.sha256 == (row["sha256"] or None), name
        assert entry.md5 == (row["md5"] or None), name
        assert entry.size_bytes == (int(row["size_bytes"]) if row["size_bytes"] else None), name
        for mirror in entry.urls[1:]:
            assert mirror in row["notes"] or mirror in row["source"], (name, mirror)
    assert set(rows) == set(registry.archives)


def test_url_override_is_tried_first(registry):
    mirrored = load_dataset_registry(
        REGISTRY, url_overrides={"imagenet-r.tar": "https://mirror.example/imagenet-r.tar"}
    )
    assert mirrored.archive("imagenet-r.tar").urls == (
        "https://mirror.example/imagenet-r.tar",
        registry.archive("imagenet-r.tar").url,
    )


def test_imagenet_c_ids_expand_to_their_archive_and_folder(registry):
    entry = registry.resolve("imagenet_c_elastic_transform_4")
    assert (
        entry.archives == ("digital.tar",)
        and entry.subdir == "elastic_transform/4"
        and entry.label_space == "imagenet1k"
    )


def test_figure_titles_are_short_titles_else_titles_and_never_reach_the_rules_params(registry):
    titles = registry.figure_titles(SPEC_DATASETS + ["imagenet_c_fog_3"])
    for dataset in SPEC_DATASETS:
        entry = registry.resolve(dataset)
        assert titles[dataset] == (entry.short_title or entry.title) and len(titles[dataset]) <= len(entry.title)
        assert "short_title" not in entry.to_dict()  # display only: renaming it reruns no dataset job
    assert titles["imagenet_val"] == "ImageNet" and titles["sun"] == "SUN"  # shorter than "SUN (MOS OOD subset)"
    assert (
        titles["imagenet_c"] == "ImageNet-C"
        and titles["imagenet_c_fog_3"] == registry.resolve("imagenet_c_fog_3").title
    )
    # the demo's generated registry copies the entries, short titles included
    assert synthetic.registry_datasets("sun")["sun"]["short_title"] == "SUN"


def test_only_imagenet_val_and_its_devkit_are_user_supplied(registry):
    assert sorted(n for n, a in registry.archives.items() if a.user_supplied) == [
        "ILSVRC2012_devkit_t12.tar.gz",
        "ILSVRC2012_img_val.tar",
    ]


def test_label_spaces_come_from_timm_shipped_class_files():
    synsets = imagenet_synsets()
    for name, indices in [("imagenet_a", imagenet_a_indices()), ("imagenet_r", imagenet_r_indices())]:
        wnids = package_file("timm", f"data/_info/{name}_synsets.txt").read_text().split()
        assert [synsets.index(w) for w in wnids] == indices  # indices and synsets files agree
        space = label_space_named(name)
        assert space.class_indices.tolist() == indices and len(indices) == 200
    assert label_space_named("imagenet1k").is_full and label_space_named("ood").name == "ood"


def test_imagenet_val_labels_cover_all_50000_images_and_match_imagenet_x(registry):
    labels = imagenet_val_labels()
    assert len(labels) == 50_000
    assert np.bincount(list(labels.values())).tolist() == [50] * 1000
    frame = pd.read_csv(package_file("imagenet_x", "annotations/filename_label.csv"))
    assert labels["ILSVRC2012_val_00000001.JPEG"] == int(
        frame.set_index("file_name").loc["ILSVRC2012_val_00000001.JPEG", "label"]
    )


def test_objectnet_mapping_resolves_names_through_the_2012_id_permutation(tmp_path):
    # Pen is three ImageNet classes in the real mapping: ballpoint 418, quill 749, fountain pen 563
    archive = synthetic.write_objectnet_zip(
        tmp_path, {"pen": [418, 749, 563], "mug": [504]}, 1, synthetic.default_renderer
    )
    extract_archive(archive, tmp_path / "x", tmp_path / "x.complete")
    mapping = objectnet_mapping(tmp_path / "x" / "objectnet-1.0" / "mappings")
    assert mapping.folder_to_indices == {"pen": (418, 563, 749), "mug": (504,)}
    assert mapping.label_of_folder("pen") == 418
    space = mapping.label_space()
    # groups: folders in sorted order -> mug 0, pen 1
    assert space.group_of_label(np.array([418, 749, 504, 0])).tolist() == [1, 1, 0, -1]
    names = json.loads((tmp_path / "x" / "objectnet-1.0" / "mappings" / "objectnet_to_imagenet_1k.json").read_text())
    assert names["Pen"].count("; ") == 2  # the real format: ImageNet names joined by "; "
