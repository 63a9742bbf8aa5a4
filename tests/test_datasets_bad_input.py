"""Bad input gets a clear error naming what is wrong, and leaves no output that could be mistaken
for a good one (archives over real HTTP on 127.0.0.1)."""

from __future__ import annotations

import hashlib
import os
import tarfile
from pathlib import Path

import pandas as pd
import pytest
from datasets_support import serve_folder

from clip_robustness.datasets.download import obtain_archive, read_pinned
from clip_robustness.datasets.errors import (
    ChecksumMismatchError,
    CorruptImageError,
    DownloadError,
    ExtractionError,
    MissingUserArchiveError,
    RegistryError,
    UnknownDatasetError,
)
from clip_robustness.datasets.extract import extract_archive, marker_is_current
from clip_robustness.datasets.manifest import build_manifest, read_manifest, write_manifest
from clip_robustness.datasets.registry import ArchiveEntry, load_dataset_registry
from clip_robustness.datasets.workflow import check_user_supplied_archives
from clip_robustness.demo import archives as synthetic

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def upstream(tmp_path):
    folder = tmp_path / "upstream"
    archive = synthetic.write_hendrycks_tar(folder, "imagenet-r", [1, 2], 2, synthetic.default_renderer)
    return archive


def entry_for(archive: Path, url: str, **changes) -> ArchiveEntry:
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    fields = {"name": archive.name, "urls": (url,), "sha256": sha, "size_bytes": archive.stat().st_size}
    return ArchiveEntry(**{**fields, **changes})


def obtain(entry: ArchiveEntry, tmp_path: Path, **kwargs):
    kwargs = {"retries": 3, "timeout_s": 5, "retry_delay_s": 0.01, "datasets": ["imagenet_r"], **kwargs}
    return obtain_archive(
        entry,
        tmp_path / "archives" / entry.name,
        pinned_path=tmp_path / "checksums" / "pinned.tsv",
        rejected_dir=tmp_path / "archives" / "rejected",
        **kwargs,
    )


def test_checksum_mismatch_keeps_file_aside_and_names_both_hashes(tmp_path, upstream):
    wrong = "0" * 64
    actual = hashlib.sha256(upstream.read_bytes()).hexdigest()
    with serve_folder(upstream.parent) as server:
        url = server.url(upstream.name)
        with pytest.raises(ChecksumMismatchError) as err:
            obtain(entry_for(upstream, url, sha256=wrong), tmp_path)
    message = str(err.value)
    assert wrong in message and actual in message and url in message and "imagenet_r" in message
    assert not (tmp_path / "archives" / upstream.name).exists()
    assert not (tmp_path / "archives" / f"{upstream.name}.part").exists()
    kept = list((tmp_path / "archives" / "rejected").iterdir())
    assert len(kept) == 1 and kept[0].read_bytes() == upstream.read_bytes()
    assert str(kept[0]) in message


def test_md5_mismatch_is_caught_when_no_sha256_is_published(tmp_path, upstream):
    with serve_folder(upstream.parent) as server:
        with pytest.raises(ChecksumMismatchError, match="md5 expected f{32}"):
            obtain(entry_for(upstream, server.url(upstream.name), sha256=None, md5="f" * 32), tmp_path)
    assert read_pinned(tmp_path / "checksums" / "pinned.tsv") == {}  # nothing pinned from a bad file


def test_unpublished_sha256_is_pinned_at_first_download_then_enforced(tmp_path, upstream):
    with serve_folder(upstream.parent) as server:
        entry = entry_for(upstream, server.url(upstream.name), sha256=None, size_bytes=None)
        obtain(entry, tmp_path)
        pinned = read_pinned(tmp_path / "checksums" / "pinned.tsv")
        assert pinned == {upstream.name: hashlib.sha256(upstream.read_bytes()).hexdigest()}
        # upstream changes: the second download is refused against the pin
        (tmp_path / "archives" / upstream.name).unlink()
        synthetic.write_hendrycks_tar(upstream.parent, "imagenet-r", [1, 2], 2, synthetic.default_renderer, seed=1)
        with pytest.raises(ChecksumMismatchError, match="pinned at first download"):
            obtain(entry, tmp_path)
    assert not (tmp_path / "archives" / upstream.name).exists()


def test_truncated_http_body_is_retried_and_then_succeeds(tmp_path, upstream):
    with serve_folder(upstream.parent) as server:
        server.state.failures[f"/{upstream.name}"] = ["truncate"]
        path = obtain(entry_for(upstream, server.url(upstream.name)), tmp_path)
        assert server.state.requests[f"/{upstream.name}"] == 2
    assert path.read_bytes() == upstream.read_bytes()


def test_truncated_http_body_every_time_fails_after_bounded_retries(tmp_path, upstream):
    with serve_folder(upstream.parent) as server:
        server.state.failures[f"/{upstream.name}"] = ["truncate"] * 5
        with pytest.raises(DownloadError, match=r"truncated: got \d+ of \d+ bytes \(after 3 attempt") as err:
            obtain(entry_for(upstream, server.url(upstream.name)), tmp_path, retries=3)
        assert server.state.requests[f"/{upstream.name}"] == 3
    assert "downloads.url_overrides" in str(err.value)
    assert not (tmp_path / "archives" / upstream.name).exists()


def test_http_500_is_retried_a_bounded_number_of_times(tmp_path, upstream):
    with serve_folder(upstream.parent) as server:
        server.state.failures[f"/{upstream.name}"] = [500] * 10
        with pytest.raises(DownloadError, match="HTTP 500") as err:
            obtain(entry_for(upstream, server.url(upstream.name)), tmp_path, retries=4)
        assert server.state.requests[f"/{upstream.name}"] == 4
    assert server.url(upstream.name) in str(err.value) and "imagenet_r" in str(err.value)
    assert not (tmp_path / "archives").exists() or not any((tmp_path / "archives").glob("imagenet-r.tar*"))


def test_http_404_is_not_retried_and_the_next_mirror_is_tried(tmp_path, upstream):
    with serve_folder(upstream.parent) as server:
        missing, good = server.url("gone/imagenet-r.tar"), server.url(upstream.name)
        path = obtain(entry_for(upstream, missing, urls=(missing, good)), tmp_path)
        assert server.state.requests["/gone/imagenet-r.tar"] == 1
    assert path.read_bytes() == upstream.read_bytes()


def test_http_404_on_every_url_names_the_status_and_urls(tmp_path, upstream):
    with serve_folder(upstream.parent) as server:
        url = server.url("nothing-here.tar")
        with pytest.raises(DownloadError, match="HTTP 404") as err:
            obtain(entry_for(upstream, url), tmp_path)
    assert url in str(err.value)
    assert not (tmp_path / "archives" / upstream.name).exists()


def test_interrupted_download_resumes_with_a_range_request(tmp_path, upstream):
    data = upstream.read_bytes()
    (tmp_path / "archives").mkdir()
    (tmp_path / "archives" / f"{upstream.name}.part").write_bytes(data[:1000])
    with serve_folder(upstream.parent) as server:
        server.state.support_range = True
        path = obtain(entry_for(upstream, server.url(upstream.name)), tmp_path)
        assert server.state.ranges[f"/{upstream.name}"] == ["bytes=1000-"]
    assert path.read_bytes() == data


def test_file_url_and_local_archive_are_verified_and_local_one_is_linked(tmp_path, upstream):
    path = obtain(entry_for(upstream, upstream.as_uri()), tmp_path)
    assert path.read_bytes() == upstream.read_bytes() and not path.is_symlink()
    linked = obtain(entry_for(upstream, "https://unused.invalid/x"), tmp_path / "b", local_path=upstream)
    assert linked.is_symlink() and linked.resolve() == upstream.resolve()
    with pytest.raises(ChecksumMismatchError, match="left where it is"):
        obtain(entry_for(upstream, "https://unused.invalid/x", sha256="1" * 64), tmp_path / "c", local_path=upstream)
    assert upstream.exists()  # a user's own file is never moved or deleted


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_archive_fails_extraction_and_leaves_no_folder_or_marker(tmp_path, upstream, gz):
    if gz:
        upstream = synthetic.write_mos_ood_tar(tmp_path / "up", "SUN", 6, synthetic.default_renderer)
    cut = tmp_path / upstream.name
    cut.write_bytes(upstream.read_bytes()[: upstream.stat().st_size // 3])
    dest, marker = tmp_path / "extracted" / upstream.name, tmp_path / "extracted" / f"{upstream.name}.complete"
    with pytest.raises(ExtractionError, match="truncated or corrupt") as err:
        extract_archive(cut, dest, marker)
    assert str(cut) in str(err.value)
    assert not dest.exists() and not marker.exists()
    assert list((tmp_path / "extracted").iterdir()) == []


def test_interrupted_extraction_is_never_taken_for_complete_and_is_redone(tmp_path, upstream):
    dest, marker = tmp_path / "extracted" / "imagenet-r.tar", tmp_path / "extracted" / "imagenet-r.tar.complete"
    # what a killed extraction leaves: a partial temp folder and (older code) a partial destination
    (tmp_path / "extracted" / ".imagenet-r.tar.partial-99999" / "imagenet-r").mkdir(parents=True)
    (dest / "imagenet-r" / "n01443537").mkdir(parents=True)
    assert not marker.exists() and not marker_is_current(marker, upstream)
    extract_archive(upstream, dest, marker)
    assert marker_is_current(marker, upstream)
    assert sorted(p.name for p in (tmp_path / "extracted").iterdir()) == ["imagenet-r.tar", "imagenet-r.tar.complete"]
    with tarfile.open(upstream) as tar:
        expected = sorted(m.name for m in tar.getmembers() if m.isfile())
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == expected


def corrupt_dataset(tmp_path: Path) -> tuple[object, Path]:
    registry = load_dataset_registry(REPO / "config" / "datasets.yaml")
    extract_archive(
        synthetic.write_hendrycks_tar(tmp_path / "up", "imagenet-r", [1, 2], 2, synthetic.default_renderer),
        tmp_path / "x",
        tmp_path / "x.complete",
    )
    root = tmp_path / "x" / "imagenet-r"
    bad = sorted((root / "n01443537").iterdir())[0]
    bad.write_bytes(b"<html>Service unavailable</html>")
    return registry.resolve("imagenet_r"), bad


def test_corrupt_image_stops_the_manifest_naming_the_file_and_the_option(tmp_path):
    entry, bad = corrupt_dataset(tmp_path)
    with pytest.raises(CorruptImageError) as err:
        build_manifest(entry, tmp_path / "x" / "imagenet-r")
    assert str(bad) in str(err.value) and "skip_corrupt_images" in str(err.value)
    assert not (tmp_path / "manifests").exists()


def test_corrupt_image_is_skipped_and_recorded_when_configured(tmp_path):
    entry, bad = corrupt_dataset(tmp_path)
    build = build_manifest(entry, tmp_path / "x" / "imagenet-r", skip_corrupt=True)
    write_manifest(build, tmp_path / "m" / "imagenet_r.parquet", tmp_path / "m" / "imagenet_r.skipped.csv")
    manifest = read_manifest(tmp_path / "m" / "imagenet_r.parquet")
    skipped = pd.read_csv(tmp_path / "m" / "imagenet_r.skipped.csv")
    assert len(manifest.table) == 3 and manifest.table["index"].tolist() == [0, 1, 2]
    assert skipped["path"].tolist() == [bad.relative_to(tmp_path / "x" / "imagenet-r").as_posix()]
    assert manifest.metadata["n_skipped"] == 1
    assert sorted(os.listdir(tmp_path / "m")) == ["imagenet_r.parquet", "imagenet_r.skipped.csv"]  # no temp files


def test_missing_imagenet_val_stops_before_any_job_naming_files_and_folder(tmp_path):
    registry = load_dataset_registry(REPO / "config" / "datasets.yaml")
    downloads = {"retries": 1, "timeout_s": 1, "local_archives": {}, "local_folders": {}}
    with pytest.raises(MissingUserArchiveError) as err:
        check_user_supplied_archives(registry, ["imagenet_val", "imagenet_r"], downloads, workdir=tmp_path)
    message = str(err.value)
    assert "ILSVRC2012_img_val.tar" in message and "data/user_supplied/ILSVRC2012_img_val.tar" in message
    assert "6,744,924,160 bytes" in message and "downloads.local_archives" in message and "imagenet_val" in message
    # providing it any of the documented ways lets the run start
    (tmp_path / "data" / "user_supplied").mkdir(parents=True)
    (tmp_path / "data" / "user_supplied" / "ILSVRC2012_img_val.tar").write_bytes(b"")
    check_user_supplied_archives(registry, ["imagenet_val"], downloads, workdir=tmp_path)
    check_user_supplied_archives(
        registry,
        ["imagenet_val"],
        {**downloads, "local_folders": {"imagenet_val": str(tmp_path)}},
        workdir=tmp_path / "elsewhere",
    )
    with pytest.raises(MissingUserArchiveError, match="/no/such/val.tar"):
        check_user_supplied_archives(
            registry,
            ["imagenet_val"],
            {**downloads, "local_archives": {"ILSVRC2012_img_val.tar": "/no/such/val.tar"}},
            workdir=tmp_path / "elsewhere",
        )


def test_user_supplied_archive_is_never_downloaded(tmp_path):
    registry = load_dataset_registry(REPO / "config" / "datasets.yaml")
    with pytest.raises(MissingUserArchiveError, match="never downloads"):
        obtain(registry.archive("ILSVRC2012_img_val.tar"), tmp_path, user_dir=tmp_path / "user_supplied")
    assert not (tmp_path / "archives" / "ILSVRC2012_img_val.tar.part").exists()


def test_registry_errors_name_the_file_and_key(tmp_path):
    bad = tmp_path / "r.yaml"
    bad.write_text("archives:\n  a.tar: {url: 'file:///a.tar', sha256: null, source: x, colour: red}\ndatasets: {}\n")
    with pytest.raises(RegistryError, match=r"r\.yaml: archives\.a\.tar: unknown key\(s\) \['colour'\]"):
        load_dataset_registry(bad)
    bad.write_text(
        "archives:\n  a.tar: {url: 'file:///a.tar', sha256: null, source: x}\n"
        "datasets:\n  d: {title: D, archives: [b.tar], layout: wnid_folders, label_space: imagenet1k}\n"
    )
    with pytest.raises(RegistryError, match=r"datasets\.d\.archives: unknown archive 'b\.tar'"):
        load_dataset_registry(bad)
    with pytest.raises(RegistryError, match=r"url_overrides names archive\(s\) \['nope\.tar'\]"):
        load_dataset_registry(REPO / "config" / "datasets.yaml", url_overrides={"nope.tar": "https://mirror/x"})
    with pytest.raises(UnknownDatasetError, match="imagenet_c_fog_3"):
        load_dataset_registry(REPO / "config" / "datasets.yaml").resolve("imagenet_c_fogg_3")
