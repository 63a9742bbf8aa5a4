"""Support for the SLURM tests: the test profile derived from the shipped one, SLURM's own records.

The SLURM tests (tests/test_slurm_demo.py, tests/test_slurm_toy.py, tests/test_slurm_faults.py: three files by
subject; ``make test`` runs them one after the other on one xdist worker, tests/scheduling.py) run the pipeline's SLURM
path for real on the single-node test cluster. Start it first: ``bash tests/slurm/cluster.sh up`` (and ``down`` afterwards).
Every test runs Snakemake with a profile derived from the shipped ``profiles/slurm/config.yaml`` (site settings
replaced, requests capped to the node) and checks what happened from SLURM's own records: the controller's
job-completion file (one line per finished job, with its state and exit code) and ``scontrol show job``. Without
``sinfo`` on PATH they are skipped, unless ``CLIP_ROBUSTNESS_REQUIRE_SLURM`` is set (CI sets it): then a missing
cluster fails them.

- :func:`derive_test_profile` writes ``profiles/slurm/config.yaml`` again with every site setting
  (lines marked ``EDIT: site setting``) replaced by the single-node test cluster's, and requests
  capped to the node (a job asking more than the node has is never scheduled).
- :func:`read_job_completions` parses the controller's job-completion records
  (``JobCompType=jobcomp/filetxt``): one line per finished job, written by slurmctld itself.
- :func:`submitted_jobs` maps the SLURM job ids in a Snakemake log to the rule or group they ran.
- What the SLURM test files (tests/test_slurm_*.py) share: the running cluster's node (:func:`require_cluster`), the test
  profile (:func:`make_test_profile`), Snakemake run with it (:func:`run_snakemake`), SLURM's records of its jobs
  (:func:`records_of`), and the toy DAG (:data:`TOY_SNAKEFILE`, :func:`toy_workdir`,
  :func:`start_with_slow_cache_job`). Each test file makes its fixtures of them in two lines, e.g.
  ``node = pytest.fixture(scope="module", name="node")(require_cluster)``.

Run as a script to write the test profile for a manual run:
``python tests/slurm/slurm_support.py profiles/slurm /tmp/slurm-ci`` then
``snakemake --profile /tmp/slurm-ci --configfile config/demo.yaml``.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SITE_MARK = "EDIT: site setting"
CLUSTER_HINT = (
    "start it with `bash tests/slurm/cluster.sh up` (as root), stop it with `bash tests/slurm/cluster.sh down`"
)

#: Keys whose shipped values are site settings, and what the test profile does with them.
#: ``slurm_partition``: mapped to the test cluster's partition of the same role; ``slurm_account`` and
#: ``gpu_model``: dropped (the test cluster has no accounts, its GPUs no type);
#: ``slurm-status-command``: ``squeue`` (no accounting database on the test cluster).
SITE_KEYS = ("slurm_partition", "slurm_account", "gpu_model", "slurm-status-command")
#: The shipped SLURM profile the test profile is derived from.
SHIPPED_PROFILE = Path(__file__).resolve().parents[2] / "profiles" / "slurm"


@dataclass(frozen=True)
class NodeCapacity:
    """What one node of the test cluster offers: ``cpus`` cores, ``mem_mb`` MB of memory (SLURM's
    RealMemory), ``gpus`` GPUs (GRES count), and the partitions by role (``cpu`` / ``gpu``)."""

    name: str
    cpus: int
    mem_mb: int
    gpus: int
    cpu_partition: str = "cpu"
    gpu_partition: str = "gpu"


def scontrol_fields(text: str) -> dict[str, str]:
    """``Key=Value`` pairs of one ``scontrol show ... -o`` or job-completion line (values have no spaces)."""
    return dict(re.findall(r"(\S+?)=(\S*)", text))


def node_capacity(node: str = "localhost") -> NodeCapacity:
    """Capacity of ``node`` as the running controller reports it (``scontrol show node -o``)."""
    out = subprocess.run(["scontrol", "show", "node", "-o", node], check=True, capture_output=True, text=True).stdout
    fields = scontrol_fields(out)
    gres = re.search(r"gpu(?::[^:,(]+)?:(\d+)", fields.get("Gres", ""))
    return NodeCapacity(
        name=fields["NodeName"],
        cpus=int(fields["CPUTot"]),
        mem_mb=int(fields["RealMemory"]),
        gpus=int(gres.group(1)) if gres else 0,
    )


def job_completion_log() -> Path:
    """The file slurmctld writes job-completion records to (``JobCompLoc`` of the running controller)."""
    out = subprocess.run(["scontrol", "show", "config"], check=True, capture_output=True, text=True).stdout
    config = dict(re.findall(r"^(\w+)\s*=\s*(.*?)\s*$", out, flags=re.M))
    if config.get("JobCompType") != "jobcomp/filetxt":
        raise RuntimeError(
            f"the cluster writes no job-completion file (JobCompType={config.get('JobCompType')!r}); "
            "start the test cluster with `bash tests/slurm/cluster.sh up`"
        )
    return Path(config["JobCompLoc"])


def read_job_completions(path: Path) -> list[dict[str, str]]:
    """Every job-completion record in ``path``, oldest first; keys as SLURM writes them
    (``JobId``, ``Name``, ``JobState``, ``ExitCode`` ``"<code>:<signal>"``, ``Partition``, ...)."""
    return [scontrol_fields(line) for line in Path(path).read_text().splitlines() if line.startswith("JobId=")]


_SUBMITTED = re.compile(r"has been submitted with SLURM jobid (\d+) \(log: (\S+?)\)\.?$", re.M)


def submitted_jobs(snakemake_log: str, slurm_logdir: str = ".snakemake/slurm_logs") -> dict[str, str]:
    """SLURM job id -> ``rule_<name>`` or ``group_<name>`` for every submission in a Snakemake log.

    The executor names each job's SLURM log ``<slurm_logdir>/<rule_or_group>/<wildcards>/<id>.log``.
    """
    jobs = {}
    for job_id, log_path in _SUBMITTED.findall(snakemake_log):
        parts = Path(log_path).parts
        marker = Path(slurm_logdir).parts[-1]
        jobs[job_id] = parts[parts.index(marker) + 1] if marker in parts else parts[-2]
    return jobs


def site_setting_keys(profile_text: str) -> list[str]:
    """The keys of the lines marked ``# EDIT: site setting`` (commented-out lines included)."""
    keys = []
    for line in profile_text.splitlines():
        if re.search(r"#\s*" + re.escape(SITE_MARK), line):
            match = re.match(r"\s*#?\s*([\w-]+)\s*:", line)
            if match is None:
                raise ValueError(f"a line marked {SITE_MARK!r} holds no key: {line!r}")
            keys.append(match.group(1))
    return keys


def derive_test_profile(shipped_dir: Path, dest_dir: Path, node: NodeCapacity) -> Path:
    """Write ``dest_dir/config.yaml``: the shipped profile with its site settings replaced by the
    test cluster's and every request capped to ``node``; returns the written file.

    Kept from the shipped profile: executor, retries, latency wait, rerun-incomplete, grouping,
    resource scopes, and every resource the node can satisfy. Changed: partitions (the shipped CPU
    and GPU partitions map to ``node.cpu_partition`` / ``node.gpu_partition``), account (none:
    ``slurm-no-account``), status command (``squeue``), ``mem_mb`` (at most half the node's, so two jobs fit side by side), threads, CPUs and GPUs
    (at most the node's), the first status check (after 2 s instead of 40 s) and successful jobs' SLURM logs
    (kept, for debugging).
    """
    text = (Path(shipped_dir) / "config.yaml").read_text()
    unknown = set(site_setting_keys(text)) - set(SITE_KEYS)
    if unknown:
        raise ValueError(
            f"{shipped_dir}/config.yaml marks {sorted(unknown)} as site settings, but the test profile "
            f"only knows how to replace {list(SITE_KEYS)}: extend tests/slurm/slurm_support.py"
        )
    profile: dict[str, Any] = yaml.safe_load(text)
    shipped_cpu = profile.get("default-resources", {}).get("slurm_partition")
    partitions = {shipped_cpu: node.cpu_partition}
    for resources in profile.get("set-resources", {}).values():
        if resources.get("gpu") and "slurm_partition" in resources:
            partitions[resources["slurm_partition"]] = node.gpu_partition

    def fit(resources: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for key, value in resources.items():
            if key in ("slurm_account", "gpu_model"):
                continue
            if key == "slurm_partition":
                value = partitions.get(value, node.cpu_partition)
            elif key == "mem_mb":
                # Half the node at most, so that two jobs can run side by side on the one test node.
                value = min(int(value), node.mem_mb // 2)
            elif key in ("cpus_per_gpu", "cpus_per_task"):
                value = min(int(value), node.cpus)
            elif key == "gpu":
                value = min(int(value), node.gpus)
            out[key] = value
        return out

    profile["default-resources"] = fit(profile.get("default-resources", {}))
    profile["set-resources"] = {rule: fit(res) for rule, res in profile.get("set-resources", {}).items()}
    profile["set-threads"] = {rule: min(int(n), node.cpus) for rule, n in profile.get("set-threads", {}).items()}
    profile["resources"] = fit(profile.get("resources", {}))
    if "mem_mb" in profile["resources"]:
        profile["resources"]["mem_mb"] = node.mem_mb // 2
    profile["cores"] = min(int(profile.get("cores", node.cpus)), node.cpus)
    profile["slurm-status-command"] = "squeue"
    profile["slurm-no-account"] = True
    profile["slurm-init-seconds-before-status-checks"] = 2
    profile["slurm-keep-successful-logs"] = True

    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / "config.yaml"
    header = (
        f"# Derived from {Path(shipped_dir) / 'config.yaml'} by tests/slurm/slurm_support.py for the\n"
        f"# single-node test cluster (node {node.name}: {node.cpus} CPUs, {node.mem_mb} MB, {node.gpus} GPUs).\n"
    )
    out.write_text(header + yaml.safe_dump(profile, sort_keys=False))
    return out


# ------------------------------------------------------------------------------------------ what the test files share


#: One SLURM test file at a time: the test cluster is one node, and every file's runs assume they have it to
#: themselves. ``make test`` already gives the files to one worker (tests/scheduling.py); the lock keeps any other
#: split of them across xdist workers (``--dist load``, a plain ``-n 2``) in turn.
CLUSTER_LOCK = Path(tempfile.gettempdir()) / "clip-robustness-slurm-tests.lock"
#: How long a test file waits for the node to be idle (jobs of the file before it finishing).
IDLE_WAIT_S = 120


def require_cluster() -> Iterator[NodeCapacity]:
    """The running test cluster's node, held by this test file alone until its last test is done (a generator
    fixture); skips the test (no SLURM here) or fails it (``CLIP_ROBUSTNESS_REQUIRE_SLURM`` set, as in CI, or SLURM
    installed but no test cluster idle within :data:`IDLE_WAIT_S` once the file before has let go of it)."""
    import pytest

    if shutil.which("sinfo") is None:
        if os.environ.get("CLIP_ROBUSTNESS_REQUIRE_SLURM"):
            pytest.fail(f"CLIP_ROBUSTNESS_REQUIRE_SLURM is set but `sinfo` is not on PATH: {CLUSTER_HINT}")
        pytest.skip("SLURM is not installed (`sinfo` not on PATH) and CLIP_ROBUSTNESS_REQUIRE_SLURM is unset")
    with open(CLUSTER_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # waits while another worker's SLURM test file holds the node
        try:
            deadline = time.monotonic() + IDLE_WAIT_S
            while True:
                state = subprocess.run(["sinfo", "-h", "-n", "localhost", "-o", "%T"], capture_output=True, text=True)
                states = state.stdout.split()
                if state.returncode == 0 and states and states == ["idle"] * len(states):
                    break
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"no idle single-node test cluster after {IDLE_WAIT_S} s (sinfo: "
                        f"{state.stdout.strip() or state.stderr.strip()!r}): {CLUSTER_HINT}"
                    )
                time.sleep(2)
            capacity = node_capacity("localhost")
            job_completion_log()  # fails with a hint when the cluster keeps no job-completion records
            yield capacity
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def make_test_profile(node: NodeCapacity, tmp_path_factory: Any) -> Path:
    """The test profile folder (in a fresh temporary folder of ``tmp_path_factory``), derived from the shipped
    profile."""
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


def records_of(job_ids: dict[str, str] | list[str]) -> dict[str, dict[str, str]]:
    """Job-completion records (by SLURM job id) of the given jobs; waits briefly for the last ones."""
    path = job_completion_log()
    for _ in range(20):
        records = {r["JobId"]: r for r in read_job_completions(path) if r["JobId"] in job_ids}
        if len(records) == len(job_ids):
            return records
        time.sleep(0.5)
    missing = sorted(set(job_ids) - set(records))
    raise AssertionError(f"SLURM wrote no job-completion record for jobs {missing} in {path}")


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


def toy_workdir(tmp_path: Path) -> Path:
    """A folder holding the toy DAG's Snakefile (the ``toy`` fixture of the test files)."""
    (tmp_path / "Snakefile").write_text(TOY_SNAKEFILE)
    return tmp_path


def finish(run: subprocess.Popen, timeout: float = 300) -> str:
    """Wait for ``run`` (started by :func:`start_with_slow_cache_job`) and return its log. A run still going after
    ``timeout`` seconds is stopped (SIGTERM: Snakemake cancels its SLURM jobs; then SIGKILL) before the test fails,
    so that it takes no node from the next test."""
    try:
        return run.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        run.terminate()
        try:
            log = run.communicate(timeout=60)[0]
        except subprocess.TimeoutExpired:
            run.kill()
            log = run.communicate()[0]
        raise AssertionError(f"the run did not finish within {timeout} s; stopped it. Its log ends:\n{log[-3000:]}")


def start_with_slow_cache_job(toy: Path, profile: Path, seconds: int, *args: str) -> tuple[subprocess.Popen, str]:
    """Start the profile's command (and ``args``) on the toy DAG with m2/d2's cache job sleeping ``seconds`` half way;
    returns the run and the SLURM job id of that job once it runs."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONHASHSEED="0")
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--profile",
            str(profile),
            "--directory",
            str(toy),
            "--config",
            f"slow=m2/d2:{seconds}",
            *args,
        ],
        cwd=toy,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    slow_log = toy / "logs/cache_logits/m2/d2.log"
    deadline = time.monotonic() + 180
    while not (slow_log.exists() and "started" in slow_log.read_text()):
        assert run.poll() is None and time.monotonic() < deadline, "the slow cache job never started"
        time.sleep(0.5)
    return run, slow_log.read_text().split("job=")[1].split()[0]


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python tests/slurm/slurm_support.py SHIPPED_PROFILE_DIR DEST_DIR")
    print(derive_test_profile(Path(sys.argv[1]), Path(sys.argv[2]), node_capacity()))
