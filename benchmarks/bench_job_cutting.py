"""Fixed costs of the logits stage, before and after job cutting (a command, not a test).

    HF_HUB_OFFLINE=1 PYTHONPATH=$PWD/src .venv/bin/python benchmarks/bench_job_cutting.py \\
        --upstream data/demo/upstream [--before-commit 06b730c] [--ood-images 0] [--models ...]

Runs the real workflow on the demo twice, in temporary copies: *before* is the tree of ``--before-commit`` (one
``cache_logits`` job per (model, dataset)); *after* is this checkout (one job per model and group of datasets).
Both run the same study: the demo's models and its seven datasets (with ``--ood-images N``, the two OOD sets are
replaced by local folders of N images each, a study-shaped run where inference outweighs start-up), the reference
input path (``decoded_cache: false``, so no decode job is interleaved). Manifests and zero-shot heads are built
first; then only the logits stage runs, timed:

- ``stage wall``: wall-clock seconds of the Snakemake run of the logits stage (2 cores);
- ``job wall``: the sum of the logits jobs' own wall times (their ``benchmark:`` files);
- ``inference``: the sum over (model, dataset) of the time between the job's "N images" log line and its "wrote"
  line (forward loop plus parquet write: the work itself, as measured in issue 12);
- ``fixed share`` = 1 - inference / job wall (interpreter, imports, model builds, Snakemake's per-job start).

Prints a table and writes ``benchmarks/out/job_cutting.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
COPIED = ("Snakefile", "config.yaml", "config", "workflow", "envs", "src", "pyproject.toml")
STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def snakemake(workdir: Path, *args: str) -> float:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(workdir / "src")}
    cmd = [
        str(Path(sys.executable).with_name("snakemake")),
        "--configfile",
        "config/demo.yaml",
        "bench.yaml",
        "--cores",
        "2",
        "--scheduler",
        "greedy",
        *args,
    ]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed in {workdir}:\n{proc.stderr[-4000:]}")
    return time.perf_counter() - start


def checkout(commit: str | None, dest: Path) -> Path:
    """This tree (``commit`` None) or ``git archive`` of ``commit``, copied to ``dest``."""
    dest.mkdir(parents=True)
    if commit:
        archive = subprocess.run(["git", "archive", commit], cwd=REPO, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    else:
        for name in COPIED:
            source = REPO / name
            if source.is_dir():
                shutil.copytree(source, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(source, dest / name)
    return dest


def ood_folders(upstream: Path, dest: Path, n: int) -> dict[str, str]:
    """Folders of ``n`` images each for the demo's OOD sets (copies of the demo's own JPEGs, cycled)."""
    import tarfile

    sources = []
    for archive in sorted((upstream / "archives").glob("*")):
        if archive.suffix in (".tar", ".gz") and len(sources) < 200:
            with tarfile.open(archive) as tar:
                for member in tar.getmembers():
                    if member.isfile() and member.name.lower().endswith((".jpg", ".jpeg")) and len(sources) < 200:
                        sources.append(tar.extractfile(member).read())
    folders = {}
    for dataset in ("textures", "inaturalist"):
        folder = dest / dataset
        folder.mkdir(parents=True)
        for i in range(n):
            (folder / f"{i:06d}.jpg").write_bytes(sources[i % len(sources)])
        folders[dataset] = str(folder)
    return folders


#: The logits rules, each with its folder of logs and benchmarks (results/logs/{rule}/, results/benchmarks/{rule}/).
LOGITS_RULES = ("cache_logits", "cache_logits_imagenet_c")


def log_seconds(workdir: Path) -> tuple[float, int]:
    """Sum of (wrote - "N images") seconds over every logits log, and how many (model, dataset) pairs."""
    total, pairs = 0.0, 0
    for log in sorted(p for rule in LOGITS_RULES for p in (workdir / "results/logs" / rule).rglob("*.log")):
        start = None
        for line in log.read_text().splitlines():
            stamp = STAMP.match(line)
            if not stamp:
                continue
            when = datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            if " images, batch " in line:
                start = when
            elif "wrote " in line and start is not None and "logits files" not in line:
                total += when - start
                pairs += 1
                start = None
    return total, pairs


def job_wall(workdir: Path) -> tuple[float, int]:
    total, jobs = 0.0, 0
    for tsv in (p for rule in LOGITS_RULES for p in (workdir / "results/benchmarks" / rule).rglob("*.tsv")):
        with open(tsv) as stream:
            row = next(csv.DictReader(stream, delimiter="\t"))
        total += float(row["s"])
        jobs += 1
    return total, jobs


def run_case(name: str, commit: str | None, tmp: Path, upstream: Path, study: dict) -> dict:
    workdir = checkout(commit, tmp / name)
    (workdir / "data/demo").mkdir(parents=True, exist_ok=True)
    (workdir / "data/demo/upstream").symlink_to(upstream.resolve(), target_is_directory=True)
    (workdir / "bench.yaml").write_text(yaml.safe_dump(study))
    datasets = [study["datasets"]["in_distribution"], *study["datasets"]["test_conditions"], *study["datasets"]["ood"]]
    models = study["models"]
    heads = [f"results/heads/{m}.pt" for m in models if m.startswith("openclip__")]
    snakemake(workdir, *[f"data/manifests/{d}.parquet" for d in datasets], *heads)
    stage = snakemake(workdir, *[f"results/logits/{m}/{d}.parquet" for m in models for d in datasets])
    inference, pairs = log_seconds(workdir)
    wall, jobs = job_wall(workdir)
    return {
        "case": name,
        "commit": commit or "this checkout",
        "logits_jobs": jobs,
        "model_dataset_pairs": pairs,
        "stage_wall_s": stage,
        "job_wall_s": wall,
        "inference_s": inference,
        "fixed_s": wall - inference,
        "fixed_share": 1 - inference / wall,
        "fixed_per_job_s": (wall - inference) / jobs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", type=Path, default=REPO / "data/demo/upstream")
    parser.add_argument("--before-commit", default="06b730c", help="a commit with one cache job per (model, dataset)")
    parser.add_argument("--ood-images", type=int, default=0, help="images in each OOD set (0: the demo's own)")
    parser.add_argument("--models", nargs="*", default=None, help="model ids (default: every demo model)")
    parser.add_argument("--cases", nargs="*", default=["before", "after"])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out")
    args = parser.parse_args(argv)
    demo = yaml.safe_load((REPO / "config/demo.yaml").read_text())
    models = args.models or [
        line.split("\t")[0] for line in (REPO / "config/demo/models.tsv").read_text().splitlines()[1:] if line
    ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        study = {"models": models, "datasets": demo["datasets"], "inference": {"decoded_cache": False}}
        if args.ood_images:
            study["downloads"] = {"local_folders": ood_folders(args.upstream, tmp / "ood", args.ood_images)}
        for case in args.cases:
            commit = args.before_commit if case == "before" else None
            rows.append(run_case(case, commit, tmp, args.upstream, study))
            print(json.dumps(rows[-1]), flush=True)
    print(
        f"{'case':8s} {'jobs':>5s} {'pairs':>6s} {'stage wall':>11s} {'job wall':>9s} {'inference':>10s} "
        f"{'fixed/job':>10s} {'fixed share':>12s}"
    )
    for r in rows:
        print(
            f"{r['case']:8s} {r['logits_jobs']:5d} {r['model_dataset_pairs']:6d} {r['stage_wall_s']:10.1f}s "
            f"{r['job_wall_s']:8.1f}s {r['inference_s']:9.1f}s {r['fixed_per_job_s']:9.1f}s {r['fixed_share']:11.1%}"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"job_cutting{'_ood' + str(args.ood_images) if args.ood_images else ''}.json"
    out.write_text(
        json.dumps(
            {
                "cpu_count": os.cpu_count(),
                "models": models,
                "ood_images": args.ood_images,
                "command": "benchmarks/bench_job_cutting.py " + " ".join(argv or sys.argv[1:]),
                "rows": rows,
            },
            indent=1,
        )
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
