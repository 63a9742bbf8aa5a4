"""Faults are detected where they happen, named, and leave nothing that a rerun could take for good output:
archives verified before every use, extraction that fails on any tool error or short extraction, images fully
decoded at manifest time, stale or foreign logits moved aside, one run per directory, config orderings.
(The recovery by rerunning the same command is tests/test_recovery.py.)"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from clip_robustness.datasets.download import (
    obtain_archive,
    verified_record_path,
    verify_stored_archive,
)
from clip_robustness.datasets.errors import (
    ChecksumMismatchError,
    CorruptImageError,
    ExtractionError,
    UnsafeArchiveError,
)
from clip_robustness.datasets.extract import extract_archive, extract_verified_archive, marker_is_current
from clip_robustness.datasets.manifest import build_manifest, check_image
from clip_robustness.datasets.registry import ArchiveEntry, load_dataset_registry
from clip_robustness.datasets.workflow import drop_outdated_markers
from clip_robustness.demo import archives as synthetic
from clip_robustness.logits.cache import (
    CacheError,
    expected_metadata,
    read_logits,
    read_metadata,
    reject_cache_file,
    rejection_message,
    write_logits,
)
from clip_robustness.logits.check import check_logits_files
from clip_robustness.workflow.config_checks import check_config_values
from clip_robustness.workflow.runlock import RUN_LOCK, SNAKEMAKE_LOCKS, RunInProgressError, acquire_run_lock
from clip_robustness.workflow.study import ConfigError

REPO = Path(__file__).resolve().parents[1]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def entry_of(archive: Path, **changes) -> ArchiveEntry:
    fields = {
        "name": archive.name,
        "urls": (archive.as_uri(),),
        "sha256": sha256(archive),
        "size_bytes": archive.stat().st_size,
    }
    return ArchiveEntry(**{**fields, **changes})


@pytest.fixture
def upstream(tmp_path) -> Path:
    return synthetic.write_hendrycks_tar(tmp_path / "upstream", "imagenet-r", [1, 2], 2, synthetic.default_renderer)


def download(entry: ArchiveEntry, work: Path) -> Path:
    return obtain_archive(
        entry,
        work / "data/archives" / entry.name,
        pinned_path=work / "data/checksums/pinned.tsv",
        rejected_dir=work / "data/archives/rejected",
        verified_dir=work / "data/checksums/verified",
        retries=1,
        timeout_s=5,
        retry_delay_s=0,
    )


def extract(entry: ArchiveEntry, work: Path) -> Path:
    return extract_verified_archive(
        work / "data/archives" / entry.name,
        entry,
        work / "data/extracted" / entry.name,
        work / "data/extracted" / f"{entry.name}.complete",
        pinned_path=work / "data/checksums/pinned.tsv",
        rejected_dir=work / "data/archives/rejected",
        verified_dir=work / "data/checksums/verified",
    )


# ----------------------------------------------------------------------------- archives


def test_stored_archive_with_flipped_bytes_is_moved_aside_naming_both_hashes(tmp_path, upstream):
    entry = entry_of(upstream)
    stored = download(entry, tmp_path)
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte changed
    stored.write_bytes(bytes(data))
    flipped = hashlib.sha256(bytes(data)).hexdigest()
    with pytest.raises(ChecksumMismatchError) as err:
        extract(entry, tmp_path)
    message = str(err.value)
    assert entry.name in message and entry.sha256 in message and flipped in message
    assert not stored.exists() and list((tmp_path / "data/archives/rejected").iterdir())
    assert not (tmp_path / "data/extracted" / f"{entry.name}.complete").exists()


def test_archive_verified_at_download_is_extracted_and_its_marker_records_it(tmp_path, upstream):
    entry = entry_of(upstream)
    download(entry, tmp_path)
    assert verified_record_path(entry.name, tmp_path / "data/checksums/verified").is_file()
    dest = extract(entry, tmp_path)
    assert dest.is_dir() and marker_is_current(
        tmp_path / "data/extracted" / f"{entry.name}.complete", tmp_path / "data/archives" / entry.name
    )
    marker = yaml.safe_load((tmp_path / "data/extracted" / f"{entry.name}.complete").read_text())
    assert marker["archive_sha256"] == entry.sha256 and marker["archive_size_bytes"] == upstream.stat().st_size


def test_unreadable_archive_matching_its_checksum_is_moved_aside_so_it_is_downloaded_again(tmp_path, upstream):
    cut = tmp_path / "published" / upstream.name  # a damaged file as published: its checksum is that of the damage
    cut.parent.mkdir()
    cut.write_bytes(upstream.read_bytes()[: upstream.stat().st_size // 3])
    entry = entry_of(cut)
    download(entry, tmp_path)
    with pytest.raises(ExtractionError, match="truncated or corrupt") as err:
        extract(entry, tmp_path)
    assert "run the same command again" in str(err.value)
    assert not (tmp_path / "data/archives" / entry.name).exists()
    assert not verified_record_path(entry.name, tmp_path / "data/checksums/verified").exists()


def test_stored_archive_changed_after_download_is_hashed_again_and_a_match_is_trusted(tmp_path, upstream):
    entry = entry_of(upstream)
    stored = download(entry, tmp_path)
    os.utime(stored, ns=(0, 0))  # same bytes, another modification time: the record no longer vouches for it
    assert (
        verify_stored_archive(
            stored,
            entry,
            pinned_path=tmp_path / "pinned.tsv",
            rejected_dir=tmp_path / "rej",
            verified_dir=tmp_path / "data/checksums/verified",
        )
        == entry.sha256
    )
    assert stored.exists()


def test_tar_with_path_traversal_is_refused_as_unsafe_not_as_truncated(tmp_path):
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    with pytest.raises(UnsafeArchiveError) as err:
        extract_archive(archive, tmp_path / "x" / "evil.tar", tmp_path / "x" / "evil.tar.complete")
    assert str(archive) in str(err.value) and "truncated" not in str(err.value)
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "x" / "evil.tar.complete").exists()


@pytest.fixture
def encrypted_zip(tmp_path) -> Path:
    """An ObjectNet-like zip encrypted by Debian's `zip -P` (Python cannot write encrypted zips)."""
    plain = synthetic.write_objectnet_zip(tmp_path / "plain", {"alarm_clock": [409]}, 2, synthetic.default_renderer)
    tree = tmp_path / "tree"
    with zipfile.ZipFile(plain) as zf:
        zf.extractall(tree)
    zip_tool = shutil.which("zip")
    assert zip_tool, "this test needs Debian's zip (apt-get install zip) to write an encrypted zip"
    out = tmp_path / "encrypted" / "objectnet-1.0.zip"
    out.parent.mkdir()
    subprocess.run([zip_tool, "-q", "-r", "-P", "right-password", str(out), "objectnet-1.0"], cwd=tree, check=True)
    return out


def test_wrong_zip_password_fails_naming_the_archive_and_leaves_no_marker(tmp_path, encrypted_zip):
    dest, marker = tmp_path / "x" / encrypted_zip.name, tmp_path / "x" / f"{encrypted_zip.name}.complete"
    with pytest.raises(ExtractionError) as err:
        extract_archive(encrypted_zip, dest, marker, password="WRONG")
    message = str(err.value)
    assert str(encrypted_zip) in message and "exit status 1" in message and "password" in message
    assert not marker.exists() and not dest.exists()


def test_right_zip_password_extracts_every_member(tmp_path, encrypted_zip):
    dest, marker = tmp_path / "x" / encrypted_zip.name, tmp_path / "x" / f"{encrypted_zip.name}.complete"
    extract_archive(encrypted_zip, dest, marker, password="right-password")
    with zipfile.ZipFile(encrypted_zip) as zf:
        members = sorted(i.filename for i in zf.infolist() if not i.is_dir())
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == members


def test_extraction_with_fewer_files_than_members_fails_and_leaves_no_marker(tmp_path):
    archive = tmp_path / "short.zip"
    with zipfile.ZipFile(archive, "w") as zf:  # two members that land on one path: one file comes out, not two
        zf.writestr("x/../b.txt", b"first")
        zf.writestr("x/b.txt", b"second")
    dest, marker = tmp_path / "x" / archive.name, tmp_path / "x" / f"{archive.name}.complete"
    with pytest.raises(ExtractionError, match=f"archive {archive}: only 1 of its 2 files were extracted"):
        extract_archive(archive, dest, marker)
    assert not marker.exists() and not dest.exists()


@pytest.mark.parametrize("change", ["deleted", "other bytes of the same size"])
def test_marker_of_a_deleted_or_changed_archive_is_dropped(tmp_path, upstream, change):
    entry = entry_of(upstream)
    stored = download(entry, tmp_path)
    extract(entry, tmp_path)
    marker = f"data/extracted/{entry.name}.complete"
    assert drop_outdated_markers([marker], tmp_path) == []
    if change == "deleted":
        stored.unlink()
    else:
        data = bytearray(stored.read_bytes())
        data[len(data) // 2] ^= 0xFF
        stored.write_bytes(bytes(data))
        os.utime(stored, ns=(1, 1))
    assert drop_outdated_markers([marker], tmp_path) == [marker]
    assert not (tmp_path / marker).exists()


# ----------------------------------------------------------------------------- images


@pytest.fixture
def imagenet_r_with_truncated_jpeg(tmp_path):
    archive = synthetic.write_hendrycks_tar(tmp_path / "up", "imagenet-r", [1, 2], 2, synthetic.default_renderer)
    extract_archive(archive, tmp_path / "x", tmp_path / "x.complete")
    root = tmp_path / "x" / "imagenet-r"
    bad = sorted((root / "n01443537").iterdir())[0]
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (150, 200, 3), dtype=np.uint8))
    encoded = io.BytesIO()
    photo.save(encoded, "JPEG", quality=90)
    bad.write_bytes(encoded.getvalue()[: len(encoded.getvalue()) * 2 // 3])  # cut inside the compressed data
    with Image.open(bad) as img:
        img.verify()  # the header is intact: PIL's verify() alone accepts the file
    return load_dataset_registry(REPO / "config" / "datasets.yaml").resolve("imagenet_r"), root, bad


def test_truncated_jpeg_is_named_by_the_manifest_step(imagenet_r_with_truncated_jpeg):
    entry, root, bad = imagenet_r_with_truncated_jpeg
    assert "truncated" in check_image(bad).lower()
    with pytest.raises(CorruptImageError) as err:
        build_manifest(entry, root, workers=1)
    assert str(bad) in str(err.value) and "skip_corrupt_images" in str(err.value)


def test_truncated_jpeg_is_skipped_when_skip_corrupt_images_is_set(imagenet_r_with_truncated_jpeg):
    entry, root, bad = imagenet_r_with_truncated_jpeg
    build = build_manifest(entry, root, skip_corrupt=True, workers=1)
    assert bad.relative_to(root).as_posix() in build.skipped["path"].tolist()
    assert bad.relative_to(root).as_posix() not in build.table["path"].tolist()


# ----------------------------------------------------------------------------- logits cache

ROW_A = {"model_id": "timm__a.x", "library": "timm", "architecture": "a", "pretrained": "x", "weights_file": ""}
ROW_B = {"model_id": "timm__b.x", "library": "timm", "architecture": "b", "pretrained": "x", "weights_file": ""}


def write_cache(path: Path, row: dict) -> Path:
    metadata = {**expected_metadata(row, "imagenet_r", "h" * 64, None), "n_images": 3}
    rng = np.random.default_rng(0)
    return write_logits(
        path, np.arange(3), np.array([1, 2, 3]), rng.normal(size=(3, 1000)).astype(np.float32), metadata
    )


def expect_of(key):
    return expected_metadata({"a": ROW_A, "b": ROW_B}[key], "imagenet_r", "h" * 64, None)


def test_foreign_logits_copied_with_old_timestamp_are_moved_aside(tmp_path):
    mine = write_cache(tmp_path / "a" / "imagenet_r.parquet", ROW_A)
    state = tmp_path / "state.json"
    assert check_logits_files([(mine, "a")], expect_of, state) == []
    foreign = write_cache(tmp_path / "b" / "imagenet_r.parquet", ROW_B)
    os.utime(foreign, ns=(1, 1))
    shutil.copy2(foreign, mine)  # cp -p: another model's file, with an mtime older than everything
    [rejected] = check_logits_files([(mine, "a")], expect_of, state)
    assert rejected.path == mine and not mine.exists() and rejected.moved_to.exists()
    assert "model_id: expected 'timm__a.x', found 'timm__b.x'" in rejected.reason
    assert read_metadata(rejected.moved_to)["model_id"] == "timm__b.x"  # kept, never deleted


def test_unreadable_logits_file_is_moved_aside(tmp_path):
    path = write_cache(tmp_path / "a" / "imagenet_r.parquet", ROW_A)
    path.write_bytes(path.read_bytes()[:100])
    [rejected] = check_logits_files([(path, "a")], expect_of, tmp_path / "state.json")
    assert not path.exists() and "not a readable logits cache" in rejected.reason


def test_good_logits_file_stays_in_place(tmp_path):
    path = write_cache(tmp_path / "a" / "imagenet_r.parquet", ROW_A)
    for _ in range(2):
        assert check_logits_files([(path, "a")], expect_of, tmp_path / "state.json") == []
    assert path.exists()


def test_logits_file_rejected_by_a_reader_is_moved_aside_with_a_targeted_command(tmp_path):
    path = write_cache(tmp_path / "results/logits/a/imagenet_r.parquet", ROW_A)
    with pytest.raises(CacheError) as err:
        read_logits(path, expect=expect_of("b"))
    moved = reject_cache_file(err.value.path)
    message = rejection_message(err.value, moved)
    assert not path.exists() and moved.exists() and moved.name.startswith("imagenet_r.parquet.rejected-")
    assert f"moved aside to {moved}" in message and f"`snakemake {path}`" in message
    assert "forcerun" not in message


# ----------------------------------------------------------------------------- run lock and config

HOLD_LOCK = """
import sys, time
from clip_robustness.workflow.runlock import acquire_run_lock
lock = acquire_run_lock(sys.argv[1])
print("locked", flush=True)
time.sleep(60)
"""


def test_second_run_in_the_same_directory_is_refused_with_one_message(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunInProgressError, match=f"pid {holder.pid}"):
            acquire_run_lock(tmp_path)
        assert acquire_run_lock(tmp_path, dryrun=True) is None  # a dry run writes nothing: let through
    finally:
        holder.kill()
        holder.wait()


def test_locks_left_by_a_killed_run_are_removed_when_no_run_is_alive(tmp_path):
    (tmp_path / SNAKEMAKE_LOCKS).mkdir(parents=True)
    (tmp_path / SNAKEMAKE_LOCKS / "0.output.lock").write_text("results/x\n")
    handle = acquire_run_lock(tmp_path)
    try:
        assert not (tmp_path / SNAKEMAKE_LOCKS).exists() and (tmp_path / RUN_LOCK).is_file()
    finally:
        handle.close()


def test_reversed_temperature_range_fails_naming_the_key():
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["metrics"]["temperature_range"] = [10.0, 0.01]
    with pytest.raises(ConfigError, match=r"metrics\.temperature_range"):
        check_config_values(config)


@pytest.fixture
def group_umask():
    previous = os.umask(0o002)  # a project group's shared umask: group-writable, world-readable
    yield
    os.umask(previous)


def test_archives_markers_and_logits_are_created_with_the_users_umask(tmp_path, upstream, group_umask):
    entry = entry_of(upstream)
    download(entry, tmp_path)
    extract(entry, tmp_path)
    logits = write_cache(tmp_path / "results/logits/a/imagenet_r.parquet", ROW_A)
    written = [
        tmp_path / "data/archives" / entry.name,
        verified_record_path(entry.name, tmp_path / "data/checksums/verified"),
        tmp_path / "data/extracted" / f"{entry.name}.complete",
        logits,
    ]
    assert {path.name: oct(path.stat().st_mode & 0o777) for path in written} == {path.name: "0o664" for path in written}
