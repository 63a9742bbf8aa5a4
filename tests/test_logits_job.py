"""The logits group job (clip_robustness.logits.job): one model build, one parquet per dataset, current files kept."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import timm
import torch
from safetensors.torch import save_file
from test_inference import cache_on_cpu, make_manifest

from clip_robustness.logits.cache import expected_metadata, read_logits, read_metadata
from clip_robustness.logits.check import check_logits_files, current_metadata_of
from clip_robustness.logits.cutting import LogitsGroups
from clip_robustness.logits.job import DatasetTask, cache_group_logits, reuse_reason


@pytest.fixture(scope="module")
def resnet_row(tmp_path_factory):
    torch.manual_seed(1)
    weights = tmp_path_factory.mktemp("weights") / "test_resnet.safetensors"
    save_file(timm.create_model("test_resnet", num_classes=1000).state_dict(), str(weights))
    return {
        "model_id": "timm__test_resnet.local",
        "library": "timm",
        "architecture": "test_resnet",
        "pretrained": "demo",
        "weights_file": str(weights),
    }


def manifests(tmp_path, names):
    """Small real manifests (random images in class folders), one per dataset name."""
    return {
        name: make_manifest(tmp_path / name / "images", [i % 4 for i in range(3 + k)], dataset=name)
        for k, name in enumerate(names)
    }


def run_group(row, tasks, timings=None):
    return cache_group_logits(
        row,
        tasks,
        head_path=None,
        weights_path=row["weights_file"],
        prompt_set="openai",
        batch_size=4,
        num_workers=0,
        precision_name="bf16",
        allow_tf32=True,
        device="cpu",
        timings=timings,
    )


def test_group_job_writes_each_dataset_the_file_a_one_dataset_job_writes(tmp_path, resnet_row):
    built = manifests(tmp_path, ["imagenet_r", "textures"])
    tasks = [
        DatasetTask(name, tmp_path / name / f"{name}.manifest.parquet", tmp_path / "logits" / f"{name}.parquet")
        for name in built
    ]

    run_group(resnet_row, tasks)

    for task in tasks:
        manifest = built[task.dataset]
        single = tmp_path / "single" / f"{task.dataset}.parquet"
        cache_on_cpu(
            resnet_row, manifest, single, prompt_set="openai", batch_size=4, precision_name="bf16", allow_tf32=True
        )
        grouped = read_logits(
            task.output, expect=expected_metadata(resnet_row, task.dataset, manifest.manifest_hash, None)
        )
        np.testing.assert_array_equal(grouped.logits, read_logits(single).logits)
        assert grouped.metadata["n_images"] == len(manifest.table)


def test_group_job_keeps_current_files_and_computes_only_the_new_dataset(tmp_path, resnet_row):
    built = manifests(tmp_path, ["imagenet_r", "textures", "inaturalist"])
    tasks = [
        DatasetTask(name, tmp_path / name / f"{name}.manifest.parquet", tmp_path / "logits" / f"{name}.parquet")
        for name in built
    ]
    run_group(resnet_row, tasks[:2])
    before = {t.dataset: (t.output.stat().st_mtime_ns, read_metadata(t.output)["created_utc"]) for t in tasks[:2]}

    timings: list[dict] = []
    written = run_group(resnet_row, tasks, timings)

    assert written == [tasks[2].output]
    assert [t["dataset"] for t in timings] == ["inaturalist"]
    assert {
        t.dataset: (t.output.stat().st_mtime_ns, read_metadata(t.output)["created_utc"]) for t in tasks[:2]
    } == before


def test_group_job_with_every_output_current_computes_nothing(tmp_path, resnet_row):
    built = manifests(tmp_path, ["imagenet_r"])
    tasks = [
        DatasetTask(n, tmp_path / n / f"{n}.manifest.parquet", tmp_path / "logits" / f"{n}.parquet") for n in built
    ]
    run_group(resnet_row, tasks)

    assert run_group(resnet_row, tasks) == []


def test_file_older_than_its_manifest_is_recomputed(tmp_path, resnet_row):
    manifests(tmp_path, ["imagenet_r"])
    task = DatasetTask(
        "imagenet_r",
        tmp_path / "imagenet_r" / "imagenet_r.manifest.parquet",
        tmp_path / "logits" / "imagenet_r.parquet",
    )
    run_group(resnet_row, [task])
    later = time.time() + 5
    os.utime(task.manifest, (later, later))

    assert reuse_reason(task.output, {"dataset": "imagenet_r"}, [task.manifest]).startswith("older than")
    assert run_group(resnet_row, [task]) == [task.output]


def test_file_of_another_manifest_or_model_is_not_reused(tmp_path, resnet_row):
    built = manifests(tmp_path, ["imagenet_r"])
    task = DatasetTask(
        "imagenet_r",
        tmp_path / "imagenet_r" / "imagenet_r.manifest.parquet",
        tmp_path / "logits" / "imagenet_r.parquet",
    )
    run_group(resnet_row, [task])
    expect = expected_metadata(resnet_row, "imagenet_r", built["imagenet_r"].manifest_hash, None)

    assert reuse_reason(task.output, expect, []) is None
    assert "manifest_hash" in reuse_reason(task.output, {**expect, "manifest_hash": "0" * 64}, [])
    assert "model_id" in reuse_reason(task.output, {**expect, "model_id": "timm__other"}, [])
    assert reuse_reason(tmp_path / "absent.parquet", expect, []) == "missing"


def rewrite_footer(path, **changes) -> None:
    """Change entries of a parquet file's ``clip_robustness`` footer, keeping its data and modification time."""
    stat = path.stat()
    table = pq.read_table(path)
    metadata = {**json.loads(table.schema.metadata[b"clip_robustness"]), **changes}
    pq.write_table(table.replace_schema_metadata({"clip_robustness": json.dumps(metadata)}), path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


@pytest.mark.parametrize("stale", [None, "head_precision", "subset", "model_id"])
def test_check_before_planning_and_group_job_agree_on_what_is_current(tmp_path, resnet_row, stale):
    """One definition of a current file (clip_robustness.logits.cache.current_metadata): a file the group job would
    recompute is moved aside before planning (so Snakemake plans its job), and a file it keeps is left alone."""
    manifests(tmp_path, ["imagenet_r"])
    task = DatasetTask(
        "imagenet_r",
        tmp_path / "imagenet_r" / "imagenet_r.manifest.parquet",
        tmp_path / "logits" / "imagenet_r.parquet",
    )
    run_group(resnet_row, [task])
    if stale == "head_precision":  # a file from a reduced-precision final layer
        rewrite_footer(task.output, head_precision="float16")
    elif stale == "subset":  # the manifest is now an ImageNet-C subset the file was not computed on
        rewrite_footer(task.manifest, subset={"images_per_condition": 2, "seed": 0})
    elif stale == "model_id":
        rewrite_footer(task.output, model_id="timm__other.demo")
    saved = tmp_path / "saved.parquet"
    shutil.copy2(task.output, saved)

    rejected = check_logits_files(
        [(task.output, ("timm__test_resnet.local", "imagenet_r"))],
        current_metadata_of(lambda model: resnet_row, "openai", lambda dataset: task.manifest),
        tmp_path / "state.json",
    )
    shutil.copy2(saved, task.output)  # the same file, for the job
    recomputed = run_group(resnet_row, [task]) == [task.output]

    assert bool(rejected) == recomputed == (stale is not None)
    if stale is not None:
        assert (stale if stale != "subset" else "manifest_subset") in rejected[0].reason


STUDY_DATASETS = [
    "imagenet_val",
    "imagenet_r",
    "imagenet_c_fog_1",
    "imagenet_c_fog_3",
    "imagenet_c_snow_1",
    "imagenet_c_snow_3",
    "textures",
]
STUDY_C = {"corruptions": ["fog", "snow"], "severities": [1, 3]}


def test_per_severity_groups_put_each_imagenet_c_severity_apart_and_everything_else_in_core():
    groups = LogitsGroups.from_study(STUDY_DATASETS, STUDY_C)  # the default cut

    assert groups.groups() == {
        "core": ["imagenet_val", "imagenet_r", "textures"],
        "1": ["imagenet_c_fog_1", "imagenet_c_snow_1"],
        "3": ["imagenet_c_fog_3", "imagenet_c_snow_3"],
    }
    assert groups.group_of("imagenet_c_snow_3") == "3" and groups.jobs_per_model() == 3
    assert groups.condition_patterns("g") == ["imagenet_c_fog_{g}", "imagenet_c_snow_{g}"]


def test_per_corruption_groups_put_each_imagenet_c_corruption_apart_and_everything_else_in_core():
    groups = LogitsGroups.from_study(STUDY_DATASETS, STUDY_C, cut="per_corruption")

    assert groups.groups() == {
        "core": ["imagenet_val", "imagenet_r", "textures"],
        "fog": ["imagenet_c_fog_1", "imagenet_c_fog_3"],
        "snow": ["imagenet_c_snow_1", "imagenet_c_snow_3"],
    }
    assert groups.group_of("imagenet_c_snow_3") == "snow" and groups.jobs_per_model() == 3
    assert groups.condition_patterns("g") == ["imagenet_c_{g}_1", "imagenet_c_{g}_3"]


@pytest.mark.parametrize("cut", ["per_severity", "per_corruption"])
def test_every_imagenet_c_condition_is_in_exactly_one_group_and_patterns_expand_to_them(cut):
    c = {"corruptions": ["gaussian_noise", "fog", "jpeg_compression"], "severities": [1, 2, 5]}
    groups = LogitsGroups.from_study(["imagenet_val"], c, cut=cut)
    conditions = [f"imagenet_c_{x}_{s}" for x in c["corruptions"] for s in c["severities"]]

    assert sorted(groups.all_imagenet_c_ids()) == sorted(conditions)
    for group in groups.imagenet_c_groups():  # what the rules' outputs become for one job
        assert [p.format(g=group) for p in groups.condition_patterns("g")] == groups.imagenet_c_ids(group)


def test_an_unknown_cut_or_group_is_refused_naming_it():
    with pytest.raises(ValueError, match="inference.imagenet_c_jobs is 'per_model'"):
        LogitsGroups.from_study(STUDY_DATASETS, STUDY_C, cut="per_model")
    with pytest.raises(KeyError, match="'2' is no ImageNet-C group"):
        LogitsGroups.from_study(STUDY_DATASETS, STUDY_C).imagenet_c_ids("2")


def test_study_without_imagenet_c_has_one_group():
    groups = LogitsGroups.from_study(["imagenet_val", "textures"], {"corruptions": [], "severities": []})

    assert groups.groups() == {"core": ["imagenet_val", "textures"]}


def test_rule_lists_zip_into_tasks_and_a_lone_path_is_a_group_of_one():
    from clip_robustness.logits.job import tasks_from_lists

    (task,) = tasks_from_lists("imagenet_c_fog_1", "m.parquet", "o.parquet", "d.npy")

    assert (task.dataset, task.manifest.name, task.output.name, task.decoded.name) == (
        "imagenet_c_fog_1",
        "m.parquet",
        "o.parquet",
        "d.npy",
    )
    with pytest.raises(ValueError, match="parallel lists"):
        tasks_from_lists(["a", "b"], ["m"], ["o1", "o2"])


# ----------------------------------------------------------------------------- overlapped datasets, background writer


def test_the_next_item_is_prepared_while_the_current_one_computes_and_results_keep_their_order():
    import threading

    from clip_robustness.logits.job import run_overlapped

    prepared = [threading.Event() for _ in range(4)]
    calls: list[str] = []

    def prepare(item: int) -> int:
        calls.append(f"prepare {item}")
        prepared[item].set()
        return item

    def compute(item: int):
        # the next item's preparation runs meanwhile: wait for it (a 10 s guard, not a timing)
        overlapped = item + 1 == len(prepared) or prepared[item + 1].wait(10)
        calls.append(f"compute {item}")
        return np.full((item + 1, 2), float(overlapped), dtype=np.float32), 0.0

    def write(item: int, logits):
        return Path(f"out{item}"), 0.0

    results = run_overlapped(list(range(4)), prepare, compute, write)

    assert [str(path) for path, _ in results] == ["out0", "out1", "out2", "out3"]
    assert [record["n_images"] for _, record in results] == [1, 2, 3, 4]
    assert [c for c in calls if c.startswith("compute")] == [f"compute {i}" for i in range(4)]
    assert calls.index("prepare 1") < calls.index("compute 0") and calls.index("prepare 3") < calls.index("compute 2")
    assert all(
        set(record) == {"n_images", "inference_s", "wait_s", "write_s", "compute_started"} for _, record in results
    )


def test_a_failed_compute_still_writes_every_file_computed_before_it(tmp_path):
    from clip_robustness.logits.job import run_overlapped

    def compute(item: int):
        if item == 2:
            raise RuntimeError("device lost at item 2")
        return np.zeros((1, 1), dtype=np.float32), 0.0

    def write(item: int, logits):
        (tmp_path / f"out{item}").write_text("done")
        return tmp_path / f"out{item}", 0.0

    with pytest.raises(RuntimeError, match="device lost at item 2"):
        run_overlapped([0, 1, 2, 3], lambda item: item, compute, write)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out0", "out1"]


def test_a_failed_parquet_write_fails_the_group_job_and_leaves_no_file_there(tmp_path, resnet_row):
    from clip_robustness.workflow.io import temp_files_of

    built = manifests(tmp_path, ["imagenet_r", "textures", "inaturalist"])
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the output folder should be")
    outputs = {
        "imagenet_r": tmp_path / "logits" / "imagenet_r.parquet",
        "textures": blocked / "textures.parquet",
        "inaturalist": tmp_path / "logits" / "inaturalist.parquet",
    }
    tasks = [DatasetTask(name, tmp_path / name / f"{name}.manifest.parquet", outputs[name]) for name in built]

    with pytest.raises(OSError):  # the writer thread's error, raised by the job
        run_group(resnet_row, tasks)

    first = read_logits(
        outputs["imagenet_r"],
        expect=expected_metadata(resnet_row, "imagenet_r", built["imagenet_r"].manifest_hash, None),
    )
    assert first.logits.shape == (3, 1000)  # the file before the failure is complete and valid
    assert not outputs["textures"].exists() and blocked.is_file()
    assert temp_files_of(outputs["imagenet_r"]) == [] and temp_files_of(outputs["inaturalist"]) == []


def test_decoded_group_job_writes_each_dataset_the_one_dataset_jobs_logits_bit_for_bit(tmp_path, resnet_row):
    from clip_robustness.logits.decoded import decode_dataset
    from clip_robustness.logits.geometry import decode_spec_for_row

    built = manifests(tmp_path, ["imagenet_r", "textures", "inaturalist", "imagenet_a"])
    spec = decode_spec_for_row(resnet_row)
    tasks = []
    for name, manifest in built.items():
        npy = tmp_path / "decoded" / name / f"{spec.key}.npy"
        decode_dataset(manifest, spec, npy, npy.with_suffix(".json"))
        tasks.append(
            DatasetTask(
                name, tmp_path / name / f"{name}.manifest.parquet", tmp_path / "logits" / f"{name}.parquet", npy
            )
        )
    timings: list[dict] = []

    run_group(resnet_row, tasks, timings)

    assert [t["dataset"] for t in timings] == list(built)
    for task in tasks:
        single = tmp_path / "single" / f"{task.dataset}.parquet"
        cache_on_cpu(
            resnet_row,
            built[task.dataset],
            single,
            prompt_set="openai",
            batch_size=4,
            precision_name="bf16",
            allow_tf32=True,
            decoded=task.decoded,
        )
        grouped = read_logits(task.output)
        assert grouped.logits.tobytes() == read_logits(single).logits.tobytes()
        assert grouped.metadata["input_pipeline"]["path"] == "decoded"
