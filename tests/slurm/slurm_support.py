"""Support for the SLURM tests: the test profile derived from the shipped one, SLURM's own records.

- :func:`derive_test_profile` writes ``profiles/slurm/config.yaml`` again with every site setting
  (lines marked ``EDIT: site setting``) replaced by the single-node test cluster's, and requests
  capped to the node (a job asking more than the node has is never scheduled).
- :func:`read_job_completions` parses the controller's job-completion records
  (``JobCompType=jobcomp/filetxt``): one line per finished job, written by slurmctld itself.
- :func:`submitted_jobs` maps the SLURM job ids in a Snakemake log to the rule or group they ran.

Run as a script to write the test profile for a manual run:
``python tests/slurm/slurm_support.py profiles/slurm /tmp/slurm-ci`` then
``snakemake --profile /tmp/slurm-ci --configfile config/demo.yaml``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SITE_MARK = "EDIT: site setting"

#: Keys whose shipped values are site settings, and what the test profile does with them.
#: ``slurm_partition``: mapped to the test cluster's partition of the same role; ``slurm_account`` and
#: ``gpu_model``: dropped (the test cluster has no accounts, its GPUs no type);
#: ``slurm-status-command``: ``squeue`` (no accounting database on the test cluster).
SITE_KEYS = ("slurm_partition", "slurm_account", "gpu_model", "slurm-status-command")


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
    out = subprocess.run(
        ["scontrol", "show", "node", "-o", node], check=True, capture_output=True, text=True
    ).stdout
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


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python tests/slurm/slurm_support.py SHIPPED_PROFILE_DIR DEST_DIR")
    print(derive_test_profile(Path(sys.argv[1]), Path(sys.argv[2]), node_capacity()))
