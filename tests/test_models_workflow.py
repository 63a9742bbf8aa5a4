"""Integration (issue 14): weights reach offline jobs through fetch_model_weights, and an added model
runs only its own branch. The real DAG on the demo, in temporary checkouts.

- The model hub is a local stand-in on 127.0.0.1 (tests/hub_standin.py) serving the demo's trained
  test_resnet weights under timm's real repo id for ``test_resnet.r160_in1k``: the fetch runs with the
  stand-in as ``HF_ENDPOINT``, the cache job afterwards with ``HF_HUB_OFFLINE=1``.
- ``add_model`` appends a local-weights timm model to the demo registry copy of a finished run; the dry
  run that follows plans jobs of that model only (and the aggregates over all models), and the run then writes
  its report card, which `--report` shows.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import make_demo_workdir
from hub_standin import HubStandIn
from test_report import report_results

pytestmark = pytest.mark.integration

HUB_MODEL = "timm__test_resnet.r160_in1k"
#: The model test_added_own_model_... adds (timm's test_vit with a local weights file, tag "mine").
OWN_MODEL = "timm__test_vit.mine"
HUB_ROW = [HUB_MODEL, "timm", "test_resnet", "r160_in1k", "standard", "demo-clean", "1920", "none", "ResNet", "160", ""]
SMALL_STUDY = {
    "datasets": {
        "in_distribution": "imagenet_val",
        "test_conditions": ["imagenet_r"],
        "imagenet_c": {"corruptions": [], "severities": []},
        "ood": ["textures"],
        "cue_conflict": [],
    },
}


def snakemake(workdir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--configfile",
        "config/demo.yaml",
        "config/small.yaml",
        "--cores",
        "2",
        *args,
    ]
    return subprocess.run(
        cmd, cwd=workdir, env=env or {**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True
    )


def hub_env(hf_home: Path, endpoint: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env["HF_HOME"] = str(hf_home)
    if endpoint:
        env["HF_ENDPOINT"] = endpoint
    else:
        env["HF_HUB_OFFLINE"] = "1"
    return env


def write_study(workdir: Path, registry_rows: list[list[str]] | None = None, models: str | list[str] = "all") -> None:
    (workdir / "config/small.yaml").write_text(yaml.safe_dump({**SMALL_STUDY, "models": models}))
    if registry_rows is not None:
        path = workdir / "config/demo/models.tsv"
        header = path.read_text().splitlines()[0]
        path.write_text("\n".join([header, *("\t".join(r) for r in registry_rows)]) + "\n")


@pytest.fixture(scope="module")
def hub_checkout(tmp_path_factory, demo_upstream) -> tuple[Path, Path]:
    """A checkout whose study is one hub-sourced timm model, and a hub folder serving its weights."""
    workdir = make_demo_workdir(tmp_path_factory.mktemp("hub_checkout"), demo_upstream)
    write_study(workdir, [HUB_ROW])
    served = tmp_path_factory.mktemp("served") / "timm" / "test_resnet.r160_in1k"
    served.mkdir(parents=True)
    (served / "model.safetensors").write_bytes(
        (demo_upstream / "weights/timm__test_resnet.demo.safetensors").read_bytes()
    )
    return workdir, served.parents[1]


def test_until_fetch_fetches_weights_from_the_hub_and_the_cache_job_then_runs_offline(hub_checkout, tmp_path):
    workdir, served = hub_checkout
    with HubStandIn(served) as hub:
        fetched = snakemake(workdir, "--until", "fetch_model_weights", env=hub_env(tmp_path, hub.endpoint))
        assert fetched.returncode == 0, fetched.stderr[-4000:]
    assert ("GET", "/timm/test_resnet.r160_in1k/resolve/main/model.safetensors") in hub.requests
    assert not (workdir / "results/logits").exists()  # --until stops at the fetch: no GPU job ran
    record = yaml.safe_load((workdir / f"data/weights/{HUB_MODEL}.json").read_text())
    assert record["files"][0]["source"].startswith(f"{hub.endpoint}/timm/test_resnet.r160_in1k/resolve/")

    # The hub is gone and the node offline: the cache job loads the fetched weights from the hub cache.
    target = f"results/logits/{HUB_MODEL}/textures.parquet"
    cached = snakemake(workdir, target, env=hub_env(tmp_path, None))
    assert cached.returncode == 0, cached.stderr[-4000:]
    assert (workdir / target).is_file()
    assert "fetch_model_weights" not in cached.stderr  # nothing left to fetch


def test_offline_run_without_fetched_weights_stops_before_any_job_naming_the_model(tmp_path, demo_upstream):
    (tmp_path / "checkout").mkdir()
    workdir = make_demo_workdir(tmp_path / "checkout", demo_upstream)
    write_study(workdir, [HUB_ROW])
    result = snakemake(
        workdir, f"results/logits/{HUB_MODEL}/textures.parquet", env=hub_env(tmp_path / "empty_home", None)
    )
    assert result.returncode != 0
    message = result.stderr.split("Before any job: weights that cannot be fetched")[-1]
    assert f"model {HUB_MODEL!r}: weights not available" in message and "timm/test_resnet.r160_in1k" in message
    assert "--until fetch_model_weights" in message and "--keep-going" in message
    # Not one job ran: no download, no decode_images (whose inputs would otherwise be ready first), no cache job.
    assert not (workdir / "results/logs").exists() and not (workdir / "data/archives").exists()


def planned_models(dry_run_output: str) -> set[str]:
    """The {model} wildcard of every job a dry run plans."""
    return set(re.findall(r"wildcards:.*?\bmodel=([^,\s]+)", dry_run_output))


def test_added_own_model_plans_only_its_branch_and_the_aggregates(tmp_path, demo_upstream):
    (tmp_path / "checkout").mkdir()
    workdir = make_demo_workdir(tmp_path / "checkout", demo_upstream)
    registry = workdir / "config/demo/models.tsv"
    convnext = next(
        line.split("\t") for line in registry.read_text().splitlines() if line.startswith("timm__test_convnext")
    )
    write_study(workdir, [convnext])
    # The new model shares convnext's decode geometry (160x160 bicubic). With temp decoded arrays (keep_decoded
    # false) the dry run would have to decode them again, and Snakemake then reruns every cache job that reads
    # them, convnext's included ("Input files updated by another job"). Kept arrays: only the new model's branch.
    small = yaml.safe_load((workdir / "config/small.yaml").read_text())
    (workdir / "config/small.yaml").write_text(
        yaml.safe_dump(
            {
                **small,
                "inference": {
                    **yaml.safe_load((workdir / "config/demo.yaml").read_text())["inference"],
                    "keep_decoded": True,
                },
            }
        )
    )
    first = snakemake(workdir, "--scheduler", "greedy")
    assert first.returncode == 0, first.stderr[-4000:]

    # One command adds the user's model: the demo's test_vit weights, as a local file of timm's test_vit.
    own_weights = demo_upstream / "weights/timm__test_vit.demo.safetensors"
    added = subprocess.run(
        [
            sys.executable,
            "-m",
            "clip_robustness.models.add_model",
            "timm:test_vit",
            "--weights",
            str(own_weights),
            "--tag",
            "mine",
            "--group",
            "more_data",
            "--training-source",
            "demo-clean",
            "--training-size",
            "3840",
            "--architecture-family",
            "ViT",
            "--config",
            "config/demo.yaml",
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert added.returncode == 0, added.stderr[-3000:]

    plan = snakemake(workdir, "--dry-run")
    assert plan.returncode == 0, plan.stderr[-4000:]
    output = plan.stdout + plan.stderr
    assert planned_models(output) == {OWN_MODEL}
    for rule in (
        "fetch_model_weights",
        "cache_logits",
        "compute_model_metrics",
        "aggregate_metrics",
        "write_report_card",
    ):
        # A rule inside a group job is listed indented under its group.
        assert re.search(rf"^\s*rule {rule}:", output, flags=re.M), rule

    # One run computes its branch, and its report card appears: its id, its weights' sha256 as recorded by
    # fetch_model_weights, its top-1 on ImageNet val as in the metrics table.
    run = snakemake(workdir)
    assert run.returncode == 0, run.stderr[-4000:]
    page = (workdir / f"results/report_cards/{OWN_MODEL}.html").read_text()
    sha256 = json.loads((workdir / f"data/weights/{OWN_MODEL}.json").read_text())["files"][0]["sha256"]
    metrics = pd.read_parquet(workdir / "results/metrics/metrics.parquet")
    top1 = metrics.loc[
        (metrics["model"] == OWN_MODEL) & (metrics["dataset"] == "imagenet_val") & (metrics["metric"] == "top1"),
        "value",
    ].item()
    assert OWN_MODEL in page and sha256 in page and f"{top1:.4f}" in page
    data = json.loads(
        re.search(r'<script type="application/json" id="report-card-data">(.*?)</script>', page, re.S).group(1)
    )
    assert [r["value"] for r in data["metrics"] if (r["metric"], r["dataset"]) == ("top1", "imagenet_val")] == [top1]
    assert data["weights"]["files"][0]["sha256"] == sha256
    assert not (workdir / "results/report_cards/timm__test_convnext.demo.html").exists()  # paper models get no card

    report = snakemake(workdir, "--report", "report.html")
    assert report.returncode == 0, report.stderr[-4000:]
    card = report_results((workdir / "report.html").read_text())[f"results/report_cards/{OWN_MODEL}.html"]
    assert card["mime_type"] == "text/html"
    assert sha256 in base64.b64decode(card["data_uri"].split(",", 1)[1]).decode()
