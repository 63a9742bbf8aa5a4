"""The config is validated against workflow/schemas/config.schema.yaml before any job runs: an unknown
key, a missing key or a wrong type stops the run with a message naming the key."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = str(ROOT / "workflow/schemas/config.schema.yaml")


def _config(name: str = "config.yaml") -> dict:
    return yaml.safe_load((ROOT / name).read_text())


@pytest.mark.parametrize("name", ["config.yaml", "config/demo.yaml"])
def test_shipped_configs_are_valid(name):
    validate(_config(name), SCHEMA)


def test_unknown_key_is_named():
    config = _config()
    config["metrics"]["ece_bin"] = 15  # typo of ece_bins
    with pytest.raises(WorkflowError, match="ece_bin"):
        validate(config, SCHEMA)


def test_missing_key_is_named():
    config = _config()
    del config["datasets"]["in_distribution"]
    with pytest.raises(WorkflowError, match="in_distribution"):
        validate(config, SCHEMA)


def test_wrong_type_is_named():
    config = _config()
    config["metrics"]["ece_bins"] = "fifteen"
    with pytest.raises(WorkflowError, match=r"\['metrics'\]\['ece_bins'\]"):
        validate(config, SCHEMA)


def test_bad_config_stops_snakemake_before_any_job(tmp_path):
    config = copy.deepcopy(_config("config/demo.yaml"))
    config["inference"]["precison"] = "bf16"  # typo
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--configfile", str(bad), "--cores", "1", "--dry-run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode != 0
    assert "precison" in result.stdout + result.stderr
    assert "Job stats" not in result.stdout + result.stderr
