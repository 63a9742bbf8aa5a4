"""`make plan` (clip_robustness.logits.plan): jobs, SLURM jobs after grouping, images, GPU-hours and disk."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import make_demo_workdir

from clip_robustness.logits.plan import (
    count_dry_run_jobs,
    dataset_images,
    predicted_logits_seconds,
    read_throughput,
    slurm_job_counts,
    startup_hours,
    throughput_for,
    workflow_localrules,
)

ROOT = Path(__file__).resolve().parents[1]
PROFILE = yaml.safe_load((ROOT / "profiles/slurm/config.yaml").read_text())


def test_dry_run_job_table_is_read_per_rule_without_the_total():
    output = (
        "Job stats:\njob                     count\n--------------------  -------\nbuild_manifest              7\n"
        "cache_logits                4\ntotal                      11\n"
    )

    assert count_dry_run_jobs(output) == {"build_manifest": 7, "cache_logits": 4}


def test_shipped_profile_puts_each_models_logits_jobs_in_one_gpu_job():
    jobs = {
        "cache_logits": 210,
        "cache_logits_imagenet_c": 210 * 5,
        "compute_model_metrics": 210,
        "download_archive": 20,
        "build_manifest": 88,
    }

    slurm = slurm_job_counts(jobs, PROFILE, ["download_archive"], n_models=210)

    assert slurm["cache_{model}"] == 210
    assert slurm["metrics"] == 7
    assert slurm["build_manifest"] == 88 and "download_archive" not in slurm


def test_start_up_counts_every_logits_job_and_no_other():
    jobs = {"cache_logits": 210, "cache_logits_imagenet_c": 1050, "compute_model_metrics": 210, "decode_images": 34}

    assert startup_hours(jobs, 21.0) == (1260, 1260 * 21.0 / 3600)


def test_predicted_logits_time_is_images_at_the_forward_rate_plus_each_jobs_start_up():
    assert predicted_logits_seconds(98_304, 8_192.0, jobs=0, job_startup_s=21.0) == 12.0
    assert predicted_logits_seconds(820, 41.0, jobs=5, job_startup_s=6.0) == 20.0 + 30.0
    with pytest.raises(ValueError, match="images_per_s must be > 0"):
        predicted_logits_seconds(10, 0.0, jobs=1, job_startup_s=1.0)


def test_localrules_are_read_from_the_workflow_files():
    localrules = workflow_localrules(sorted((ROOT / "workflow/rules").glob("*.smk")))

    assert sorted(localrules) == [
        "download_archive",
        "extract_archive",
        "fetch_model_weights",
        "from_cache",
        "share_cache",
    ]


def test_images_come_from_the_registry_capped_by_the_imagenet_c_subset(tmp_path):
    assert dataset_images("imagenet_c_fog_1", 50000, tmp_path / "absent.parquet", 5000) == (
        5000,
        "registry, subset of 50000",
    )
    assert dataset_images("imagenet_r", 30000, tmp_path / "absent.parquet", None) == (30000, "registry")


def test_seeded_throughput_rows_are_platform_measurements_and_the_rest_estimates():
    table = read_throughput(ROOT / "config/throughput.tsv")

    assert throughput_for(table, "H100", "open_clip", "ViT-B-32", "bf16") == (22300.0, "measured")
    assert set(table["source"]) <= {"measured", "estimated"}


@pytest.mark.integration
def test_make_plan_prints_the_demo_plan_without_running_a_job(tmp_path, demo_upstream):
    workdir = make_demo_workdir(tmp_path, demo_upstream)
    if not (workdir / "profiles").exists():  # make_demo_workdir copies profiles/ already
        (workdir / "profiles").symlink_to(ROOT / "profiles", target_is_directory=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "clip_robustness.logits.plan", "--configfile", "config/demo.yaml", "--gpu", "H100"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    for section in (
        "Jobs per rule",
        "SLURM jobs after grouping",
        "Images per dataset",
        "GPU-hours per model on H100",
        "Disk:",
    ):
        assert section in out
    assert "cache_logits " in out and "decode_images " in out
    assert "checked against measured runs" in out  # the plan states its error band
    assert not (workdir / "results").exists() and not (workdir / "data/manifests").exists()
