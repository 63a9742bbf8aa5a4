"""The pipeline's SLURM path, run for real on the single-node test cluster (issue 7).

Start the cluster first: ``bash tests/slurm/cluster.sh up`` (and ``down`` afterwards). Every test runs
Snakemake with a profile derived from the shipped ``profiles/slurm/config.yaml`` (site settings
replaced, requests capped to the node: ``tests/slurm/slurm_support.py``) and checks what happened
from SLURM's own records: the controller's job-completion file (one line per finished job, with
its state and exit code) and ``scontrol show job``.

Without ``sinfo`` on PATH these tests are skipped, unless ``CLIP_ROBUSTNESS_REQUIRE_SLURM`` is set
(CI sets it): then a missing cluster fails them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_PROFILE = ROOT / "profiles" / "slurm"
sys.path.insert(0, str(ROOT / "tests" / "slurm"))

from slurm_support import (  # noqa: E402
    NodeCapacity,
    derive_test_profile,
    job_completion_log,
    node_capacity,
    read_job_completions,
    site_setting_keys,
    submitted_jobs,
)

pytestmark = pytest.mark.slurm

CLUSTER_HINT = "start it with `bash tests/slurm/cluster.sh up` (as root), stop it with `bash tests/slurm/cluster.sh down`"


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def node() -> NodeCapacity:
    """The running test cluster's node; skips (no SLURM here) or fails (SLURM required) otherwise."""
    if shutil.which("sinfo") is None:
        if os.environ.get("CLIP_ROBUSTNESS_REQUIRE_SLURM"):
            pytest.fail(f"CLIP_ROBUSTNESS_REQUIRE_SLURM is set but `sinfo` is not on PATH: {CLUSTER_HINT}")
        pytest.skip("SLURM is not installed (`sinfo` not on PATH) and CLIP_ROBUSTNESS_REQUIRE_SLURM is unset")
    state = subprocess.run(["sinfo", "-h", "-n", "localhost", "-o", "%T"], capture_output=True, text=True)
    if state.returncode != 0 or state.stdout.split() != ["idle"] * len(state.stdout.split()) or not state.stdout.strip():
        pytest.fail(
            f"no idle single-node test cluster (sinfo: {state.stdout.strip() or state.stderr.strip()!r}): {CLUSTER_HINT}"
        )
    capacity = node_capacity("localhost")
    job_completion_log()  # fails with a hint when the cluster keeps no job-completion records
    return capacity


@pytest.fixture(scope="module")
def test_profile(node: NodeCapacity, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test profile folder, derived from the shipped profile."""
    dest = tmp_path_factory.mktemp("profile")
    derive_test_profile(SHIPPED_PROFILE, dest, node)
    return dest


def run_snakemake(workdir: Path, profile: Path, *args: str, timeout: float = 240) -> tuple[int, str]:
    """Run Snakemake in ``workdir`` with ``profile``; returns (exit status, combined log)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONHASHSEED="0")
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--profile", str(profile), "--directory", str(workdir), *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return proc.returncode, proc.stdout + proc.stderr


def run_verbatim(workdir: Path, cores: int, *args: str, timeout: float = 900) -> tuple[int, str]:
    """The users' command, ``snakemake --cores N --profile slurm``, from ``workdir`` (a checkout), as written:
    Snakemake finds the profile by its name, through the checkout's ``slurm`` link (docs/cluster.md)."""
    snakemake = Path(sys.executable).with_name("snakemake")
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONHASHSEED="0")
    proc = subprocess.run(
        [str(snakemake), "--cores", str(cores), "--profile", "slurm", *args],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout,
    )
    return proc.returncode, proc.stdout + proc.stderr


def records_of(job_ids: dict[str, str]) -> dict[str, dict[str, str]]:
    """Job-completion records (by SLURM job id) of the given jobs; waits briefly for the last ones."""
    path = job_completion_log()
    for _ in range(20):
        records = {r["JobId"]: r for r in read_job_completions(path) if r["JobId"] in job_ids}
        if len(records) == len(job_ids):
            return records
        time.sleep(0.5)
    missing = sorted(set(job_ids) - set(records))
    raise AssertionError(f"SLURM wrote no job-completion record for jobs {missing} in {path}")


# ------------------------------------------------------------------------------------------ toy workflow

# A three-level DAG with the pipeline's rule names, so the shipped profile's per-rule resources and
# groups apply: build_manifest (CPU) -> cache_logits (GPU, grouped per model, atomic writes) ->
# compute_model_metrics (group "metrics") -> aggregate_metrics; plus two rules that fail on purpose.
TOY_SNAKEFILE = r'''
MODELS = ["m1", "m2"]
DATASETS = ["d1", "d2", "d3"]


def slow_seconds(wildcards):
    """Seconds a cache job sleeps half way: config slow = "<model>/<dataset>:<seconds>"."""
    target, _, seconds = str(config.get("slow", "")).partition(":")
    return seconds if target == f"{wildcards.model}/{wildcards.dataset}" else 0


def model_logits(wildcards):
    return expand("logits/{model}/{dataset}.txt", model=wildcards.model, dataset=DATASETS)


def attempt_number(wildcards, attempt):
    return attempt


rule all:
    input:
        "results/summary.txt",
    localrule: True


rule build_manifest:
    output:
        "manifests/{dataset}.txt",
    log:
        "logs/build_manifest/{dataset}.log",
    shell:
        "echo {wildcards.dataset} > {output}"


rule cache_logits:
    input:
        "manifests/{dataset}.txt",
    output:
        "logits/{model}/{dataset}.txt",
    params:
        slow=slow_seconds,
    log:
        "logs/cache_logits/{model}/{dataset}.log",
    shell:
        # Written as the real cache is (clip_robustness.workflow.io.atomic_path): leftovers of an interrupted write
        # removed, temp file in the same folder, then rename.
        "echo started job=$SLURM_JOB_ID gpus=$CUDA_VISIBLE_DEVICES > {log}; rm -f {output}.tmp*; "
        "printf '%s/%s first half\n' {wildcards.model} {wildcards.dataset} > {output}.tmp$$; "
        "sleep {params.slow}; "
        "printf '%s/%s second half\n' {wildcards.model} {wildcards.dataset} >> {output}.tmp$$; "
        "mv {output}.tmp$$ {output}; echo done >> {log}"


rule compute_model_metrics:
    input:
        model_logits,
    output:
        "metrics/{model}.txt",
    log:
        "logs/compute_model_metrics/{model}.log",
    group:
        "metrics"
    shell:
        "cat {input} > {output}"


rule aggregate_metrics:
    input:
        expand("metrics/{model}.txt", model=MODELS),
    output:
        "results/summary.txt",
    log:
        "logs/aggregate_metrics.log",
    shell:
        "cat {input} > {output}"


rule fails_once:
    output:
        "faults/fails_once.txt",
    log:
        "logs/fails_once.log",
    resources:
        attempt=attempt_number,
    shell:
        "test {resources.attempt} -ge 2 && echo attempt {resources.attempt} > {output}"


rule always_fails:
    output:
        "faults/always_fails.txt",
    log:
        "logs/always_fails.log",
    shell:
        "exit 3"


rule over_runtime:
    output:
        "faults/over_runtime.txt",
    log:
        "logs/over_runtime.log",
    resources:
        runtime=1,
    shell:
        "sleep 600; echo done > {output}"


onerror:
    from clip_robustness.workflow.slurm_hints import print_limit_hints

    print_limit_hints(log)
'''


@pytest.fixture
def toy(tmp_path: Path) -> Path:
    (tmp_path / "Snakefile").write_text(TOY_SNAKEFILE)
    return tmp_path


# ------------------------------------------------------------------------------------------ profile


def test_every_site_setting_of_the_shipped_profile_is_replaced_in_the_test_profile(node, tmp_path):
    shipped_text = (SHIPPED_PROFILE / "config.yaml").read_text()
    shipped = yaml.safe_load(shipped_text)
    derived = yaml.safe_load(derive_test_profile(SHIPPED_PROFILE, tmp_path, node).read_text())

    assert {"slurm_partition", "slurm-status-command"} <= set(site_setting_keys(shipped_text))
    assert derived["slurm-status-command"] == "squeue"
    partitions = {derived["default-resources"]["slurm_partition"]} | {
        res["slurm_partition"] for res in derived["set-resources"].values() if "slurm_partition" in res
    }
    cluster_partitions = set(subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True).stdout.split())
    assert partitions <= cluster_partitions
    # What the issue asks the shipped profile to do survives unchanged into the test profile.
    for key in ("executor", "retries", "latency-wait", "rerun-incomplete", "groups", "group-components", "jobs"):
        assert derived[key] == shipped[key], key
    assert shipped["set-resources"]["cache_logits"]["gpu"] >= 1
    assert derived["set-resources"]["cache_logits"]["gpu"] >= 1


def test_test_profile_never_asks_more_than_the_node_has(node, tmp_path):
    derived = yaml.safe_load(derive_test_profile(SHIPPED_PROFILE, tmp_path, node).read_text())
    for resources in [derived["default-resources"], *derived["set-resources"].values()]:
        assert resources.get("mem_mb", 0) <= node.mem_mb
        assert resources.get("cpus_per_gpu", 0) <= node.cpus
        assert resources.get("gpu", 0) <= node.gpus
    assert all(n <= node.cpus for n in derived["set-threads"].values())


# ------------------------------------------------------------------------------------------ toy runs


def test_toy_dag_runs_under_slurm_one_gpu_job_per_model_and_every_job_completes(toy, test_profile, node):
    status, log = run_snakemake(toy, test_profile)
    assert status == 0, log[-4000:]

    jobs = submitted_jobs(log)
    records = records_of(jobs)
    assert all(r["JobState"] == "COMPLETED" and r["ExitCode"] == "0:0" for r in records.values()), records
    kinds = sorted(jobs.values())
    # 3 manifests; the 6 cache jobs as one group job per model; the 2 metric jobs as one group job.
    assert kinds.count("rule_build_manifest") == 3
    cache_jobs = [job_id for job_id, kind in jobs.items() if kind.startswith("group_cache_")]
    # Group jobs are named group_<group id>_<rules>: one for m1, one for m2.
    assert sorted(jobs[j].split("_")[2] for j in cache_jobs) == ["m1", "m2"]
    assert [kind for kind in kinds if "metrics" in kind] == ["group_metrics_compute_model_metrics", "rule_aggregate_metrics"]
    for job_id in cache_jobs:
        assert records[job_id]["Partition"] == "gpu"
        shown = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
        assert "gres:gpu:1" in shown or "gres/gpu=1" in shown, shown
    assert (toy / "results/summary.txt").read_text().count("second half") == 6


def test_cache_job_cancelled_half_way_leaves_no_corrupt_output_and_rerun_computes_only_the_rest(toy, test_profile, node):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    args = [sys.executable, "-m", "snakemake", "--profile", str(test_profile), "--directory", str(toy)]
    slow = ["--config", "slow=m2/d2:600"]
    # First run: no automatic retry, so that the cancellation stands and the rerun is ours.
    first = subprocess.Popen([*args, *slow, "--retries", "0"], cwd=toy, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    slow_log = toy / "logs/cache_logits/m2/d2.log"
    deadline = time.monotonic() + 180
    while not (slow_log.exists() and "started" in slow_log.read_text()):
        assert first.poll() is None and time.monotonic() < deadline, "the slow cache job never started"
        time.sleep(0.5)
    job_id = slow_log.read_text().split("job=")[1].split()[0]
    subprocess.run(["scancel", job_id], check=True)
    first_log, _ = first.communicate(timeout=180)
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
    states = {kind: [records[j]["JobState"] for j in sorted(jobs, key=int) if jobs[j] == kind] for kind in set(jobs.values())}
    assert states["rule_fails_once"] == ["FAILED", "COMPLETED"]
    assert states["rule_always_fails"] == ["FAILED"] * (retries + 1)
    # The job's exit status is that of Snakemake inside it (1), which failed because the rule did.
    assert all(records[j]["ExitCode"] != "0:0" for j in jobs if jobs[j] == "rule_always_fails")
    assert (toy / "faults/fails_once.txt").read_text() == "attempt 2\n"


# ------------------------------------------------------------------------------------------ the demo

# The demo through SLURM, cut to what exercises every stage and every kind of SLURM job at the lowest
# cost on the 2-core test node: one zero-shot CLIP model (zero-shot head job) and one timm classifier,
# ImageNet val (ID), ImageNet-R (a shift with a 200-class mask) and DTD (OOD).
DEMO_UNDER_SLURM = {
    "models": ["openclip__clip_tiny_demo__demo", "timm__test_convnext.demo"],
    "datasets": {
        "in_distribution": "imagenet_val",
        "test_conditions": ["imagenet_r"],
        "imagenet_c": {"corruptions": [], "severities": []},
        "ood": ["textures"],
        "cue_conflict": [],
    },
}


def test_demo_runs_under_slurm_and_every_job_completes(node, demo_upstream, tmp_path):
    from conftest import make_demo_workdir

    checkout = tmp_path / "checkout"
    checkout.mkdir()
    workdir = make_demo_workdir(checkout, demo_upstream)
    config = yaml.safe_load((workdir / "config/demo.yaml").read_text())
    config.update(DEMO_UNDER_SLURM)
    (workdir / "config/demo-slurm.yaml").write_text(yaml.safe_dump(config))
    # The checkout's profile, with the site settings made for this cluster (the one-time site setup), found by
    # name through the repository's own `slurm` link.
    derive_test_profile(SHIPPED_PROFILE, workdir / "profiles" / "slurm", node)
    (workdir / "slurm").symlink_to(os.readlink(ROOT / "slurm"), target_is_directory=True)

    # `--cores 8` as users write it, on a node with at least 8 CPUs; a smaller test node gets its own count, since
    # Snakemake asks SLURM for up to --cores CPUs for a group job, and a job asking more than the node has never runs.
    status, log = run_verbatim(workdir, min(8, node.cpus), "--configfile", "config/demo-slurm.yaml")
    assert status == 0, log[-6000:]

    jobs = submitted_jobs(log)
    records = records_of(jobs)
    assert records and all(r["JobState"] == "COMPLETED" and r["ExitCode"] == "0:0" for r in records.values()), records
    kinds = set(jobs.values())
    # Every stage ran as SLURM jobs: manifests, the zero-shot head, one cache group job per model (in the
    # GPU partition), the metrics group, the aggregate and the figures group.
    assert {"rule_build_manifest", "rule_build_zero_shot_head", "rule_aggregate_metrics"} <= kinds, kinds
    cache_jobs = [j for j, kind in jobs.items() if kind.startswith("group_cache_")]
    assert len(cache_jobs) == 2 and all(records[j]["Partition"] == "gpu" for j in cache_jobs)
    assert any(kind.startswith("group_metrics") for kind in kinds) and any(kind.startswith("group_figures") for kind in kinds)
    # Downloads, extraction and weights stayed on the submitting host (localrules): no SLURM job for them.
    assert not any(rule in kind for kind in kinds for rule in ("download_archive", "extract_archive", "fetch_model_weights"))
    assert sorted(p.name for p in (workdir / "data/weights").glob("*.json")) == sorted(
        f"{model}.json" for model in DEMO_UNDER_SLURM["models"])

    metrics = pd.read_parquet(workdir / "results/metrics/metrics.parquet")
    assert set(metrics["model"]) == set(DEMO_UNDER_SLURM["models"])
    assert {"imagenet_val", "imagenet_r", "textures"} <= set(metrics["dataset"])
    assert len(list((workdir / "results/figures").glob("*.png"))) >= 5


# ------------------------------------------------------------------------------------------ the cluster's faults (issue 20)

#: What the toy DAG writes: every file of a run, compared byte for byte with a clean run.
TOY_OUTPUTS = ("manifests/*.txt", "logits/*/*", "metrics/*", "results/*")


def toy_outputs(workdir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(workdir)): p.read_bytes() for pattern in TOY_OUTPUTS for p in sorted(workdir.glob(pattern))}


@pytest.fixture(scope="module")
def clean_toy(test_profile: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The outputs of one clean run of the toy DAG under SLURM."""
    workdir = tmp_path_factory.mktemp("clean_toy")
    (workdir / "Snakefile").write_text(TOY_SNAKEFILE)
    status, log = run_snakemake(workdir, test_profile)
    assert status == 0, log[-4000:]
    return toy_outputs(workdir)


def start_with_slow_cache_job(toy: Path, profile: Path, seconds: int) -> tuple[subprocess.Popen, str]:
    """Start the profile's command on the toy DAG with m2/d2's cache job sleeping half way; returns the run and the
    SLURM job id of that job once it runs."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONHASHSEED="0")
    run = subprocess.Popen([sys.executable, "-m", "snakemake", "--profile", str(profile), "--directory", str(toy),
                            "--config", f"slow=m2/d2:{seconds}"], cwd=toy, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    slow_log = toy / "logs/cache_logits/m2/d2.log"
    deadline = time.monotonic() + 180
    while not (slow_log.exists() and "started" in slow_log.read_text()):
        assert run.poll() is None and time.monotonic() < deadline, "the slow cache job never started"
        time.sleep(0.5)
    return run, slow_log.read_text().split("job=")[1].split()[0]


def assert_like_a_clean_run(toy: Path, clean: dict[str, bytes]) -> None:
    """Every output as in the clean run, no output left partial (no temporary file beside the logits) and no job
    left marked incomplete."""
    assert toy_outputs(toy) == clean
    assert sorted(p.name for p in toy.glob("logits/*/*") if not p.name.endswith(".txt")) == []
    incomplete = toy / ".snakemake/incomplete"
    assert not incomplete.exists() or not any(incomplete.iterdir())


def test_scancel_of_a_running_logits_job_the_same_command_completes_like_a_clean_run(toy, test_profile, clean_toy):
    run, job_id = start_with_slow_cache_job(toy, test_profile, 20)
    subprocess.run(["scancel", job_id], check=True)
    log, _ = run.communicate(timeout=300)
    assert records_of({job_id: "cancelled"})[job_id]["JobState"] == "CANCELLED"
    # The profile's `retries` resubmits the cancelled group job within the same command.
    assert run.returncode == 0, log[-4000:]
    assert "Error in group cache_m2" in log  # the cancelled group job is reported, then resubmitted
    states = [r["JobState"] for r in records_of(submitted_jobs(log)).values()]
    assert states.count("CANCELLED") == 1 and states.count("COMPLETED") == len(states) - 1
    assert_like_a_clean_run(toy, clean_toy)


def test_job_over_its_runtime_is_named_with_the_resource_to_raise(toy, test_profile):
    status, log = run_snakemake(toy, test_profile, "faults/over_runtime.txt", "--retries", "0", timeout=400)
    assert status != 0
    [job_id] = submitted_jobs(log)
    assert records_of({job_id: "over_runtime"})[job_id]["JobState"] == "TIMEOUT"
    assert f"SLURM-job '{job_id}' failed, SLURM status is: 'TIMEOUT'" in log  # Snakemake names the rule, not the resource
    assert (f"clip_robustness: rule over_runtime: SLURM job {job_id} ran over its time limit (TIMEOUT): raise its "
            "runtime (minutes), in the rule's `resources: runtime` or the profile's "
            "`set-resources: over_runtime: runtime:`") in log, log[-3000:]
    assert not (toy / "faults/over_runtime.txt").exists()


def test_logits_job_killed_on_the_node_is_resubmitted_and_the_run_completes_like_a_clean_run(toy, test_profile,
                                                                                            clean_toy):
    run, job_id = start_with_slow_cache_job(toy, test_profile, 20)
    # What the scheduler does to a job on a failing node: every process of the job killed at once.
    listed = subprocess.run(["scontrol", "listpids", job_id], capture_output=True, text=True, check=True).stdout
    job_pids = [int(line.split()[0]) for line in listed.splitlines()[1:] if line.split() and line.split()[0].isdigit()]
    assert job_pids, listed
    for pid in job_pids:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    log, _ = run.communicate(timeout=300)
    assert run.returncode == 0, log[-4000:]
    records = records_of(submitted_jobs(log))
    assert records[job_id]["JobState"] == "FAILED", records[job_id]
    assert sum(r["JobState"] == "COMPLETED" for r in records.values()) == len(records) - 1
    assert_like_a_clean_run(toy, clean_toy)


def test_logits_job_requeued_by_the_scheduler_runs_again_under_its_id_and_the_run_completes(toy, test_profile,
                                                                                          clean_toy):
    run, job_id = start_with_slow_cache_job(toy, test_profile, 20)
    subprocess.run(["scontrol", "requeue", job_id], check=True)  # as SLURM does for a preempted job or a lost node
    log, _ = run.communicate(timeout=300)
    assert run.returncode == 0, log[-4000:]
    assert job_id in submitted_jobs(log)
    assert log.count(f"SLURM jobid {job_id} ") == 1  # one submission: SLURM ran it again, Snakemake waited
    assert_like_a_clean_run(toy, clean_toy)
