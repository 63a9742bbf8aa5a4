"""The cluster's faults (issue 20) on a toy DAG with the pipeline's rule names, run for real on the single-node test
cluster: one clean run (every job completes, one GPU job per model) is the reference each fault's run is compared with,
byte for byte: a logits job cancelled with scancel, killed on its node, requeued by the scheduler.

How the SLURM tests run (the test cluster, the test profile, SLURM's own records, why they are three files, skipped or
failed without a cluster): tests/slurm/slurm_support.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "slurm"))

import slurm_support as slurm  # noqa: E402

pytestmark = pytest.mark.slurm

node = pytest.fixture(scope="module", name="node")(slurm.require_cluster)
test_profile = pytest.fixture(scope="module", name="test_profile")(slurm.make_test_profile)
toy = pytest.fixture(name="toy")(slurm.toy_workdir)


#: What the toy DAG writes: every file of a run, compared byte for byte with a clean run.
TOY_OUTPUTS = ("manifests/*.txt", "logits/*/*", "metrics/*", "results/*")


def toy_outputs(workdir: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(workdir)): p.read_bytes() for pattern in TOY_OUTPUTS for p in sorted(workdir.glob(pattern))
    }


@pytest.fixture(scope="module")
def clean_run(test_profile: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One clean run of the toy DAG under SLURM: its folder and its log."""
    workdir = slurm.toy_workdir(tmp_path_factory.mktemp("clean_toy"))
    status, log = slurm.run_snakemake(workdir, test_profile)
    assert status == 0, log[-4000:]
    return workdir, log


@pytest.fixture(scope="module")
def clean_toy(clean_run: tuple[Path, str]) -> dict[str, bytes]:
    """The outputs of the clean run, which each fault's run must reproduce byte for byte."""
    return toy_outputs(clean_run[0])


def test_toy_dag_runs_under_slurm_one_gpu_job_per_model_and_every_job_completes(clean_run):
    toy, log = clean_run
    jobs = slurm.submitted_jobs(log)
    records = slurm.records_of(jobs)
    assert all(r["JobState"] == "COMPLETED" and r["ExitCode"] == "0:0" for r in records.values()), records
    kinds = sorted(jobs.values())
    # 3 manifests; the 6 cache jobs as one group job per model; the 2 metric jobs as one group job.
    assert kinds.count("rule_build_manifest") == 3
    cache_jobs = [job_id for job_id, kind in jobs.items() if kind.startswith("group_cache_")]
    # Group jobs are named group_<group id>_<rules>: one for m1, one for m2.
    assert sorted(jobs[j].split("_")[2] for j in cache_jobs) == ["m1", "m2"]
    assert [kind for kind in kinds if "metrics" in kind] == [
        "group_metrics_compute_model_metrics",
        "rule_aggregate_metrics",
    ]
    for job_id in cache_jobs:
        assert records[job_id]["Partition"] == "gpu"
        shown = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
        assert "gres:gpu:1" in shown or "gres/gpu=1" in shown, shown
    assert (toy / "results/summary.txt").read_text().count("second half") == 6


def assert_like_a_clean_run(toy: Path, clean: dict[str, bytes]) -> None:
    """Every output as in the clean run, no output left partial (no temporary file beside the logits) and no job
    left marked incomplete."""
    assert toy_outputs(toy) == clean
    assert sorted(p.name for p in toy.glob("logits/*/*") if not p.name.endswith(".txt")) == []
    incomplete = toy / ".snakemake/incomplete"
    assert not incomplete.exists() or not any(incomplete.iterdir())


def test_scancel_of_a_running_logits_job_the_same_command_completes_like_a_clean_run(toy, test_profile, clean_toy):
    run, job_id = slurm.start_with_slow_cache_job(toy, test_profile, 20)
    subprocess.run(["scancel", job_id], check=True)
    log = slurm.finish(run)
    assert slurm.records_of({job_id: "cancelled"})[job_id]["JobState"] == "CANCELLED"
    # The profile's `retries` resubmits the cancelled group job within the same command.
    assert run.returncode == 0, log[-4000:]
    assert "Error in group cache_m2" in log  # the cancelled group job is reported, then resubmitted
    states = [r["JobState"] for r in slurm.records_of(slurm.submitted_jobs(log)).values()]
    assert states.count("CANCELLED") == 1 and states.count("COMPLETED") == len(states) - 1
    assert_like_a_clean_run(toy, clean_toy)


def test_logits_job_killed_on_the_node_is_resubmitted_and_the_run_completes_like_a_clean_run(
    toy, test_profile, clean_toy
):
    run, job_id = slurm.start_with_slow_cache_job(toy, test_profile, 20)
    # What the scheduler does to a job on a failing node: every process of the job killed at once.
    listed = subprocess.run(["scontrol", "listpids", job_id], capture_output=True, text=True, check=True).stdout
    job_pids = [int(line.split()[0]) for line in listed.splitlines()[1:] if line.split() and line.split()[0].isdigit()]
    assert job_pids, listed
    for pid in job_pids:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    log = slurm.finish(run)
    assert run.returncode == 0, log[-4000:]
    records = slurm.records_of(slurm.submitted_jobs(log))
    assert records[job_id]["JobState"] == "FAILED", records[job_id]
    assert sum(r["JobState"] == "COMPLETED" for r in records.values()) == len(records) - 1
    assert_like_a_clean_run(toy, clean_toy)


def test_logits_job_requeued_by_the_scheduler_runs_again_under_its_id_and_the_run_completes(
    toy, test_profile, clean_toy
):
    run, job_id = slurm.start_with_slow_cache_job(toy, test_profile, 20)
    subprocess.run(["scontrol", "requeue", job_id], check=True)  # as SLURM does for a preempted job or a lost node
    log = slurm.finish(run)
    assert run.returncode == 0, log[-4000:]
    assert job_id in slurm.submitted_jobs(log)
    assert log.count(f"SLURM jobid {job_id} ") == 1  # one submission: SLURM ran it again, Snakemake waited
    assert_like_a_clean_run(toy, clean_toy)
