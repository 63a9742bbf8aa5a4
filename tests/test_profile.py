"""`snakemake --profile slurm` from the repository root finds the shipped profile (docs/cluster.md, issue 14).

Snakemake looks for a profile NAME in the working directory first, then in the user's and the site's
Snakemake config folders; the repository's `slurm` link to `profiles/slurm` is found first. Checked with
Snakemake's own lookup (`snakemake.cli.get_profile_dir`); the SLURM run itself is tests/test_slurm_demo.py.
"""

from __future__ import annotations

from pathlib import Path

from snakemake.cli import get_profile_dir

ROOT = Path(__file__).resolve().parents[1]


def test_profile_named_slurm_resolves_from_the_repository_root_to_profiles_slurm(monkeypatch):
    monkeypatch.chdir(ROOT)
    _, config_file = get_profile_dir("slurm")
    assert config_file.resolve() == (ROOT / "profiles/slurm/config.yaml").resolve()


def test_profile_path_profiles_slurm_keeps_working(monkeypatch):
    monkeypatch.chdir(ROOT)
    _, config_file = get_profile_dir("profiles/slurm")
    assert config_file.resolve() == (ROOT / "profiles/slurm/config.yaml").resolve()


def test_repository_profile_wins_over_a_user_profile_of_the_same_name(monkeypatch, tmp_path):
    user_profile = tmp_path / "config" / "snakemake" / "slurm"
    user_profile.mkdir(parents=True)
    (user_profile / "config.yaml").write_text("executor: slurm\n")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.chdir(tmp_path)  # elsewhere, Snakemake finds that user profile
    assert get_profile_dir("slurm")[1].resolve() == (user_profile / "config.yaml").resolve()
    monkeypatch.chdir(ROOT)
    _, config_file = get_profile_dir("slurm")
    assert config_file.resolve() == (ROOT / "profiles/slurm/config.yaml").resolve()
