"""Snakemake-side costs (a command, not a test): dry-run DAG build of the full study, and scheduler choice.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_dag.py [--skip-dry-run] [--trivial-jobs 1000]
        [--demo-dir DIR] [--schedulers ilp greedy]

1. Dry run of the full study (config.yaml: the 210-model registry x every dataset, ImageNet-C's 75 conditions
   included), with the fast path on and off (``inference.decoded_cache``). ImageNet val is user-supplied: a temp
   configfile points ``downloads.local_folders.imagenet_val`` at an empty temp folder so the parse-time check
   passes. Runs in a temp copy of the workflow (no ``data/`` or ``results/``), so it touches nothing here.
2. Local run of many small jobs with each scheduler (Snakemake's default ``ilp`` and ``greedy``):
   a synthetic DAG of ``--trivial-jobs`` one-line jobs fanning into one, on ``--cores 2``; and, with
   ``--demo-dir`` (a finished demo run, e.g. a copy where ``make demo`` ran), the project's own metric, QC,
   figure and table jobs forced to rerun there.

Prints a table and writes ``benchmarks/out/dag.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
COPIED = ("Snakefile", "config.yaml", "config", "workflow", "envs", "profiles", "pyproject.toml")


def run(cmd: list[str], cwd: Path) -> tuple[float, str]:
    """Wall seconds and combined output of ``cmd``; raises with the output's tail if it fails."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed in {cwd} (exit {proc.returncode}):\n{out[-3000:]}")
    return wall, out


def job_count(output: str) -> int:
    """The ``total`` row of Snakemake's job-count table."""
    found = re.findall(r"^total\s+(\d+)", output, flags=re.M)
    return int(found[-1]) if found else -1


def dry_run_full_study(tmp: Path, repeats: int) -> list[dict]:
    work = tmp / "workflow_copy"
    work.mkdir()
    for name in COPIED:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, work / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.exists():
            shutil.copy2(source, work / name)
    empty = tmp / "empty_imagenet_val"
    empty.mkdir()
    rows = []
    for decoded in (True, False):
        configfile = tmp / f"bench_{decoded}.yaml"
        configfile.write_text(
            json.dumps(
                {
                    "downloads": {"local_folders": {"imagenet_val": str(empty)}},
                    "inference": {"decoded_cache": decoded},
                }
            )
        )
        cmd = [
            SNAKEMAKE,
            "--configfile",
            "config.yaml",
            str(configfile),
            "--cores",
            "2",
            "--dry-run",
            "--quiet",
            "rules",
        ]
        walls, out = [], ""
        for _ in range(repeats):
            wall, out = run(cmd, work)
            walls.append(wall)
        counts = dict(re.findall(r"^(\w+)\s+(\d+)$", out, flags=re.M))
        print(f"dry run, decoded_cache={decoded}: {min(walls):.1f} s, {job_count(out)} jobs", flush=True)
        rows.append(
            {
                "what": f"dry run, full study, decoded_cache={str(decoded).lower()}",
                "jobs": job_count(out),
                "seconds": min(walls),
                "all_seconds": walls,
                "cache_logits_jobs": int(counts.get("cache_logits", 0)),
                "decode_images_jobs": int(counts.get("decode_images", 0)),
                "command": " ".join(cmd[1:]),
            }
        )
    return rows


TRIVIAL_SNAKEFILE = """
N = int(config["n_jobs"])

rule all:
    input: "done.txt"

rule gather:
    input: expand("jobs/{i}.txt", i=range(N))
    output: "done.txt"
    shell: "cat jobs/*.txt > {output}"

rule one:
    output: "jobs/{i}.txt"
    shell: "echo {wildcards.i} > {output}"
"""


def trivial_dag(tmp: Path, n: int, schedulers: list[str]) -> list[dict]:
    rows = []
    for scheduler in schedulers:
        work = tmp / f"trivial_{scheduler}"
        work.mkdir()
        (work / "Snakefile").write_text(TRIVIAL_SNAKEFILE)
        cmd = [
            SNAKEMAKE,
            "all",
            "--cores",
            "2",
            "--scheduler",
            scheduler,
            "--quiet",
            "rules",
            "--config",
            f"n_jobs={n}",
        ]
        wall, out = run(cmd, work)
        rows.append(
            {
                "what": f"{n + 2} trivial jobs, --scheduler {scheduler}",
                "jobs": n + 2,
                "seconds": wall,
                "command": " ".join(cmd[1:]),
            }
        )
    return rows


def demo_jobs(demo_dir: Path, schedulers: list[str]) -> list[dict]:
    rows = []
    forced = ["compute_model_metrics"]  # everything downstream (aggregate, QC, figures, tables) follows
    for scheduler in schedulers:
        cmd = [
            SNAKEMAKE,
            "--configfile",
            "config/demo.yaml",
            "--cores",
            "2",
            "--scheduler",
            scheduler,
            "--forcerun",
            *forced,
            "--quiet",
            "rules",
        ]
        wall, out = run(cmd, demo_dir)
        rows.append(
            {
                "what": f"demo metric+QC+figure jobs, --scheduler {scheduler}",
                "jobs": job_count(out),
                "seconds": wall,
                "command": " ".join(cmd[1:]),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="dry runs per setting (best is reported)")
    parser.add_argument("--skip-dry-run", action="store_true")
    parser.add_argument("--trivial-jobs", type=int, default=1000, help="jobs in the synthetic DAG (0: skip)")
    parser.add_argument("--demo-dir", type=Path, default=None, help="a folder where the demo ran to completion")
    parser.add_argument("--schedulers", nargs="+", default=["ilp", "greedy"])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out")
    args = parser.parse_args(argv)

    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if not args.skip_dry_run:
            rows += dry_run_full_study(tmp, args.repeats)
        if args.trivial_jobs:
            rows += trivial_dag(tmp, args.trivial_jobs, args.schedulers)
    if args.demo_dir:
        rows += demo_jobs(args.demo_dir.resolve(), args.schedulers)

    print(f"{'what':58s} {'jobs':>7s} {'seconds':>9s}")
    for row in rows:
        print(f"{row['what']:58s} {row['jobs']:7d} {row['seconds']:9.1f}")
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / "dag.json"
    out.write_text(json.dumps({"cpu_count": os.cpu_count(), "rows": rows}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
