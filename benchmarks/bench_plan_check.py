"""`make plan` checked against a measured run: the demo's logits stage on CPU (a command, not a test).

    .venv/bin/python benchmarks/bench_plan_check.py --workdir DEMO_CHECKOUT [--run] [--threads 2]

``DEMO_CHECKOUT``: a checkout where the demo has run (``make demo``, or ``snakemake --configfile config/demo.yaml
--until cache_logits``): its manifests and the benchmark files Snakemake wrote for each ``cache_logits`` job
(``results/benchmarks/cache_logits/{model}.tsv``). ``--run`` first reruns the logits stage there
(``snakemake --configfile config/demo.yaml --cores 2 --forcerun cache_logits --until cache_logits``).

1. Measures, first, what the plan takes as given, on this machine: each demo model's forward throughput on CPU
   (its float32 final layer on random batches of the job's batch size, ``--threads`` torch threads, the job's), and
   the start-up of one logits job (a fresh process importing the job's modules and building the model).
2. Predicts each ``cache_logits`` job with the plan's formula
   (:func:`clip_robustness.logits.plan.predicted_logits_seconds`: the job's images at that throughput plus one
   start-up), and the stage as their sum.
3. Compares with the measured wall seconds of each job (the ``s`` column of its benchmark file) and reports the
   ratio measured / predicted per job and for the stage. Writes ``plan_check_cpu.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

REPO = Path(__file__).resolve().parents[1]

STARTUP = r"""
import sys, json, time
start = time.perf_counter()
import torch
torch.set_num_threads(int(sys.argv[2]))
import timm, open_clip
from clip_robustness.logits.job import cache_group_logits
from clip_robustness.models.build import build_model
build_model(json.loads(sys.argv[1]), "cpu")
print(time.perf_counter() - start)
"""


def forward_rate(row: dict, head: Path | None, batch_size: int, batches: int) -> float:
    """CPU images/s of ``row``'s model (float32 final layer; its zero-shot head) on random batches of its input size."""
    from clip_robustness.logits.geometry import decode_spec_for_row
    from clip_robustness.models.adapters import row_adapter
    from clip_robustness.models.build import build_model
    from clip_robustness.models.zero_shot import load_head

    model, _, _ = build_model(row, "cpu")
    classifier = row_adapter(row).classifier(model, None if head is None else load_head(head))
    x = torch.randn(batch_size, 3, *decode_spec_for_row(row).input_size)
    with torch.no_grad():
        classifier(x)
        start = time.perf_counter()
        for _ in range(batches):
            classifier(x)
    return batches * batch_size / (time.perf_counter() - start)


def job_startup_s(row: dict, threads: int, cwd: Path) -> float:
    """Seconds a fresh process takes to import the logits job's modules and build ``row``'s model (the interpreter
    included)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", STARTUP, json.dumps(row), str(threads)],
        cwd=cwd,
        env=env,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def measured_job_s(path: Path) -> float:
    """The wall seconds Snakemake recorded in a job's benchmark file (its last row)."""
    with open(path) as stream:
        rows = list(csv.DictReader(stream, delimiter="\t"))
    return float(rows[-1]["s"])


# Longer than 60 lines: a benchmark command's main: its options, the set-up, the timed runs and the report, in the order they run.
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True, help="a demo checkout where the demo has run")
    parser.add_argument("--run", action="store_true", help="rerun the logits stage there first")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of a demo cache_logits job (--cores 2)")
    parser.add_argument("--batch-size", type=int, default=256, help="the cache_logits rule's batch_size")
    parser.add_argument("--forward-batches", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out")
    args = parser.parse_args(argv)
    workdir = args.workdir.resolve()
    os.chdir(workdir)  # registry paths (weights, heads, manifests) are relative to the checkout

    import yaml

    from clip_robustness.datasets.manifest import read_manifest
    from clip_robustness.logits.plan import deep_merge, predicted_logits_seconds
    from clip_robustness.models.registry import load_model_registry

    if args.run:
        snakemake = str(Path(sys.executable).with_name("snakemake"))
        subprocess.run(
            [
                snakemake,
                "--configfile",
                "config/demo.yaml",
                "--cores",
                "2",
                "--scheduler",
                "greedy",
                "--forcerun",
                "cache_logits",
                "--until",
                "cache_logits",
                "--quiet",
            ],
            check=True,
        )
    config = deep_merge(
        yaml.safe_load(Path("config.yaml").read_text()), yaml.safe_load(Path("config/demo.yaml").read_text())
    )
    registry = load_model_registry(config["model_registry"])
    torch.set_num_threads(args.threads)
    loads = [os.getloadavg()[0]]
    jobs = []
    for bench in sorted(Path("results/benchmarks/cache_logits").glob("*.tsv")):
        model = bench.stem
        row = dict(registry.row(model))
        head = Path("results/heads") / f"{model}.pt"
        images = sum(
            len(read_manifest(m).table)
            for m in (Path("data/manifests") / f"{d}.parquet" for d in _core_datasets(config))
        )
        rate = forward_rate(row, head if head.exists() else None, args.batch_size, args.forward_batches)
        startup = job_startup_s(row, args.threads, workdir)
        predicted = predicted_logits_seconds(images, rate, jobs=1, job_startup_s=startup)
        measured = measured_job_s(bench)
        jobs.append(
            {
                "model": model,
                "images": images,
                "forward_img_per_s": rate,
                "startup_s": startup,
                "predicted_s": predicted,
                "measured_s": measured,
                "measured_over_predicted": measured / predicted,
            }
        )
    loads.append(os.getloadavg()[0])
    predicted_total, measured_total = sum(j["predicted_s"] for j in jobs), sum(j["measured_s"] for j in jobs)
    ratios = [j["measured_over_predicted"] for j in jobs]
    result = {
        "command": "benchmarks/bench_plan_check.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "threads": args.threads,
        "batch_size": args.batch_size,
        "jobs": jobs,
        "predicted_stage_s": predicted_total,
        "measured_stage_s": measured_total,
        "stage_measured_over_predicted": measured_total / predicted_total,
        "job_ratio_range": [min(ratios), max(ratios)],
        "load_average_1min": loads,
    }
    print(
        f"{'cache_logits job (demo, CPU)':48s} {'images':>6s} {'fwd img/s':>9s} {'start s':>7s} {'predicted s':>11s} "
        f"{'measured s':>10s} {'ratio':>6s}"
    )
    for j in jobs:
        print(
            f"{j['model']:48s} {j['images']:6d} {j['forward_img_per_s']:9.1f} {j['startup_s']:7.2f} "
            f"{j['predicted_s']:11.2f} {j['measured_s']:10.2f} {j['measured_over_predicted']:6.2f}"
        )
    print(
        f"{'stage':48s} {'':6s} {'':9s} {'':7s} {predicted_total:11.2f} {measured_total:10.2f} "
        f"{measured_total / predicted_total:6.2f}"
    )
    print(f"load average {loads[0]:.2f}-{loads[-1]:.2f}")
    args.out = args.out if args.out.is_absolute() else REPO / args.out
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "plan_check_cpu.json").write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out / 'plan_check_cpu.json'}")
    return 0


def _core_datasets(config: dict) -> list[str]:
    """The datasets of a model's core logits job: every dataset of the study but ImageNet-C."""
    from clip_robustness.datasets.registry import load_dataset_registry
    from clip_robustness.logits.cutting import LogitsGroups
    from clip_robustness.models.registry import load_model_registry
    from clip_robustness.workflow.study import Study

    study = Study.from_config(
        config, load_dataset_registry(config["dataset_registry"]), load_model_registry(config["model_registry"])
    )
    return LogitsGroups.from_study(study.dataset_ids, config["datasets"].get("imagenet_c")).groups()["core"]


if __name__ == "__main__":
    raise SystemExit(main())
