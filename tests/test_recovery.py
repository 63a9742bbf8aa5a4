"""Recovery is "run the same command again" (issue 15, docs/troubleshooting.md): each fault is injected into a
completed run of the real DAG (the demo cut to one model and two datasets), the message checked, the same command
run again, and the outputs compared with those of the clean run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import make_demo_workdir
from demo_support import job_stats, snakemake_in

from clip_robustness.logits.cache import read_logits

pytestmark = pytest.mark.integration

MODEL = "timm__test_resnet.demo"
# One model and two datasets: every rule of the DAG runs, each rerun costs seconds of compute.
SMALL = {
    "models": [MODEL],
    "datasets": {
        "in_distribution": "imagenet_val",
        "test_conditions": ["imagenet_r"],
        "ood": [],
        "imagenet_c": {"corruptions": [], "severities": []},
        "cue_conflict": [],
    },
    "inference": {"decoded_cache": False},
}
COMMAND = ["--configfile", "config/demo.yaml", "config/recovery.yaml", "--cores", "2"]
# After the clean run, figures, tables and the QC table (which read only results/metrics/) are left out of the
# reruns: they play no part in recovery, and are 9 of the ~15 jobs a rerun would otherwise run. A rerun asks for the
# default target's other files (the metrics table, every extraction marker, manifest and logits file of the clean run:
# RERUN_TARGETS, written by the clean run) and may run only the rules up to them (--allowed-rules).
RERUN = [
    "--allowed-rules",
    "download_archive",
    "extract_archive",
    "build_manifest",
    "decode_images",
    "fetch_model_weights",
    "build_zero_shot_head",
    "cache_logits",
    "compute_model_metrics",
    "aggregate_metrics",
]
RERUN_TARGETS = "rerun_targets.txt"
LOGITS = f"results/logits/{MODEL}/imagenet_r.parquet"


def rerun(workdir: Path) -> list[str]:
    """The arguments of a rerun in ``workdir`` (a copy of the clean run)."""
    return [*COMMAND, *(workdir / RERUN_TARGETS).read_text().split(), *RERUN]


def snakemake(workdir: Path, *extra: str, command: list[str] | None = None) -> subprocess.CompletedProcess:
    """The user's command (plus ``extra``), as typed in ``workdir``; by default a rerun."""
    return snakemake_in(workdir, *(rerun(workdir) if command is None else command), *extra)


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory, demo_upstream) -> Path:
    workdir = make_demo_workdir(tmp_path_factory.mktemp("recovery_clean"), demo_upstream)
    (workdir / "config/recovery.yaml").write_text(yaml.safe_dump(SMALL))
    result = snakemake(workdir, command=COMMAND)
    assert result.returncode == 0, result.stderr[-4000:]
    targets = [
        "results/metrics/metrics.parquet",
        *(
            str(path.relative_to(workdir))
            for pattern in ("data/extracted/*.complete", "data/manifests/*.parquet", "results/logits/*/*.parquet")
            for path in sorted(workdir.glob(pattern))
        ),
    ]
    (workdir / RERUN_TARGETS).write_text("\n".join(targets) + "\n")
    return workdir


@pytest.fixture
def workdir(clean_run, tmp_path) -> Path:
    """A copy of the completed run (timestamps kept) to inject one fault into."""
    copy = tmp_path / "run"
    shutil.copytree(clean_run, copy, symlinks=True)
    return copy


def assert_outputs_equal_clean_run(workdir: Path, clean: Path) -> None:
    for path in sorted((clean / "results/logits").rglob("*.parquet")):
        relative = path.relative_to(clean)
        np.testing.assert_array_equal(read_logits(workdir / relative).logits, read_logits(path).logits)
    pd.testing.assert_frame_equal(
        pd.read_parquet(workdir / "results/metrics/metrics.parquet"),
        pd.read_parquet(clean / "results/metrics/metrics.parquet"),
    )
    dry_run = snakemake(workdir, "--dry-run")
    assert "Nothing to be done" in dry_run.stdout + dry_run.stderr


def test_deleted_logits_file_is_recomputed_by_the_same_command(workdir, clean_run):
    (workdir / LOGITS).unlink()
    result = snakemake(workdir)
    assert result.returncode == 0, result.stderr[-4000:]
    assert job_stats(result)["cache_logits"] == 1
    assert_outputs_equal_clean_run(workdir, clean_run)


def test_foreign_logits_copied_with_old_timestamp_are_moved_aside_and_recomputed(workdir, clean_run):
    foreign = workdir / f"results/logits/{MODEL}/imagenet_val.parquet"
    shutil.copy2(foreign, workdir / LOGITS)  # cp -p: the wrong dataset's logits, with an old timestamp
    result = snakemake(workdir)
    assert result.returncode == 0, result.stderr[-4000:]
    assert f"{LOGITS}: stale logits cache" in result.stderr and "dataset: expected 'imagenet_r'" in result.stderr
    assert len(list((workdir / LOGITS).parent.glob("imagenet_r.parquet.rejected-*"))) == 1
    assert job_stats(result)["cache_logits"] == 1
    assert_outputs_equal_clean_run(workdir, clean_run)


def test_archive_with_flipped_bytes_is_rejected_then_restored_by_the_same_command(workdir, clean_run):
    archive = workdir / "data/archives/imagenet-r.tar"
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte changed, in place
    archive.write_bytes(bytes(data))
    failed = snakemake(workdir)
    assert failed.returncode != 0
    log = (workdir / "results/logs/extract_archive/imagenet-r.tar.log").read_text()
    assert "checksum mismatch for archive imagenet-r.tar" in log and "run the same command again" in log.lower()
    assert not archive.exists() and not (workdir / "data/extracted/imagenet-r.tar.complete").exists()
    result = snakemake(workdir)
    assert result.returncode == 0, result.stderr[-4000:]
    assert job_stats(result)["download_archive"] == 1 and job_stats(result)["cache_logits"] == 1
    assert_outputs_equal_clean_run(workdir, clean_run)


def test_deleted_manifest_and_extraction_marker_are_planned_again_by_the_same_command(workdir):
    (workdir / "data/manifests/imagenet_r.parquet").unlink()
    (workdir / "data/extracted/imagenet-r.tar.complete").unlink()
    planned = job_stats(snakemake(workdir, "--dry-run"))
    assert planned["extract_archive"] == 1 and planned["build_manifest"] == 1 and planned["cache_logits"] == 1


def test_switching_skip_corrupt_images_replans_nothing(workdir):
    (workdir / "config/recovery.yaml").write_text(
        yaml.safe_dump(
            {
                **SMALL,
                "downloads": {
                    **yaml.safe_load((workdir / "config/demo.yaml").read_text())["downloads"],
                    "skip_corrupt_images": True,
                },
            }
        )
    )
    result = snakemake(workdir, "--dry-run")
    assert result.returncode == 0 and "Nothing to be done" in result.stdout + result.stderr, result.stderr[-3000:]


def test_run_killed_during_a_logits_job_resumes_with_the_same_command(workdir, clean_run):
    (workdir / LOGITS).unlink()
    job_log = workdir / f"results/logs/cache_logits/{MODEL}.log"
    job_log.unlink()
    run = subprocess.Popen(
        [sys.executable, "-m", "snakemake", *rerun(workdir)],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        start_new_session=True,
    )
    try:
        while not job_log.exists() and run.poll() is None:  # the logits job has started
            time.sleep(0.2)
    finally:
        os.killpg(run.pid, signal.SIGKILL)  # the whole tree, as a lost login session or a node failure would
        run.wait()
    assert not (workdir / LOGITS).exists()
    result = snakemake(workdir)
    assert result.returncode == 0, result.stderr[-4000:]
    assert_outputs_equal_clean_run(workdir, clean_run)


def test_second_run_in_the_same_directory_is_refused_with_one_message_and_the_first_completes(
    workdir, clean_run, tmp_path
):
    (workdir / LOGITS).unlink()
    job_log = workdir / f"results/logs/cache_logits/{MODEL}.log"
    job_log.unlink()
    with open(tmp_path / "first.out", "w") as out, open(tmp_path / "first.err", "w") as err:
        first = subprocess.Popen(
            [sys.executable, "-m", "snakemake", *rerun(workdir)],
            cwd=workdir,
            stdout=out,
            stderr=err,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        try:
            while not job_log.exists() and first.poll() is None:  # the first run is in its logits job
                time.sleep(0.2)
            second = snakemake(workdir)
            first_alive = first.poll() is None
        finally:
            first.wait(timeout=600)
    assert first_alive  # the second run was started, and refused, while the first was working
    assert second.returncode != 0
    refusal = second.stdout + second.stderr
    assert refusal.count("another Snakemake run is working in") == 1 and f"(pid {first.pid} on" in refusal
    assert "This run was refused and changed nothing" in refusal and "incomplete" not in refusal.lower()
    assert first.returncode == 0, (tmp_path / "first.err").read_text()[-4000:]
    assert job_stats(subprocess.CompletedProcess([], 0, "", (tmp_path / "first.err").read_text()))["cache_logits"] == 1
    assert_outputs_equal_clean_run(workdir, clean_run)


def with_missing_weights(workdir: Path, model: str, models: list[str]) -> Path:
    """Point ``model``'s weights_file at a file that does not exist, in a copy of the demo registry used by the run."""
    registry = pd.read_csv(workdir / "config/demo/models.tsv", sep="\t", dtype=str, keep_default_na=False)
    missing = workdir / "weights/gone.safetensors"
    registry.loc[registry["model_id"] == model, "weights_file"] = str(missing)
    registry.to_csv(workdir / "config/recovery-models.tsv", sep="\t", index=False)
    (workdir / "config/recovery.yaml").write_text(
        yaml.safe_dump({**SMALL, "models": models, "model_registry": "config/recovery-models.tsv"})
    )
    return missing


@pytest.mark.parametrize("extra", [(), ("--forcerun", "cache_logits")], ids=["plain", "forcerun"])
def test_missing_weights_stop_the_run_before_any_job_naming_model_and_file(workdir, extra):
    # With every output in place, --forcerun must not drop the model silently either (issue 15, item 7).
    missing = with_missing_weights(workdir, MODEL, [MODEL])
    before = (workdir / LOGITS).stat().st_mtime_ns
    result = snakemake(workdir, *extra)
    assert result.returncode != 0
    assert f"missing weights file(s): model '{MODEL}' expects {missing}" in result.stderr
    assert "--keep-going" in result.stderr and "rule cache_logits" not in result.stderr.split("Before any job")[-1]
    assert (workdir / LOGITS).stat().st_mtime_ns == before


def test_with_keep_going_missing_weights_of_one_model_do_not_stop_the_others(workdir, clean_run):
    other = "timm__test_convnext.demo"
    missing = with_missing_weights(workdir, other, [MODEL, other])
    (workdir / LOGITS).unlink()
    result = snakemake(workdir, "--keep-going")
    assert result.returncode != 0
    assert (workdir / LOGITS).exists() and (workdir / f"results/metrics/models/{MODEL}.parquet").stat().st_mtime_ns > (
        clean_run / f"results/metrics/models/{MODEL}.parquet"
    ).stat().st_mtime_ns
    np.testing.assert_array_equal(read_logits(workdir / LOGITS).logits, read_logits(clean_run / LOGITS).logits)
    # That model's branch fails at its first job, the fetch (an input of its cache job), naming the file.
    failed_log = (workdir / f"results/logs/fetch_model_weights/{other}.log").read_text()
    assert str(missing) in failed_log and "WeightsFetchError" in failed_log
    assert not (workdir / f"results/logs/cache_logits/{other}.log").exists()
