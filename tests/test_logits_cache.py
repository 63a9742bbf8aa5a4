"""The logits-cache parquet contract (docs/architecture.md, "Logits cache"): schema, encodings, metadata, atomic writes, staleness."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import clip_robustness
from clip_robustness.logits import cache as logits_cache
from clip_robustness.logits.cache import (
    LOGITS_SCHEMA,
    METADATA_KEY,
    CorruptCacheError,
    StaleCacheError,
    cache_metadata,
    expected_metadata,
    read_logits,
    read_metadata,
    write_logits,
)

ROW = {
    "model_id": "openclip__clip_tiny_demo.test",
    "library": "open_clip",
    "architecture": "clip_tiny_demo",
    "pretrained": "",
    "group": "clip_zeroshot",
    "training_source": "none",
    "training_size": 0,
    "finetune_route": "none",
    "architecture_family": "ViT",
    "resolution": 32,
    "weights_file": "",
}
PREPROCESSING = {
    "input_size": [3, 32, 32],
    "crop_pct": 1.0,
    "interpolation": "bicubic",
    "mean": [0.5] * 3,
    "std": [0.5] * 3,
}


def make_metadata(**overrides) -> dict:
    fields = dict(
        row=ROW,
        library_version="3.3.0",
        preprocessing=PREPROCESSING,
        logit_scale=100.0,
        prompt_set="openai",
        amp_dtype="float32",
        allow_tf32=False,
        gpu_name="cpu",
        dataset="imagenet_r",
        manifest_hash="ab" * 32,
        n_images=7,
    )
    fields.update(overrides)
    return cache_metadata(**fields)


@pytest.fixture
def arrays():
    rng = np.random.default_rng(0)
    n = 7
    index = np.arange(n, dtype=np.int32)
    labels = np.array([3, 999, -1, 0, 17, -1, 500], dtype=np.int16)
    logits = rng.normal(size=(n, 1000)).astype(np.float32) * 30
    return index, labels, logits


def test_written_file_has_the_spec_schema_compression_and_float_encoding(tmp_path, arrays):
    path = write_logits(tmp_path / "m" / "d.parquet", *arrays, make_metadata())

    schema = pq.read_schema(path)
    assert [(f.name, f.type) for f in schema] == [(f.name, f.type) for f in LOGITS_SCHEMA]
    assert str(schema.field("logits").type) == "fixed_size_list<element: float not null>[1000]"
    columns = pq.ParquetFile(path).metadata.row_group(0)
    encodings = {columns.column(i).path_in_schema: columns.column(i) for i in range(columns.num_columns)}
    assert {c.compression for c in encodings.values()} == {"ZSTD"}
    assert "BYTE_STREAM_SPLIT" in encodings["logits.list.element"].encodings
    assert encodings["logits.list.element"].physical_type == "FLOAT"


def test_round_trip_keeps_rows_in_written_order_and_float32_values_exactly(tmp_path, arrays):
    index, labels, logits = arrays
    order = np.array([6, 2, 0, 5, 1, 3, 4])  # a non-sorted order must come back unchanged
    path = write_logits(tmp_path / "d.parquet", index[order], labels[order], logits[order], make_metadata())

    cached = read_logits(path)
    assert cached.index.dtype == np.int32 and cached.labels.dtype == np.int16 and cached.logits.dtype == np.float32
    np.testing.assert_array_equal(cached.index, index[order])
    np.testing.assert_array_equal(cached.labels, labels[order])
    np.testing.assert_array_equal(cached.logits, logits[order])
    assert cached.logits.shape == (7, 1000)


def test_logits_are_read_without_copying_the_arrow_buffer(tmp_path, arrays):
    path = write_logits(tmp_path / "d.parquet", *arrays, make_metadata())
    assert not read_logits(path).logits.flags.owndata


def test_metadata_records_every_field_spec_section_3_asks_for(tmp_path, arrays):
    path = write_logits(tmp_path / "d.parquet", *arrays, make_metadata())
    raw = json.loads(pq.read_schema(path).metadata[METADATA_KEY.encode()])
    metadata = read_metadata(path)

    assert raw == metadata
    for key in (
        "model_id",
        "library",
        "library_version",
        "architecture",
        "pretrained",
        "preprocessing",
        "logit_scale",
        "prompt_set",
        "precision",
        "torch_version",
        "cuda_version",
        "gpu_name",
        "dataset",
        "manifest_hash",
        "pipeline_version",
    ):
        assert key in metadata, key
    assert metadata["precision"] == {"amp_dtype": "float32", "allow_tf32": False}
    assert metadata["preprocessing"] == PREPROCESSING
    assert metadata["logit_scale"] == 100.0
    assert metadata["pipeline_version"] == clip_robustness.PIPELINE_VERSION
    assert metadata["model_id"] == ROW["model_id"] and metadata["dataset"] == "imagenet_r"


def test_writer_failing_midway_leaves_neither_a_file_nor_a_temp_file(tmp_path, arrays, monkeypatch):
    real_write_table = pq.write_table

    def write_then_die(table, where, **kwargs):
        real_write_table(table, where, **kwargs)  # the bytes are on disk ...
        raise KeyboardInterrupt("job killed")  # ... and the job dies before the rename

    monkeypatch.setattr(logits_cache.pq, "write_table", write_then_die)
    target = tmp_path / "m" / "d.parquet"
    with pytest.raises(KeyboardInterrupt):
        write_logits(target, *arrays, make_metadata())
    assert list(target.parent.iterdir()) == []


def test_temp_file_left_by_a_killed_job_is_removed_by_the_next_write(tmp_path, arrays):
    leftover = tmp_path / ".d.parquet.abc123.tmp"
    leftover.write_bytes(b"PAR1 half a file")  # SIGKILL leaves the temp file behind, never d.parquet
    write_logits(tmp_path / "d.parquet", *arrays, make_metadata())
    assert [p.name for p in tmp_path.iterdir()] == ["d.parquet"]


def test_failed_rewrite_keeps_the_previous_valid_file(tmp_path, arrays, monkeypatch):
    target = write_logits(tmp_path / "d.parquet", *arrays, make_metadata())
    before = target.read_bytes()

    def die(table, where, **kwargs):
        Path(where).write_bytes(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(logits_cache.pq, "write_table", die)
    with pytest.raises(OSError, match="disk full"):
        write_logits(target, *arrays, make_metadata(n_images=8))
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["d.parquet"]


@pytest.mark.parametrize(
    "key, other",
    [
        ("model_id", "openclip__other.test"),
        ("library", "timm"),
        ("architecture", "ViT-B-32"),
        ("pretrained", "openai"),
        ("dataset", "imagenet_a"),
        ("manifest_hash", "cd" * 32),
        ("prompt_set", "simple"),
    ],
)
def test_reading_with_a_different_expectation_raises_stale_naming_file_key_and_both_values(
    tmp_path, arrays, key, other
):
    path = write_logits(tmp_path / "d.parquet", *arrays, make_metadata())
    expect = expected_metadata(ROW, "imagenet_r", "ab" * 32, "openai")
    assert read_logits(path, expect=expect).metadata["model_id"] == ROW["model_id"]  # the matching one reads

    expect[key] = other
    with pytest.raises(StaleCacheError) as error:
        read_logits(path, expect=expect)
    message = str(error.value)
    assert str(path) in message and key in message
    assert repr(other) in message and repr(read_metadata(path)[key]) in message


@pytest.mark.parametrize(
    "changed",
    [
        {"row": dict(ROW, model_id="openclip__other.test")},
        {"row": dict(ROW, architecture="ViT-B-32")},
        {"dataset": "imagenet_a"},
        {"manifest_hash": "cd" * 32},
        {"prompt_set": "simple"},
    ],
    ids=["model", "architecture", "dataset", "manifest", "prompt_set"],
)
def test_a_file_is_stale_for_what_its_reader_expects_of_another_model_manifest_or_prompt_set(tmp_path, arrays, changed):
    """What expected_metadata derives from a (model, dataset, manifest, prompt set) tells their cache files apart."""
    path = write_logits(tmp_path / "d.parquet", *arrays, make_metadata())
    same = dict(row=ROW, dataset="imagenet_r", manifest_hash="ab" * 32, prompt_set="openai")
    read_logits(path, expect=expected_metadata(**same))
    with pytest.raises(StaleCacheError, match=str(path)):
        read_logits(path, expect=expected_metadata(**{**same, **changed}))


def test_classifier_caches_expect_no_prompt_set(tmp_path, arrays):
    timm_row = dict(ROW, model_id="timm__test_resnet", library="timm", architecture="test_resnet")
    path = write_logits(tmp_path / "d.parquet", *arrays, make_metadata(row=timm_row, prompt_set=None, logit_scale=None))
    read_logits(path, expect=expected_metadata(timm_row, "imagenet_r", "ab" * 32, prompt_set="openai"))


def test_a_key_absent_from_the_file_counts_as_stale(tmp_path, arrays):
    path = write_logits(tmp_path / "d.parquet", *arrays, {"model_id": "m"})
    with pytest.raises(StaleCacheError, match="manifest_hash: expected 'h', found <absent>"):
        read_logits(path, expect={"model_id": "m", "manifest_hash": "h"})


def test_truncated_parquet_raises_corrupt_error_naming_the_file_and_the_fix(tmp_path, arrays):
    path = write_logits(tmp_path / "d.parquet", *arrays, make_metadata())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])

    with pytest.raises(CorruptCacheError) as error:
        read_logits(path)
    assert str(path) in str(error.value) and "Delete this file and rerun" in str(error.value)


def test_non_parquet_file_raises_corrupt_error(tmp_path):
    path = tmp_path / "d.parquet"
    path.write_text("not parquet at all\n")
    with pytest.raises(CorruptCacheError, match="d.parquet"):
        read_logits(path)


def test_parquet_with_another_schema_raises_corrupt_error(tmp_path):
    import pyarrow as pa

    path = tmp_path / "d.parquet"
    table = pa.table(
        {"index": pa.array([0], pa.int32()), "label": pa.array([1], pa.int16()), "logits": pa.array([0.5])}
    )
    pq.write_table(table.replace_schema_metadata({METADATA_KEY: "{}"}), path)
    with pytest.raises(CorruptCacheError, match="schema"):
        read_logits(path)


@pytest.mark.parametrize(
    "index, labels, logits, message",
    [
        (np.arange(3), np.zeros(3, np.int16), np.zeros((3, 10), np.float32), r"shape \[n, 1000\]"),
        (np.arange(3), np.zeros(2, np.int16), np.zeros((3, 1000), np.float32), "disagree in rows"),
        (np.arange(3), np.array([0, 1, 40000]), np.zeros((3, 1000), np.float32), "label must be integers"),
    ],
)
def test_bad_arrays_are_refused_before_anything_is_written(tmp_path, index, labels, logits, message):
    with pytest.raises(ValueError, match=message):
        write_logits(tmp_path / "d.parquet", index, labels, logits, {})
    assert list(tmp_path.iterdir()) == []
