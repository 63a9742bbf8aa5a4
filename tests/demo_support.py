"""Test helpers shared by the tests that run the demo workflow (tests/test_demo_pipeline.py, tests/test_recovery.py,
tests/test_cache_travels.py): Snakemake run as a user types it in a demo working directory, and the jobs it ran or
planned, read from its own 'Job stats' table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def snakemake_in(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    """``snakemake ARGS`` run in ``workdir`` with this interpreter's Snakemake, offline (``HF_HUB_OFFLINE=1``);
    output captured as text, never checked."""
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


def job_stats(result: subprocess.CompletedProcess) -> dict[str, int]:
    """Rule name -> jobs, from Snakemake's 'Job stats' table (stderr for a run, stdout for a dry run), without the
    total; ``{}`` when there is no table ('Nothing to be done')."""
    lines = (result.stderr + result.stdout).splitlines()
    if "Job stats:" not in lines:
        return {}
    counts = {}
    for line in lines[lines.index("Job stats:") + 3 :]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        if parts[0] != "total":
            counts[parts[0]] = int(parts[1])
    return counts
