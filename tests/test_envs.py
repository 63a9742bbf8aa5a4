"""The conda environment files under envs/ pin the same versions as requirements.txt."""

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pins(lines):
    pins = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


REQUIREMENTS = _pins((ROOT / "requirements.txt").read_text().splitlines())


@pytest.mark.parametrize("env_file", sorted((ROOT / "envs").glob("*.yaml")), ids=lambda p: p.name)
def test_conda_env_pins_match_requirements(env_file):
    env = yaml.safe_load(env_file.read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    pins = _pins(pip_section)
    assert pins, f"{env_file.name} pins nothing"
    mismatched = {
        name: (version, REQUIREMENTS.get(name)) for name, version in pins.items() if REQUIREMENTS.get(name) != version
    }
    assert not mismatched, f"{env_file.name}: pins differ from requirements.txt (env, requirements): {mismatched}"


def test_every_requirement_is_pinned_exactly():
    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    unpinned = [line for line in lines if line and "==" not in line]
    assert not unpinned, f"requirements.txt has unpinned lines: {unpinned}"
