"""Integration: the logits stage's job cutting on the demo (workflow/rules/logits.smk), through real Snakemake runs.

One logits job per model and group of datasets; the contracts kept: one parquet per (model, dataset), a dataset
added to the study computes only its own files, rerunning one model touches no other model's files, and decoding
stays under config inference.decoded_budget_gb.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from conftest import make_demo_workdir

from clip_robustness.datasets.manifest import read_manifest
from clip_robustness.demo import archives as synthetic
from clip_robustness.logits.budget import BUDGET_DIR
from clip_robustness.logits.cache import read_logits, read_metadata
from clip_robustness.logits.decoded import NPY_HEADER_ALLOWANCE, decoded_size_bytes
from clip_robustness.logits.geometry import decode_spec_for_row
from clip_robustness.models.registry import load_model_registry

pytestmark = pytest.mark.integration

RESNET, VIT = "timm__test_resnet.demo", "timm__test_vit.demo"
SMALL_STUDY = {
    "models": [RESNET, VIT],
    "datasets": {
        "in_distribution": "imagenet_val",
        "test_conditions": ["imagenet_r"],
        "ood": ["textures"],
        "cue_conflict": [],
    },
}


def snakemake(workdir: Path, config: dict, *args: str) -> subprocess.CompletedProcess:
    (workdir / "test_config.yaml").write_text(yaml.safe_dump(config))
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--configfile",
        "config/demo.yaml",
        "test_config.yaml",
        "--cores",
        "2",
        "--scheduler",
        "greedy",
        *args,
    ]
    result = subprocess.run(cmd, cwd=workdir, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stderr[-6000:]}")
    return result


def logits_targets(config: dict) -> list[str]:
    d = config["datasets"]
    datasets = [d["in_distribution"], *d["test_conditions"], *d["ood"]]
    return [f"results/logits/{m}/{ds}.parquet" for m in config["models"] for ds in datasets]


def fingerprint(path: Path) -> tuple[str, str]:
    """What identifies one computation of a cache file: its bytes' digest and its metadata's creation time."""
    return hashlib.sha256(path.read_bytes()).hexdigest(), read_metadata(path)["created_utc"]


def jobs_of(result: subprocess.CompletedProcess, rule: str) -> int:
    for line in result.stderr.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == rule and parts[1].isdigit():
            return int(parts[1])
    return 0


@pytest.fixture(scope="module")
def small_study(tmp_path_factory, demo_upstream) -> Path:
    workdir = make_demo_workdir(tmp_path_factory.mktemp("cutting"), demo_upstream)
    result = snakemake(workdir, SMALL_STUDY, *logits_targets(SMALL_STUDY))
    assert jobs_of(result, "cache_logits") == 2  # one job per model for its three datasets
    return workdir


def test_each_model_runs_one_job_writing_one_file_per_dataset(small_study):
    for model in SMALL_STUDY["models"]:
        for dataset in ("imagenet_val", "imagenet_r", "textures"):
            metadata = read_metadata(small_study / f"results/logits/{model}/{dataset}.parquet")
            manifest = read_manifest(small_study / f"data/manifests/{dataset}.parquet")
            assert (metadata["model_id"], metadata["dataset"]) == (model, dataset)
            assert metadata["manifest_hash"] == manifest.manifest_hash


def test_a_new_dataset_computes_only_its_own_files(small_study):
    old = {p: fingerprint(small_study / p) for p in logits_targets(SMALL_STUDY)}
    bigger = {**SMALL_STUDY, "datasets": {**SMALL_STUDY["datasets"], "test_conditions": ["imagenet_r", "imagenet_a"]}}

    snakemake(small_study, bigger, *logits_targets(bigger))

    assert {p: fingerprint(small_study / p) for p in old} == old
    for model in bigger["models"]:
        log = (small_study / f"results/logs/cache_logits/{model}.log").read_text()
        assert f"{model} on imagenet_a: computing" in log
        assert read_metadata(small_study / f"results/logits/{model}/imagenet_a.parquet")["dataset"] == "imagenet_a"


def test_rerun_model_recomputes_that_model_only(small_study):
    old = {p: fingerprint(small_study / p) for p in logits_targets(SMALL_STUDY)}
    # what `make rerun-model MODEL=...` does to the logits stage
    for path in (small_study / "results/logits" / RESNET).glob("*.parquet"):
        path.unlink()
    snakemake(
        small_study,
        SMALL_STUDY,
        "--forcerun",
        "cache_logits",
        "cache_logits_imagenet_c",
        "--",
        *[t for t in logits_targets(SMALL_STUDY) if f"/{RESNET}/" in t],
    )

    for path, before in old.items():
        assert (fingerprint(small_study / path) != before) == (f"/{RESNET}/" in path), path


def test_decoding_waits_within_a_budget_smaller_than_all_arrays(tmp_path, demo_upstream):
    workdir = make_demo_workdir(tmp_path, demo_upstream)
    study = {**SMALL_STUDY, "models": [RESNET, VIT, "openclip__clip_tiny_demo__demo"]}
    snakemake(workdir, study, *[f"data/manifests/{d}.parquet" for d in ("imagenet_val", "imagenet_r", "textures")])
    registry = load_model_registry(workdir / "config/demo/models.tsv")
    geometries = {spec.key: spec.input_size for spec in (decode_spec_for_row(registry.row(m)) for m in study["models"])}
    counts = [len(read_manifest(p).table) for p in (workdir / "data/manifests").glob("*.parquet")]
    groups = [sum(decoded_size_bytes(n, size) + NPY_HEADER_ALLOWANCE for n in counts) for size in geometries.values()]
    budget = max(groups)
    assert len(groups) >= 2 and sum(groups) > budget  # the budget cannot hold every array at once
    peak, done = [0], threading.Event()

    def watch():  # every decoded byte on disk, finished or being written
        while not done.is_set():
            root = workdir / "data/decoded"
            alive = 0
            for path in root.glob("*/*"):
                if path.suffix in (".npy", ".tmp"):
                    try:
                        alive += path.stat().st_size
                    except FileNotFoundError:  # deleted by Snakemake between listing and stat
                        pass
            peak[0] = max(peak[0], alive)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        snakemake(workdir, {**study, "inference": {"decoded_budget_gb": budget / 1e9}}, *logits_targets(study))
    finally:
        done.set()
        watcher.join()

    ledger = [
        json.loads(line) for line in (workdir / "data/decoded" / BUDGET_DIR / "ledger.jsonl").read_text().splitlines()
    ]
    assert len(ledger) == len(groups)
    assert all(r["alive_before"] + r["bytes"] <= r["budget"] for r in ledger)
    assert 0 < peak[0] <= budget
    assert all((workdir / t).exists() for t in logits_targets(study))


def with_imagenet_c(workdir: Path, upstream: Path, corruptions: list[str], severities: list[int]) -> str:
    """Add a generated ImageNet-C blur.tar (real layout: <corruption>/<severity>/<wnid>/<id>.JPEG) to a copy of the
    demo's dataset registry in ``workdir``; returns the copy's path (config ``dataset_registry``)."""
    archive = synthetic.write_imagenet_c_tar(
        workdir / "upstream_c",
        "blur",
        [1, 409, 954],
        2,
        synthetic.default_renderer,
        corruptions=corruptions,
        severities=severities,
    )
    registry = yaml.safe_load((upstream / "datasets.yaml").read_text())
    imagenet_c = synthetic.registry_datasets("imagenet_c")["imagenet_c"]
    imagenet_c["corruption_archives"] = {c: "blur.tar" for c in corruptions}
    synthetic.write_dataset_registry(
        workdir / "config/with_imagenet_c.yaml",
        {**registry["archives"], "blur.tar": synthetic.archive_entry(archive)},
        {**registry["datasets"], "imagenet_c": imagenet_c},
    )
    return "config/with_imagenet_c.yaml"


def test_imagenet_c_jobs_per_severity_or_per_corruption_compute_the_same_files(tmp_path, demo_upstream):
    workdir = make_demo_workdir(tmp_path, demo_upstream)
    corruptions, severities = ["defocus_blur", "motion_blur", "zoom_blur"], [1, 2]
    study = {
        "models": [RESNET],
        "dataset_registry": with_imagenet_c(workdir, demo_upstream, corruptions, severities),
        "datasets": {
            "in_distribution": "imagenet_val",
            "test_conditions": [],
            "ood": ["textures"],
            "imagenet_c": {"corruptions": corruptions, "severities": severities},
            "cue_conflict": [],
        },
    }
    conditions = [f"imagenet_c_{c}_{s}" for c in corruptions for s in severities]
    targets = [f"results/logits/{RESNET}/{d}.parquet" for d in conditions]
    logits = {}
    for cut, jobs in (("per_severity", len(severities)), ("per_corruption", len(corruptions))):
        for path in (workdir / "results/logits").glob(f"{RESNET}/imagenet_c_*.parquet"):
            path.unlink()
        result = snakemake(workdir, {**study, "inference": {"imagenet_c_jobs": cut}}, *targets)

        assert jobs_of(result, "cache_logits_imagenet_c") == jobs  # one model build per group
        assert jobs_of(result, "decode_images_imagenet_c") == jobs  # one decode job per group and geometry
        logits[cut] = {d: read_logits(workdir / f"results/logits/{RESNET}/{d}.parquet") for d in conditions}
        for d in conditions:
            assert read_metadata(workdir / f"results/logits/{RESNET}/{d}.parquet")["dataset"] == d
            assert len(logits[cut][d].logits) == 6  # 3 classes x 2 images of this condition
    for d in conditions:  # the cut changes the jobs, not the numbers
        assert (logits["per_severity"][d].logits == logits["per_corruption"][d].logits).all(), d
