"""ImageNet val labels from the official devkit (ILSVRC2012_devkit_t12.tar.gz): meta.mat's leaf synsets
map ILSVRC2012_ID -> wnid -> sorted-wnid index, the ground-truth file gives each val image's ID; the
devkit, when supplied, is cross-checked against imagenet-x's filename_label.csv.

The devkits here are synthetic (clip_robustness.demo.archives.write_imagenet_devkit_tar): the real
file format, with a seeded permutation standing in for the real ID order (not shippable here)."""

from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.io import loadmat, savemat

from clip_robustness.datasets.devkit import (
    META_MAT,
    VAL_GROUND_TRUTH,
    imagenet_val_labels_from_devkit,
    parse_meta_mat,
)
from clip_robustness.datasets.download import obtain_archive_for_rule
from clip_robustness.datasets.errors import ManifestError, MissingUserArchiveError, RegistryError
from clip_robustness.datasets.extract import extract_archive
from clip_robustness.datasets.label_spaces import imagenet_synsets, package_file
from clip_robustness.datasets.manifest import build_manifest, read_manifest, write_manifest
from clip_robustness.datasets.registry import DatasetEntry, load_dataset_registry
from clip_robustness.datasets.workflow import (
    check_user_supplied_archives,
    download_params,
    extract_params,
    manifest_inputs,
    manifest_params,
)
from clip_robustness.demo import archives as synthetic

REPO = Path(__file__).resolve().parents[1]
REAL_REGISTRY = REPO / "config" / "datasets.yaml"
DEVKIT = "ILSVRC2012_devkit_t12.tar.gz"
VAL_TAR = "ILSVRC2012_img_val.tar"
DOWNLOADS = {
    "retries": 1,
    "timeout_s": 10,
    "url_overrides": {},
    "local_archives": {},
    "local_folders": {},
    "skip_corrupt_images": False,
}
CLASSES = [0, 1, 500, 998]


@pytest.fixture(scope="module")
def csv_labels() -> dict[str, int]:
    """imagenet-x's filename_label.csv, read directly (not through the package's reader)."""
    frame = pd.read_csv(package_file("imagenet_x", "annotations/filename_label.csv"))
    return dict(zip(frame["file_name"].astype(str), frame["label"].astype(int)))


@pytest.fixture(scope="module")
def val_names() -> list[str]:
    return synthetic.imagenet_val_file_names(CLASSES, 3)


def ground_truth_ids(devkit: Path) -> list[int]:
    with tarfile.open(devkit) as tar:
        return [int(x) for x in tar.extractfile(VAL_GROUND_TRUTH).read().split()]


def test_devkit_labels_of_real_val_file_names_agree_with_imagenet_x_filename_label_csv(tmp_path, csv_labels, val_names):
    devkit = synthetic.write_imagenet_devkit_tar(tmp_path, {n: csv_labels[n] for n in val_names}, seed=3)
    assert devkit.name == DEVKIT
    from_tar = imagenet_val_labels_from_devkit(devkit)
    assert len(from_tar) == 50_000 and set(from_tar.values()) <= set(range(1000))
    assert {n: from_tar[n] for n in val_names} == {n: csv_labels[n] for n in val_names}
    # the extracted folder (what the workflow passes) and the ILSVRC2012_devkit_t12 folder read the same
    extract_archive(devkit, tmp_path / "x", tmp_path / "x.complete")
    assert imagenet_val_labels_from_devkit(tmp_path / "x") == from_tar
    assert imagenet_val_labels_from_devkit(tmp_path / "x" / "ILSVRC2012_devkit_t12") == from_tar
    # the ID order is not the sorted-wnid order: a reader skipping ID -> wnid would be off
    ids = ground_truth_ids(devkit)
    numbers = [int(re.search(r"(\d{8})", n)[1]) for n in val_names]
    assert any(ids[k - 1] - 1 != csv_labels[n] for k, n in zip(numbers, val_names))


def test_meta_mat_non_leaf_synsets_are_ignored(tmp_path, csv_labels, val_names):
    devkit = synthetic.write_imagenet_devkit_tar(tmp_path, {n: csv_labels[n] for n in val_names})
    with tarfile.open(devkit) as tar:
        raw = tar.extractfile(META_MAT).read()
    synsets = loadmat(io.BytesIO(raw), squeeze_me=True)["synsets"]
    assert list(synsets.dtype.names[:5]) == ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children"]
    inner = [(int(s["ILSVRC2012_ID"]), str(s["WNID"])) for s in synsets if int(s["num_children"]) > 0]
    assert inner and all(i > 1000 for i, _ in inner)  # the fixture really has non-leaf synsets
    leaves = parse_meta_mat(raw)
    assert sorted(leaves) == list(range(1, 1001))
    assert sorted(leaves.values()) == list(imagenet_synsets())
    assert not {w for _, w in inner} & set(leaves.values())
    # num_children decides: a non-leaf counted as a leaf (its num_children set to 0) is an error
    full = loadmat(io.BytesIO(raw))["synsets"]
    full[-1, 0]["num_children"] = np.array([[0.0]])
    buf = io.BytesIO()
    savemat(buf, {"synsets": full})
    with pytest.raises(ManifestError, match=r"leaf synsets \(num_children == 0\) should have ILSVRC2012_ID 1..1000"):
        parse_meta_mat(buf.getvalue())


def entry_with(labels_from: list[str]) -> DatasetEntry:
    raw = synthetic.registry_datasets("imagenet_val", registry_path=REAL_REGISTRY, with_devkit=True)["imagenet_val"]
    return DatasetEntry.from_dict(
        {
            "id": "imagenet_val",
            "title": raw["title"],
            "archives": raw["archives"],
            "layout": raw["layout"],
            "subdir": raw["subdir"],
            "label_space": raw["label_space"],
            "labels_from": labels_from,
            "devkit_archive": raw["devkit_archive"],
        }
    )


def test_devkit_disagreeing_with_imagenet_x_fails_naming_the_files_and_both_labels(tmp_path, csv_labels, val_names):
    root = tmp_path / "val"
    root.mkdir()
    for name in val_names:
        (root / name).write_bytes(b"")  # listing only (check_images=False)
    wrong = sorted(val_names)[4]
    labels = {n: csv_labels[n] for n in val_names} | {wrong: (csv_labels[wrong] + 1) % 1000}
    devkit = synthetic.write_imagenet_devkit_tar(tmp_path / "one", labels)
    entry = entry_with(["devkit", "imagenet_x"])
    with pytest.raises(ManifestError) as err:
        build_manifest(entry, root, check_images=False, devkit_root=devkit)
    message = str(err.value)
    wnids = imagenet_synsets()
    dk, ix = labels[wrong], csv_labels[wrong]
    assert "disagree on 1 of 12 file(s)" in message
    assert (
        f"{wrong}: the ImageNet devkit {dk} ({wnids[dk]}), imagenet-x filename_label.csv {ix} ({wnids[ix]})" in message
    )
    # many disagreements: counted, the first five named
    many = {n: (label + 1) % 1000 for n, label in labels.items()}
    with pytest.raises(ManifestError, match=r"disagree on 12 of 12 file\(s\) \(first 5 shown\)") as err:
        build_manifest(
            entry, root, check_images=False, devkit_root=synthetic.write_imagenet_devkit_tar(tmp_path / "all", many)
        )
    assert sum(n in str(err.value) for n in val_names) == 5
    # the devkit as the only source gives its own (wrong) labels; imagenet-x alone gives the csv's
    only = build_manifest(entry_with(["devkit"]), root, check_images=False, devkit_root=devkit)
    assert dict(zip(only.table["path"], only.table["label"])) == labels
    assert only.metadata["label_sources"] == ["devkit"]
    with pytest.raises(ManifestError, match="no ImageNet devkit"):
        build_manifest(entry_with(["devkit"]), root, check_images=False)
    with pytest.raises(ManifestError, match="add devkit to labels_from"):
        build_manifest(entry_with(["imagenet_x"]), root, check_images=False, devkit_root=devkit)


def registry_with_devkit(tmp_path: Path, val_tar: Path, devkit: Path | None, labels_from: list[str]) -> object:
    """A registry like the real one: both archives user-supplied, the real imagenet_val entry."""
    datasets = synthetic.registry_datasets("imagenet_val", registry_path=REAL_REGISTRY, with_devkit=True)
    datasets["imagenet_val"]["labels_from"] = labels_from
    archives = {VAL_TAR: synthetic.archive_entry(val_tar, user_supplied=True)}
    archives[DEVKIT] = (
        synthetic.archive_entry(devkit, user_supplied=True)
        if devkit is not None
        else {"url": None, "sha256": None, "source": "not supplied", "user_supplied": True}
    )
    return load_dataset_registry(synthetic.write_dataset_registry(tmp_path / "registry.yaml", archives, datasets))


def run_stage(registry, dataset: str, downloads=DOWNLOADS):
    """What the rules do, in the current (workflow) directory: the parse-time check, then download,
    extract and build_manifest with the params the rules get."""
    check_user_supplied_archives(registry, [dataset], downloads)
    inputs = manifest_inputs(registry, dataset, downloads)
    for marker in [*inputs.get("extracted", []), *inputs.get("labels", [])]:
        archive = Path(marker).name.removesuffix(".complete")
        params = download_params(registry, archive, downloads)
        obtain_archive_for_rule(params, f"data/archives/{archive}", retry_delay_s=0.01)
        e = extract_params(registry, archive)
        extract_archive(f"data/archives/{archive}", e["dest"], marker, password=e["password"])
    m = manifest_params(registry, dataset, downloads)
    build = build_manifest(
        DatasetEntry.from_dict(m["entry"]), m["root"], skip_corrupt=False, workers=2, devkit_root=m.get("devkit_root")
    )
    write_manifest(build, f"data/manifests/{dataset}.parquet", f"data/manifests/{dataset}.skipped.csv")
    return inputs, m, read_manifest(f"data/manifests/{dataset}.parquet")


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    return tmp_path


def test_manifest_from_flat_val_tar_and_supplied_devkit_end_to_end(workdir, csv_labels):
    up = workdir / "upstream"
    val_tar = synthetic.write_imagenet_val_tar(up, CLASSES, 2, synthetic.default_renderer)
    names = synthetic.imagenet_val_file_names(CLASSES, 2)
    devkit = synthetic.write_imagenet_devkit_tar(up, {n: csv_labels[n] for n in names}, seed=5)
    registry = registry_with_devkit(workdir, val_tar, devkit, ["devkit", "imagenet_x"])
    user = Path("data/user_supplied")
    user.mkdir(parents=True)
    (user / VAL_TAR).symlink_to(val_tar)
    (user / DEVKIT).symlink_to(devkit)  # "next to" the val tar
    inputs, params, manifest = run_stage(registry, "imagenet_val")
    assert inputs["labels"] == [f"data/extracted/{DEVKIT}.complete"]
    assert params["devkit_root"] == f"data/extracted/{DEVKIT}"
    assert manifest.metadata["label_sources"] == ["devkit", "imagenet_x"]
    assert manifest.file_names == sorted(names)
    assert manifest.table["label"].tolist() == [csv_labels[n] for n in manifest.file_names]
    for row, label in enumerate(manifest.table["label"]):  # the images were rendered with their true label
        color = np.asarray(manifest.open_image(row), dtype=np.float64).reshape(-1, 3).mean(axis=0)
        assert np.abs(color - synthetic.label_color(int(label))).max() < 6
    assert registry.datasets_using(DEVKIT) == ["imagenet_val"]


def test_without_the_devkit_the_val_tar_alone_suffices_and_imagenet_x_labels_it(workdir, csv_labels):
    val_tar = synthetic.write_imagenet_val_tar(workdir / "upstream", CLASSES[:2], 2, synthetic.default_renderer)
    registry = registry_with_devkit(workdir, val_tar, None, ["devkit", "imagenet_x"])
    downloads = {**DOWNLOADS, "local_archives": {VAL_TAR: str(val_tar)}}
    inputs, params, manifest = run_stage(registry, "imagenet_val", downloads)
    assert "labels" not in inputs and params["devkit_root"] is None
    assert manifest.metadata["label_sources"] == ["imagenet_x"]
    assert manifest.table["label"].tolist() == [csv_labels[n] for n in manifest.file_names]
    # a devkit named in local_archives but absent, or required (sole source) and absent: stop before any job
    Path("data/manifests/imagenet_val.parquet").unlink()
    with pytest.raises(
        MissingUserArchiveError, match=r"local_archives\['ILSVRC2012_devkit_t12.tar.gz'\] is .*not a file"
    ):
        check_user_supplied_archives(
            registry,
            ["imagenet_val"],
            {**downloads, "local_archives": {VAL_TAR: str(val_tar), DEVKIT: str(workdir / "nowhere" / DEVKIT)}},
        )
    only_devkit = registry_with_devkit(workdir, val_tar, None, ["devkit"])
    with pytest.raises(MissingUserArchiveError, match=r"need the archive ILSVRC2012_devkit_t12.tar.gz"):
        check_user_supplied_archives(only_devkit, ["imagenet_val"], downloads)


def test_real_registry_lists_the_devkit_as_an_optional_user_supplied_label_source(tmp_path):
    registry = load_dataset_registry(REAL_REGISTRY)
    entry = registry.resolve("imagenet_val")
    assert entry.archives == (VAL_TAR,)
    assert entry.labels_from == ("devkit", "imagenet_x") and entry.label_archives == (DEVKIT,)
    assert not entry.label_archives_required
    assert registry.archive(DEVKIT).user_supplied and registry.archive(DEVKIT).sha256
    assert DatasetEntry.from_dict(entry.to_dict()) == entry
    assert "labels_from" not in registry.resolve("imagenet_r").to_dict()  # other datasets' params unchanged
    # parse-time check: only the val tar is required
    (tmp_path / "data" / "user_supplied").mkdir(parents=True)
    with pytest.raises(MissingUserArchiveError) as err:
        check_user_supplied_archives(registry, ["imagenet_val"], DOWNLOADS, workdir=tmp_path)
    assert VAL_TAR in str(err.value) and DEVKIT not in str(err.value)
    (tmp_path / "data" / "user_supplied" / VAL_TAR).write_bytes(b"")
    check_user_supplied_archives(registry, ["imagenet_val"], DOWNLOADS, workdir=tmp_path)
    assert "labels" not in manifest_inputs(registry, "imagenet_val", DOWNLOADS, workdir=tmp_path)
    (tmp_path / "data" / "user_supplied" / DEVKIT).write_bytes(b"")
    assert manifest_inputs(registry, "imagenet_val", DOWNLOADS, workdir=tmp_path)["labels"] == [
        f"data/extracted/{DEVKIT}.complete"
    ]


@pytest.mark.parametrize(
    "change,match",
    [
        ({"layout": "wnid_folders"}, "apply to layout imagenet_val only"),
        ({"labels_from": ["devkit", "wordnet"]}, "labels_from"),
        ({"labels_from": ["devkit"], "devkit_archive": None}, "devkit_archive must be given exactly when"),
        ({"devkit_archive": "nope.tar.gz"}, "unknown archive 'nope.tar.gz'"),
    ],
)
def test_registry_rejects_bad_label_sources(tmp_path, change, match):
    datasets = synthetic.registry_datasets("imagenet_val", registry_path=REAL_REGISTRY, with_devkit=True)
    datasets["imagenet_val"].update(change)
    datasets["imagenet_val"] = {k: v for k, v in datasets["imagenet_val"].items() if v is not None}
    archives = {
        VAL_TAR: {"url": None, "sha256": None, "source": "-", "user_supplied": True},
        DEVKIT: {"url": None, "sha256": None, "source": "-", "user_supplied": True},
    }
    with pytest.raises(RegistryError, match=match):
        synthetic.write_dataset_registry(tmp_path / "r.yaml", archives, datasets)
