"""The pipeline's SLURM path on a toy DAG with the pipeline's rule names, run for real on the single-node test
cluster (issues 7 and 20): a cache job cancelled half way and the rerun, the profile's retries, a job over its runtime.

How the SLURM tests run (the test cluster, the test profile, SLURM's own records, why they are three files, skipped or
failed without a cluster): tests/slurm/slurm_support.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "slurm"))

from slurm_support import (  # noqa: E402
    finish,
    make_test_profile,
    records_of,
    require_cluster,
    run_snakemake,
    start_with_slow_cache_job,
    submitted_jobs,
    toy_workdir,
)

pytestmark = pytest.mark.slurm

node = pytest.fixture(scope="module", name="node")(require_cluster)
test_profile = pytest.fixture(scope="module", name="test_profile")(make_test_profile)
toy = pytest.fixture(name="toy")(toy_workdir)


def test_cache_job_cancelled_half_way_leaves_no_corrupt_output_and_rerun_computes_only_the_rest(
    toy, test_profile, node
):
    # First run: no automatic retry, so that the cancellation stands and the rerun is ours.
    first, job_id = start_with_slow_cache_job(toy, test_profile, 600, "--retries", "0")
    subprocess.run(["scancel", job_id], check=True)
    first_log = finish(first, timeout=180)
    assert first.returncode != 0, first_log[-3000:]

    # No cached file at its final path is partial; the interrupted one does not exist.
    assert not (toy / "logits/m2/d2.txt").exists()
    done = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in toy.glob("logits/*/*.txt")}
    for path in done:
        assert path.read_text().endswith("second half\n"), path
    assert records_of({job_id: "cancelled"})[job_id]["JobState"] == "CANCELLED"

    status, log = run_snakemake(toy, test_profile)
    assert status == 0, log[-4000:]
    for path, stamp in done.items():  # nothing finished before the cancel was recomputed
        assert (path.stat().st_ino, path.stat().st_mtime_ns) == stamp, path
    # Only the cache jobs without a finished file ran again (Snakemake prints one "output:" per job).
    assert log.count("output: logits/") == 6 - len(done), log[-4000:]
    assert (toy / "logits/m2/d2.txt").read_text() == "m2/d2 first half\nm2/d2 second half\n"
    assert all(r["JobState"] == "COMPLETED" for r in records_of(submitted_jobs(log)).values())


def test_failing_job_is_resubmitted_as_many_times_as_the_profile_retries(toy, test_profile, node):
    retries = yaml.safe_load((test_profile / "config.yaml").read_text())["retries"]
    status, log = run_snakemake(toy, test_profile, "faults/fails_once.txt", "faults/always_fails.txt")
    assert status != 0  # always_fails never succeeds

    jobs = submitted_jobs(log)
    records = records_of(jobs)
    states = {
        kind: [records[j]["JobState"] for j in sorted(jobs, key=int) if jobs[j] == kind] for kind in set(jobs.values())
    }
    assert states["rule_fails_once"] == ["FAILED", "COMPLETED"]
    assert states["rule_always_fails"] == ["FAILED"] * (retries + 1)
    # The job's exit status is that of Snakemake inside it (1), which failed because the rule did.
    assert all(records[j]["ExitCode"] != "0:0" for j in jobs if jobs[j] == "rule_always_fails")
    assert (toy / "faults/fails_once.txt").read_text() == "attempt 2\n"


def test_job_over_its_runtime_is_named_with_the_resource_to_raise(toy, test_profile):
    status, log = run_snakemake(toy, test_profile, "faults/over_runtime.txt", "--retries", "0", timeout=400)
    assert status != 0
    [job_id] = submitted_jobs(log)
    assert records_of({job_id: "over_runtime"})[job_id]["JobState"] == "TIMEOUT"
    assert (
        f"SLURM-job '{job_id}' failed, SLURM status is: 'TIMEOUT'" in log
    )  # Snakemake names the rule, not the resource
    assert (
        f"clip_robustness: rule over_runtime: SLURM job {job_id} ran over its time limit (TIMEOUT): raise its "
        "runtime (minutes), in the rule's `resources: runtime` or the profile's "
        "`set-resources: over_runtime: runtime:`"
    ) in log, log[-3000:]
    assert not (toy / "faults/over_runtime.txt").exists()
