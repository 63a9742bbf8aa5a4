"""The pipeline's SLURM path, run for real on the single-node test cluster (issue 7): the test profile, and the demo
through SLURM.

How the SLURM tests run (the test cluster, the test profile, SLURM's own records, why they are three files, skipped or
failed without a cluster): tests/slurm/slurm_support.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "slurm"))

import slurm_support as slurm  # noqa: E402

pytestmark = pytest.mark.slurm

node = pytest.fixture(scope="module", name="node")(slurm.require_cluster)
test_profile = pytest.fixture(scope="module", name="test_profile")(slurm.make_test_profile)


def run_verbatim(workdir: Path, cores: int, *args: str, timeout: float = 900) -> tuple[int, str]:
    """The users' command, ``snakemake --cores N --profile slurm``, from ``workdir`` (a checkout), as written:
    Snakemake finds the profile by its name, through the checkout's ``slurm`` link (docs/cluster.md)."""
    snakemake = Path(sys.executable).with_name("snakemake")
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONHASHSEED="0")
    proc = subprocess.run(
        [str(snakemake), "--cores", str(cores), "--profile", "slurm", *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return proc.returncode, proc.stdout + proc.stderr


# ------------------------------------------------------------------------------------------ profile


def test_every_site_setting_of_the_shipped_profile_is_replaced_in_the_test_profile(node, tmp_path):
    shipped_text = (slurm.SHIPPED_PROFILE / "config.yaml").read_text()
    shipped = yaml.safe_load(shipped_text)
    derived = yaml.safe_load(slurm.derive_test_profile(slurm.SHIPPED_PROFILE, tmp_path, node).read_text())

    assert {"slurm_partition", "slurm-status-command"} <= set(slurm.site_setting_keys(shipped_text))
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
    derived = yaml.safe_load(slurm.derive_test_profile(slurm.SHIPPED_PROFILE, tmp_path, node).read_text())
    for resources in [derived["default-resources"], *derived["set-resources"].values()]:
        assert resources.get("mem_mb", 0) <= node.mem_mb
        assert resources.get("cpus_per_gpu", 0) <= node.cpus
        assert resources.get("gpu", 0) <= node.gpus
    assert all(n <= node.cpus for n in derived["set-threads"].values())


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
    slurm.derive_test_profile(slurm.SHIPPED_PROFILE, workdir / "profiles" / "slurm", node)
    (workdir / "slurm").symlink_to(os.readlink(ROOT / "slurm"), target_is_directory=True)

    # `--cores 8` as users write it, on a node with at least 8 CPUs; a smaller test node gets its own count, since
    # Snakemake asks SLURM for up to --cores CPUs for a group job, and a job asking more than the node has never runs.
    status, log = run_verbatim(workdir, min(8, node.cpus), "--configfile", "config/demo-slurm.yaml")
    assert status == 0, log[-6000:]

    jobs = slurm.submitted_jobs(log)
    records = slurm.records_of(jobs)
    assert records and all(r["JobState"] == "COMPLETED" and r["ExitCode"] == "0:0" for r in records.values()), records
    kinds = set(jobs.values())
    # Every stage ran as SLURM jobs: manifests, the zero-shot head, one cache group job per model (in the
    # GPU partition), the metrics group, the aggregate and the figures group.
    assert {"rule_build_manifest", "rule_build_zero_shot_head", "rule_aggregate_metrics"} <= kinds, kinds
    cache_jobs = [j for j, kind in jobs.items() if kind.startswith("group_cache_")]
    assert len(cache_jobs) == 2 and all(records[j]["Partition"] == "gpu" for j in cache_jobs)
    assert any(kind.startswith("group_metrics") for kind in kinds) and any(
        kind.startswith("group_figures") for kind in kinds
    )
    # Downloads, extraction and weights stayed on the submitting host (localrules): no SLURM job for them.
    assert not any(
        rule in kind for kind in kinds for rule in ("download_archive", "extract_archive", "fetch_model_weights")
    )
    assert sorted(p.name for p in (workdir / "data/weights").glob("*.json")) == sorted(
        f"{model}.json" for model in DEMO_UNDER_SLURM["models"]
    )

    metrics = pd.read_parquet(workdir / "results/metrics/metrics.parquet")
    assert set(metrics["model"]) == set(DEMO_UNDER_SLURM["models"])
    assert {"imagenet_val", "imagenet_r", "textures"} <= set(metrics["dataset"])
    assert len(list((workdir / "results/figures").glob("*.png"))) >= 5
