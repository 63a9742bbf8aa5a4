"""Issue 20, unit level: files are judged by the content identity they record, not by exact timestamps. An archive
whose mtime alone changed is hashed once and its marker refreshed; a manifest whose recorded source differs from the
configured one is dropped; a zero-shot head is read without torch; decoded arrays are checked against their
manifest; files checked current are brought forward of their inputs; what was computed from a dropped file is dropped
with it. (End to end: tests/test_cache_travels.py.)"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

from clip_robustness.datasets import extract as extract_module
from clip_robustness.datasets.extract import extract_archive, marker_is_current
from clip_robustness.datasets.workflow import drop_outdated_markers, source_differences
from clip_robustness.demo import archives as synthetic
from clip_robustness.logits.cache import StaleCacheError, write_logits
from clip_robustness.logits.check import check_identity
from clip_robustness.workflow.currency import (
    bring_forward,
    drop_stale_decoded,
    drop_stale_heads,
    head_identity,
    outdate_results,
    sha256_file,
    weights_record_is_current,
)


@pytest.fixture
def extracted(tmp_path) -> tuple[Path, str]:
    """An archive in data/archives/ extracted with its sha256 recorded in the marker; (workdir, marker)."""
    archive = synthetic.write_hendrycks_tar(
        tmp_path / "data/archives", "imagenet-r", [1, 2], 2, synthetic.default_renderer
    )
    marker = f"data/extracted/{archive.name}.complete"
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    extract_archive(archive, tmp_path / "data/extracted" / archive.name, tmp_path / marker, archive_sha256=sha)
    return tmp_path, marker


def test_archive_whose_mtime_alone_changed_is_hashed_once_and_its_marker_refreshed(extracted, monkeypatch):
    workdir, marker = extracted
    archive = workdir / "data/archives" / Path(marker).name.removesuffix(".complete")
    stat = archive.stat()
    os.utime(archive, ns=(stat.st_atime_ns, (stat.st_mtime_ns // 10**9) * 10**9 - 10**9))  # tar: whole seconds
    hashed = []
    real = extract_module.file_digests
    monkeypatch.setattr(extract_module, "file_digests", lambda path: hashed.append(path) or real(path))
    assert drop_outdated_markers([marker], workdir) == []
    assert json.loads((workdir / marker).read_text())["archive_mtime_ns"] == archive.stat().st_mtime_ns
    assert drop_outdated_markers([marker], workdir) == []
    assert len(hashed) == 1  # the second run costs one stat


def test_archive_with_other_bytes_and_the_same_size_is_not_current(extracted):
    workdir, marker = extracted
    archive = workdir / "data/archives" / Path(marker).name.removesuffix(".complete")
    data = bytearray(archive.read_bytes())
    data[100] ^= 0x01
    archive.write_bytes(bytes(data))
    assert not marker_is_current(workdir / marker, archive)


def test_manifest_source_differences_name_root_and_archive():
    source = {
        "entry": {"id": "imagenet_sketch"},
        "root": "data/extracted/sketch.tar/sketch",
        "devkit_root": None,
        "subset": None,
        "archives": {"sketch.tar": "a" * 64},
    }
    assert source_differences({"source": source}, source) == []
    moved = {**source, "root": "/new/folder", "archives": {}}
    assert any("/new/folder" in d for d in source_differences({"source": source}, moved))
    rebuilt = {**source, "archives": {"sketch.tar": "b" * 64}}
    assert any("archive sketch.tar" in d for d in source_differences({"source": source}, rebuilt))
    # a manifest written before sources were recorded: its root is compared
    legacy = {"root": "data/extracted/sketch.tar/sketch", "registry_entry": {"id": "imagenet_sketch"}}
    assert source_differences(legacy, source) == []
    assert source_differences(legacy, moved) != []


def test_zero_shot_head_is_read_without_torch_and_a_head_of_another_prompt_set_is_dropped(tmp_path):
    head = tmp_path / "results/heads/m.pt"
    head.parent.mkdir(parents=True)
    torch.save(
        {"weights": torch.zeros(4, 3), "logit_scale": 100.0, "prompt_set": "simple", "n_templates": 1, "model_id": "m"},
        head,
    )
    assert head_identity(head) == {"model_id": "m", "prompt_set": "simple"}
    assert drop_stale_heads({"m": "results/heads/m.pt"}, "simple", tmp_path) == []
    messages = drop_stale_heads({"m": "results/heads/m.pt"}, "openai", tmp_path)
    assert len(messages) == 1 and "zero_shot.prompt_set" in messages[0] and not head.exists()


def test_decoded_array_of_another_manifest_is_dropped(tmp_path):
    npy = tmp_path / "data/decoded/d/k.npy"
    npy.parent.mkdir(parents=True)
    npy.write_bytes(b"x")
    npy.with_suffix(".json").write_text(json.dumps({"key": "k", "dataset": "d", "manifest_hash": "h1"}))
    assert drop_stale_decoded([("d", "k", "data/decoded/d/k.npy")], {"d": "h1"}, tmp_path) == []
    assert npy.exists()
    assert len(drop_stale_decoded([("d", "k", "data/decoded/d/k.npy")], {"d": "h2"}, tmp_path)) == 1
    assert not npy.exists() and not npy.with_suffix(".json").exists()


def test_bring_forward_orders_outputs_after_their_inputs_and_their_script(tmp_path):
    mtimes = {"in": 2_000, "out": 1_000, "newer": 3_000, "tie": 2_000, "script": 2_500}
    for name, mtime in mtimes.items():
        (tmp_path / name).write_text(name)
        os.utime(tmp_path / name, ns=(mtime * 10**6, mtime * 10**6))
    # a tie with an input is in order for Snakemake (tar keeps whole seconds): left alone
    assert bring_forward(["out", "newer", "tie"], ["in"], workdir=tmp_path) == [tmp_path / "out"]
    assert (tmp_path / "out").stat().st_mtime_ns == (tmp_path / "in").stat().st_mtime_ns
    assert (tmp_path / "newer").stat().st_mtime_ns == 3_000 * 10**6
    assert (tmp_path / "tie").stat().st_mtime_ns == 2_000 * 10**6
    # an output must be strictly newer than its rule's script
    assert bring_forward(["tie", "newer"], ["in"], "script", tmp_path) == [tmp_path / "tie"]
    assert (tmp_path / "tie").stat().st_mtime_ns > (tmp_path / "script").stat().st_mtime_ns


def test_weights_record_is_current_only_while_the_weights_have_the_recorded_sha256(tmp_path):
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"weights")
    record = tmp_path / "data/weights/m.json"
    record.parent.mkdir(parents=True)
    record.write_text(
        json.dumps({"files": [{"file": str(weights), "size": 7, "sha256": hashlib.sha256(b"weights").hexdigest()}]})
    )
    os.utime(weights, ns=(record.stat().st_mtime_ns + 10**9,) * 2)  # a newer copy of the same bytes
    assert weights_record_is_current("data/weights/m.json", [str(weights)], tmp_path)
    weights.write_bytes(b"WEIGHTS")
    os.utime(weights, ns=(record.stat().st_mtime_ns + 10**9,) * 2)
    assert not weights_record_is_current("data/weights/m.json", [str(weights)], tmp_path)


def test_logits_computed_with_other_weights_are_stale(tmp_path):
    import numpy as np

    path = write_logits(
        tmp_path / "x.parquet",
        np.arange(2),
        np.zeros(2, dtype=np.int16),
        np.zeros((2, 1000), dtype=np.float32),
        {"model_id": "m", "weights_sha256": ["a"]},
    )
    check_identity(path, {"model_id": "m", "weights_sha256": ["a"]}, {"model_id": "m", "weights_sha256": ["a"]})
    with pytest.raises(StaleCacheError, match="other weights"):
        check_identity(path, {"model_id": "m", "weights_sha256": ["a"]}, {"model_id": "m", "weights_sha256": ["b"]})
    # a file written before the weights were recorded is judged by the rest
    check_identity(path, {"model_id": "m"}, {"model_id": "m", "weights_sha256": ["b"]})


def test_archive_brought_forward_of_the_download_script_is_not_hashed_again(extracted, monkeypatch):
    from clip_robustness.datasets.workflow import bring_archives_forward

    workdir, marker = extracted
    archive = f"data/archives/{Path(marker).name.removesuffix('.complete')}"
    script = workdir / "download_archive.py"
    script.write_text("# newer than the archive: a fresh clone, or an edit")
    os.utime(script, ns=((workdir / archive).stat().st_mtime_ns + 10**9,) * 2)
    assert bring_archives_forward([marker], script, workdir) == [archive]
    assert (workdir / archive).stat().st_mtime_ns > script.stat().st_mtime_ns
    monkeypatch.setattr(extract_module, "file_digests", lambda path: pytest.fail(f"{path} hashed"))
    assert drop_outdated_markers([marker], workdir) == []


def test_a_local_folder_a_manifest_was_built_from_is_not_required_once_it_is_built(tmp_path):
    """A shared cache of a study that read a dataset from downloads.local_folders opens on a machine without that
    folder: its manifest records the folder as its root. Another folder that is missing still stops the run."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from clip_robustness.datasets.errors import MissingUserArchiveError
    from clip_robustness.datasets.registry import load_dataset_registry
    from clip_robustness.datasets.workflow import check_user_supplied_archives

    registry = load_dataset_registry(Path(__file__).resolve().parents[1] / "config" / "datasets.yaml")
    manifest = tmp_path / "data/manifests/imagenet_r.parquet"
    manifest.parent.mkdir(parents=True)
    table = pa.table({"index": [0]}).replace_schema_metadata(
        {b"clip_robustness": json.dumps({"dataset": "imagenet_r", "root": "/gone/imagenet-r"}).encode()}
    )
    pq.write_table(table, manifest)
    downloads = {"local_archives": {}, "local_folders": {"imagenet_r": "/gone/imagenet-r"}}
    check_user_supplied_archives(registry, ["imagenet_r"], downloads, workdir=tmp_path)
    with pytest.raises(MissingUserArchiveError, match="/other/imagenet-r"):
        check_user_supplied_archives(
            registry,
            ["imagenet_r"],
            {**downloads, "local_folders": {"imagenet_r": "/other/imagenet-r"}},
            workdir=tmp_path,
        )


def test_results_of_dropped_files_are_removed_and_nothing_else(tmp_path):
    tables = ["results/metrics/models/a.parquet", "results/metrics/models/b.parquet"]
    results = ["results/metrics/metrics.parquet", "results/figures/f.png", "results/tables/t.csv"]
    kept = ["results/metrics/models/c.parquet", "results/logits/c/d.parquet"]
    for path in [*tables[:1], *results[:2], *kept]:  # b's table and the table t were never computed
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(path)
    messages = outdate_results(tables, results, tmp_path)
    assert [p for p in [*tables, *results] if (tmp_path / p).exists()] == []
    assert all((tmp_path / p).read_text() == p for p in kept)
    assert messages[0].startswith("results/metrics/models/a.parquet: computed from a dropped manifest or logits file")
    assert messages[1].startswith(
        "2 file(s) computed from those metric tables removed (results/metrics/metrics.parquet,"
    )
    assert len(messages) == 2
    assert outdate_results(tables, results, tmp_path) == []  # nothing left to drop


def test_sha256_file_reads_large_files_in_chunks_and_agrees_with_hashlib(tmp_path):
    data = os.urandom((1 << 20) * 2 + 123)  # more than two chunks
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()
