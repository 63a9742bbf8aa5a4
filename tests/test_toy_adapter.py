"""A new model library is its adapter and nothing else: a toy library (tests/toy_adapter.py, tiny torch modules, no
new dependency), registered as a plug-in through ``CLIP_ROBUSTNESS_ADAPTERS``, goes through every step the
paper's libraries go through, with no file of the package changed: the registry check, ``add_model``, the weights
fetch and its offline check, the decode spec, then one Snakemake run on the demo that plans its jobs, fetches its
weights, decodes its images, computes its logits and metrics and writes its report card."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import make_demo_workdir
from toy_adapter import CACHE_VARIABLE, TAGS, ToyAdapter

from clip_robustness.logits.geometry import decode_spec_for_row
from clip_robustness.logits.specs import table_key
from clip_robustness.models.adapters import ADAPTERS, PLUGIN_VARIABLE, register_adapter, register_plugins
from clip_robustness.models.adapters.errors import ModelBuildError
from clip_robustness.models.adapters.timm import TimmAdapter
from clip_robustness.models.add_model import main as add_model
from clip_robustness.models.registry import check_registry_against_libraries, load_model_registry
from clip_robustness.models.weights import fetch_weights, unfetchable_offline

TESTS = Path(__file__).resolve().parent
PLUGIN = "toy_adapter:ToyAdapter"
TOY = "toy__tinynet__seed1"
#: A paper model beside the toy: the report card compares a model with the paper's models of its group.
PAPER_PEER = "timm__test_convnext.demo"
STUDY = {
    "datasets": {
        "in_distribution": "imagenet_val",
        "test_conditions": ["imagenet_r"],
        "imagenet_c": {"corruptions": [], "severities": []},
        "ood": ["textures"],
        "cue_conflict": [],
    },
    "models": [PAPER_PEER, TOY],
}


@pytest.fixture
def toy_library(tmp_path, monkeypatch):
    """The toy adapter in this process's table (as the plug-in variable puts it there in every other process)."""
    monkeypatch.setenv(CACHE_VARIABLE, str(tmp_path / "toy_cache"))
    assert register_plugins(PLUGIN) == ["toy"]
    yield ADAPTERS["toy"]
    del ADAPTERS["toy"]


def run_workflow(workdir: Path, cache: Path) -> subprocess.CompletedProcess:
    """One Snakemake run of the small study, online for the toy library (its "download" writes into ``cache``), with
    the plug-in named in the environment as a user would."""
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.update(
        {
            PLUGIN_VARIABLE: PLUGIN,
            CACHE_VARIABLE: str(cache),
            "HF_HOME": str(workdir / "hf_home"),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH", "")])),
        }
    )
    cmd = [sys.executable, "-m", "snakemake", "--configfile", "config/demo.yaml", "config/small.yaml", "--cores", "2"]
    return subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)


def test_a_plug_in_that_cannot_be_imported_is_refused_naming_the_entry_and_the_variable():
    with pytest.raises(ModelBuildError, match=rf"{PLUGIN_VARIABLE} entry 'toy_adapter:NoSuchAdapter'"):
        register_plugins("toy_adapter:NoSuchAdapter")
    assert "toy" not in ADAPTERS


def test_a_plug_in_cannot_take_the_name_of_another_library():
    class ClashingAdapter(ToyAdapter):
        name = "timm"

    with pytest.raises(ValueError, match=r"library 'timm' already has the adapter TimmAdapter"):
        register_adapter(ClashingAdapter())
    assert isinstance(ADAPTERS["timm"], TimmAdapter)


@pytest.mark.integration
def test_a_toy_library_goes_from_add_model_to_its_report_card_through_its_adapter_alone(
    toy_library, tmp_path, demo_upstream, monkeypatch
):
    workdir = make_demo_workdir(tmp_path, demo_upstream)
    (workdir / "config/small.yaml").write_text(yaml.safe_dump(STUDY))
    monkeypatch.chdir(workdir)

    # add-model: the toy's command-line spelling, its input size and its model id come from its adapter.
    assert (
        add_model(
            [
                "toy:tinynet@seed1",
                "--group",
                "standard",
                "--training-source",
                "demo-clean",
                "--training-size",
                "1000",
                "--architecture-family",
                "Toy",
                "--config",
                "config/demo.yaml",
            ]
        )
        == 0
    )
    registry = load_model_registry(workdir / "config/demo/models.tsv")
    row = registry.row(TOY)
    assert (row["library"], row["architecture"], row["pretrained"], int(row["resolution"])) == (
        "toy",
        "tinynet",
        "seed1",
        32,
    )
    assert registry.study(TOY) == "own" and not registry.is_zero_shot(TOY)

    # The registry check asks the adapter: every row resolves; a tag the toy library lacks is named.
    assert check_registry_against_libraries(registry) == []
    assert (
        add_model(
            [
                "toy:tinynet@seed9",
                "--group",
                "standard",
                "--training-source",
                "unknown",
                "--config",
                "config/demo.yaml",
                "--architecture-family",
                "Toy",
            ]
        )
        == 2
    )

    # Weights: offline (HF_HUB_OFFLINE, as in the test session) the toy's are named before any job.
    unfetchable = unfetchable_offline({TOY: row})
    assert list(unfetchable) == [TOY] and "toy://tinynet/seed1" in unfetchable[TOY]

    # The decode spec: derived live from the adapter's recipe (the spec table holds only tabled libraries).
    spec = decode_spec_for_row(row)
    assert spec.input_size == (32, 32) and spec.key.startswith("32x32-") and table_key(row) is None
    assert spec.mean == pytest.approx((0.5, 0.5, 0.5)) and spec.library == "toy"

    # One run: plan, fetch, decode, logits, metrics, report card.
    run = run_workflow(workdir, tmp_path / "toy_cache")
    assert run.returncode == 0, run.stderr[-4000:]
    weights_file = tmp_path / "toy_cache/tinynet-seed1.safetensors"
    record = json.loads((workdir / f"data/weights/{TOY}.json").read_text())
    sha256 = hashlib.sha256(weights_file.read_bytes()).hexdigest()
    assert record["library"] == "toy" and record["files"] == [
        {
            "file": str(weights_file.resolve()),
            "size": weights_file.stat().st_size,
            "sha256": sha256,
            "source": "toy://tinynet/seed1",
        }
    ]
    assert fetch_weights(row) == record  # fetched: now found in the cache offline too
    assert unfetchable_offline({TOY: row}) == {}

    logits = pd.read_parquet(workdir / f"results/logits/{TOY}/imagenet_val.parquet")
    assert len(logits) > 0
    metrics = pd.read_parquet(workdir / "results/metrics/metrics.parquet")
    top1 = metrics.loc[
        (metrics["model"] == TOY) & (metrics["dataset"] == "imagenet_val") & (metrics["metric"] == "top1"), "value"
    ].item()
    assert 0.0 <= top1 <= 1.0
    page = (workdir / f"results/report_cards/{TOY}.html").read_text()
    assert TOY in page and sha256 in page and f"{top1:.4f}" in page
    assert row["pretrained"] in TAGS
