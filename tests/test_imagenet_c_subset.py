"""The ImageNet-C subset (clip_robustness.datasets.subset): deterministic, seeded, class-balanced, recorded."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clip_robustness.datasets.label_spaces import imagenet_synsets
from clip_robustness.datasets.manifest import build_manifest
from clip_robustness.datasets.registry import load_dataset_registry
from clip_robustness.datasets.subset import SUBSET_METHOD, class_balanced_subset, imagenet_c_subset_param

REAL_REGISTRY = Path(__file__).resolve().parents[1] / "config" / "datasets.yaml"


def listing(n_classes=10, per_class=12):
    paths = [
        f"n{c:08d}/ILSVRC2012_val_{c * per_class + i:08d}.JPEG" for c in range(n_classes) for i in range(per_class)
    ]
    labels = [c for c in range(n_classes) for _ in range(per_class)]
    return paths, labels


def test_subset_takes_the_same_number_of_images_from_every_class():
    paths, labels = listing()
    keep = class_balanced_subset(paths, labels, 50, seed=0)

    assert len(keep) == 50 and set(Counter(labels[i] for i in keep).values()) == {5}


def test_remainder_goes_to_distinct_classes_one_image_each():
    paths, labels = listing()
    counts = Counter(labels[i] for i in class_balanced_subset(paths, labels, 53, seed=0))

    assert sorted(counts.values()) == [5] * 7 + [6] * 3


def test_subset_depends_on_file_names_not_on_listing_order():
    paths, labels = listing()
    order = np.random.default_rng(0).permutation(len(paths))
    shuffled_paths, shuffled_labels = [paths[i] for i in order], [labels[i] for i in order]

    chosen = {paths[i] for i in class_balanced_subset(paths, labels, 30, seed=4)}
    chosen_shuffled = {shuffled_paths[i] for i in class_balanced_subset(shuffled_paths, shuffled_labels, 30, seed=4)}

    assert chosen == chosen_shuffled


def test_another_seed_chooses_other_images():
    paths, labels = listing()

    assert class_balanced_subset(paths, labels, 30, seed=0) != class_balanced_subset(paths, labels, 30, seed=1)


def test_subset_at_least_the_dataset_keeps_everything_in_order():
    paths, labels = listing(3, 4)

    assert class_balanced_subset(paths, labels, 100, seed=0) == list(range(12))


def test_only_imagenet_c_conditions_of_the_study_get_a_subset():
    ids = ["imagenet_c_fog_1"]
    config = {"images_per_condition": 5000, "subset_seed": 3}

    assert imagenet_c_subset_param("imagenet_c_fog_1", ids, config) == {"images_per_condition": 5000, "seed": 3}
    assert imagenet_c_subset_param("imagenet_val", ids, config) is None
    assert imagenet_c_subset_param("imagenet_c_fog_1", ids, {"images_per_condition": None}) is None


def write_condition(root: Path, classes=(3, 7, 9), per_class=4) -> Path:
    """An ImageNet-C condition folder in the real layout (<wnid>/<val file name>), the same names in every condition."""
    wnids = imagenet_synsets()
    for c in classes:
        for i in range(per_class):
            path = root / wnids[c] / f"ILSVRC2012_val_{c * 100 + i:08d}.JPEG"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (12, 10), (c, i, 0)).save(path)
    return root


def test_subset_manifests_keep_the_same_images_in_every_condition_and_record_the_subset(tmp_path):
    registry = load_dataset_registry(REAL_REGISTRY)
    subset = {"images_per_condition": 6, "seed": 0}
    fog = build_manifest(registry.resolve("imagenet_c_fog_1"), write_condition(tmp_path / "fog/1"), subset=subset)
    snow = build_manifest(registry.resolve("imagenet_c_snow_5"), write_condition(tmp_path / "snow/5"), subset=subset)
    full = build_manifest(registry.resolve("imagenet_c_fog_1"), tmp_path / "fog/1")

    assert fog.table["path"].tolist() == snow.table["path"].tolist()
    assert Counter(fog.table["label"].tolist()) == {3: 2, 7: 2, 9: 2}
    assert fog.table["index"].tolist() == list(range(6))
    assert fog.metadata["subset"] == {
        "method": SUBSET_METHOD,
        "images_per_condition": 6,
        "seed": 0,
        "n_available": 12,
        "n_kept": 6,
    }
    assert "subset" not in full.metadata and full.metadata["manifest_hash"] != fog.metadata["manifest_hash"]


@pytest.mark.parametrize("n", [0, -3])
def test_non_positive_subset_size_is_refused(n):
    paths, labels = listing(2, 2)
    with pytest.raises(ValueError, match="images_per_condition"):
        class_balanced_subset(paths, labels, n, seed=0)
