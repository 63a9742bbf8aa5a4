"""Every real dataset layout, end to end: a miniature archive in that layout is served over real HTTP
on 127.0.0.1 and obtained through the functions the rules call (download -> extract -> manifest),
with the dataset entries (layout, subdir, label space) of the real registry config/datasets.yaml."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from datasets_support import serve_folder
from PIL import Image

from clip_robustness.datasets.download import obtain_archive_for_rule
from clip_robustness.datasets.extract import extract_archive
from clip_robustness.datasets.label_spaces import imagenet_a_indices, imagenet_r_indices, imagenet_synsets, package_file
from clip_robustness.datasets.manifest import build_manifest, read_manifest, write_manifest
from clip_robustness.datasets.registry import DatasetEntry, load_dataset_registry
from clip_robustness.datasets.workflow import download_params, extract_params, manifest_inputs, manifest_params
from clip_robustness.demo import archives as synthetic

REPO = Path(__file__).resolve().parents[1]
REAL_REGISTRY = REPO / "config" / "datasets.yaml"
DOWNLOADS = {
    "retries": 2,
    "timeout_s": 10,
    "url_overrides": {},
    "local_archives": {},
    "local_folders": {},
    "skip_corrupt_images": False,
}


def run_stage(registry, dataset: str, downloads=DOWNLOADS):
    """What the three rules do for one dataset, in the current (workflow) directory."""
    for marker in manifest_inputs(registry, dataset, downloads).get("extracted", []):
        archive = Path(marker).name.removesuffix(".complete")
        params = download_params(registry, archive, downloads)
        obtain_archive_for_rule(params, f"data/archives/{archive}", retry_delay_s=0.01)
        e = extract_params(registry, archive)
        extract_archive(f"data/archives/{archive}", e["dest"], marker, password=e["password"])
    m = manifest_params(registry, dataset, downloads)
    build = build_manifest(DatasetEntry.from_dict(m["entry"]), m["root"], skip_corrupt=False, workers=2)
    write_manifest(build, f"data/manifests/{dataset}.parquet", f"data/manifests/{dataset}.skipped.csv")
    return read_manifest(f"data/manifests/{dataset}.parquet")


def served_registry(tmp_path: Path, server, archives: list[Path], dataset_ids: list[str], **archive_fields) -> object:
    entries = {
        a.name: synthetic.archive_entry(a, url=server.url(a.name), **archive_fields.get(a.name, {})) for a in archives
    }
    path = synthetic.write_dataset_registry(
        tmp_path / "registry.yaml", entries, synthetic.registry_datasets(*dataset_ids, registry_path=REAL_REGISTRY)
    )
    return load_dataset_registry(path)


def mean_color(manifest, row: int) -> np.ndarray:
    return np.asarray(manifest.open_image(row), dtype=np.float64).reshape(-1, 3).mean(axis=0)


def assert_pixels_match_labels(manifest) -> None:
    """Each row's image was rendered with its manifest label: the label and the pixels agree."""
    for row, label in enumerate(manifest.table["label"]):
        assert np.abs(mean_color(manifest, row) - synthetic.label_color(int(label))).max() < 6, (row, label)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    (tmp_path / "upstream").mkdir()
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    return tmp_path


def test_imagenet_v2_class_folders_are_ordered_as_integers_not_strings(workdir):
    classes = [10, 2, 100, 1]  # as strings "1" < "10" < "100" < "2"
    archive = synthetic.write_imagenet_v2_tar(
        workdir / "upstream", "threshold0.7", classes, 2, synthetic.default_renderer
    )
    with serve_folder(workdir / "upstream") as server:
        registry = served_registry(workdir, server, [archive], ["imagenet_v2_threshold07"])
        manifest = run_stage(registry, "imagenet_v2_threshold07")
    assert manifest.table["label"].tolist() == [1, 1, 2, 2, 10, 10, 100, 100]
    assert [p.split("/")[0] for p in manifest.table["path"]] == ["1", "1", "2", "2", "10", "10", "100", "100"]
    assert manifest.table["index"].tolist() == list(range(8))
    assert manifest.label_space.is_full
    assert_pixels_match_labels(manifest)
    assert (Path("data/extracted/imagenetv2-threshold0.7.tar.gz.complete")).is_file()
    assert pd.read_csv("data/manifests/imagenet_v2_threshold07.skipped.csv").empty


@pytest.mark.parametrize(
    "name,dataset,indices",
    [("imagenet-r", "imagenet_r", imagenet_r_indices), ("imagenet-a", "imagenet_a", imagenet_a_indices)],
)
def test_hendrycks_tars_get_wnid_labels_and_the_200_class_mask_from_timm(workdir, name, dataset, indices):
    classes = indices()[:3]
    archive = synthetic.write_hendrycks_tar(workdir / "upstream", name, classes, 2, synthetic.default_renderer)
    with serve_folder(workdir / "upstream") as server:
        manifest = run_stage(served_registry(workdir, server, [archive], [dataset]), dataset)
    assert manifest.table["label"].tolist() == sorted(c for c in classes for _ in range(2))
    assert manifest.label_space.name == dataset
    assert manifest.label_space.class_indices.tolist() == indices()
    assert len(manifest.label_space.class_indices) == 200
    assert all(
        p.split("/")[0] == imagenet_synsets()[label]
        for p, label in zip(manifest.table["path"], manifest.table["label"])
    )
    assert_pixels_match_labels(manifest)  # README.txt in the tar is not an image row


def test_imagenet_sketch_zip_is_read_from_its_sketch_folder(workdir):
    archive = synthetic.write_imagenet_sketch_zip(workdir / "upstream", [0, 999, 500], 2, synthetic.default_renderer)
    with serve_folder(workdir / "upstream") as server:
        manifest = run_stage(served_registry(workdir, server, [archive], ["imagenet_sketch"]), "imagenet_sketch")
    assert manifest.table["label"].tolist() == [0, 0, 500, 500, 999, 999]
    assert manifest.root == Path("data/extracted/ImageNet-Sketch.zip/sketch")
    assert all(p.endswith(".JPEG") for p in manifest.table["path"])
    assert_pixels_match_labels(manifest)


def test_imagenet_val_flat_tar_labels_agree_with_imagenet_x_filename_label_csv(workdir):
    csv = pd.read_csv(package_file("imagenet_x", "annotations/filename_label.csv"))
    truth = dict(zip(csv["file_name"], csv["label"]))
    archive = synthetic.write_imagenet_val_tar(workdir / "upstream", [0, 1, 998], 3, synthetic.default_renderer)
    with serve_folder(workdir / "upstream") as server:
        manifest = run_stage(served_registry(workdir, server, [archive], ["imagenet_val"]), "imagenet_val")
    assert len(manifest.table) == 9
    assert manifest.file_names == sorted(manifest.file_names)  # stable order: sorted file name
    assert [truth[f] for f in manifest.file_names] == manifest.table["label"].tolist()
    assert_pixels_match_labels(manifest)


def test_imagenet_c_severity_folders_become_one_dataset_each(workdir):
    archive = synthetic.write_imagenet_c_tar(
        workdir / "upstream",
        "blur",
        [3, 7],
        2,
        synthetic.default_renderer,
        corruptions=["defocus_blur", "motion_blur"],
        severities=[1, 5],
    )
    with serve_folder(workdir / "upstream") as server:
        entries = {archive.name: synthetic.archive_entry(archive, url=server.url(archive.name))}
        datasets = synthetic.registry_datasets("imagenet_c", registry_path=REAL_REGISTRY)
        datasets["imagenet_c"]["corruption_archives"] = {"defocus_blur": "blur.tar", "motion_blur": "blur.tar"}
        registry = load_dataset_registry(synthetic.write_dataset_registry(workdir / "r.yaml", entries, datasets))
        first = run_stage(registry, "imagenet_c_motion_blur_5")
        second = run_stage(registry, "imagenet_c_defocus_blur_1")  # same archive: extracted again, same result
    for manifest, subdir in [(first, "motion_blur/5"), (second, "defocus_blur/1")]:
        assert manifest.root == Path("data/extracted/blur.tar") / subdir
        assert manifest.table["label"].tolist() == [3, 3, 7, 7]
        assert_pixels_match_labels(manifest)
    assert first.manifest_hash != second.manifest_hash  # different file ids in the two folders


@pytest.mark.parametrize("name,dataset", [("iNaturalist", "inaturalist"), ("SUN", "sun"), ("Places", "places")])
def test_mos_ood_tars_list_every_image_with_label_minus_one(workdir, name, dataset):
    archive = synthetic.write_mos_ood_tar(workdir / "upstream", name, 5, synthetic.default_renderer)
    with serve_folder(workdir / "upstream") as server:
        manifest = run_stage(served_registry(workdir, server, [archive], [dataset]), dataset)
    assert len(manifest.table) == 5 and set(manifest.table["label"]) == {-1}
    assert manifest.root == Path(f"data/extracted/{archive.name}/{name}/images")
    assert manifest.label_space.name == "ood"


def test_dtd_textures_walk_class_folders_and_ignore_label_files(workdir):
    archive = synthetic.write_dtd_tar(
        workdir / "upstream", ["banded", "zigzagged", "bubbly"], 2, synthetic.default_renderer
    )
    with serve_folder(workdir / "upstream") as server:
        manifest = run_stage(served_registry(workdir, server, [archive], ["textures"]), "textures")
    assert manifest.table["path"].tolist() == [
        f"{t}/{t}_{k:04d}.jpg" for t in ["banded", "bubbly", "zigzagged"] for k in (1, 2)
    ]
    assert set(manifest.table["label"]) == {-1}


def test_imagenet_o_tar_is_ood_despite_its_wnid_folders(workdir):
    archive = synthetic.write_hendrycks_tar(workdir / "upstream", "imagenet-o", [5, 6], 2, synthetic.default_renderer)
    with serve_folder(workdir / "upstream") as server:
        manifest = run_stage(served_registry(workdir, server, [archive], ["imagenet_o"]), "imagenet_o")
    assert len(manifest.table) == 4 and set(manifest.table["label"]) == {-1}


def test_objectnet_maps_classes_through_the_archive_mapping_files_and_crops_the_border(workdir):
    # analog clock 409 and digital clock 530 are both "Alarm clock" in ObjectNet's real mapping
    classes = {"alarm_clock": [530, 409], "banana": [954]}
    archive = synthetic.write_objectnet_zip(
        workdir / "upstream", classes, 2, synthetic.default_renderer, unmapped_folders=["squeegee", "rake"]
    )
    with serve_folder(workdir / "upstream") as server:
        registry = served_registry(
            workdir, server, [archive], ["objectnet"], **{archive.name: {"password": "objectnetisatestset"}}
        )
        manifest = run_stage(registry, "objectnet")
    # manifest label = smallest mapped index; unmapped classes (squeegee, rake) are left out
    assert manifest.table["label"].tolist() == [409, 409, 954, 954]
    assert [p.split("/")[1] for p in manifest.table["path"]] == ["alarm_clock"] * 2 + ["banana"] * 2
    assert manifest.metadata["n_excluded_unmapped"] == 4
    space = manifest.label_space
    assert space.class_indices.tolist() == [409, 530, 954]
    assert space.class_groups[0] == space.class_groups[1] != space.class_groups[2]
    assert manifest.metadata["class_mapping"]["alarm_clock"]["imagenet_indices"] == [409, 530]
    # the 1-pixel red border is cropped on load by 2 px, as every reference loader does: 18x18 stored, 14x14 seen
    with Image.open(manifest.image_path(0)) as raw:
        assert raw.size == (18, 18)
    img = manifest.open_image(0)
    assert img.size == (14, 14)
    assert_pixels_match_labels(manifest)


def test_synthetic_archives_are_byte_identical_for_the_same_seed(tmp_path):
    def build(folder: Path) -> list[str]:
        paths = [
            synthetic.write_imagenet_v2_tar(
                folder, "matched-frequency", [2, 10], 1, synthetic.default_renderer, seed=3
            ),
            synthetic.write_imagenet_sketch_zip(folder, [2], 1, synthetic.default_renderer, seed=3),
            synthetic.write_hendrycks_tar(
                folder, "imagenet-a", imagenet_a_indices()[:1], 1, synthetic.default_renderer, seed=3
            ),
        ]
        return [synthetic.sha256_of(p) for p in paths]

    assert build(tmp_path / "a") == build(tmp_path / "b")
