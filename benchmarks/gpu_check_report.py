"""Collect benchmarks/gpu_check.sh's results into one JSON and one markdown table (a command, not a test).

    .venv/bin/python benchmarks/gpu_check_report.py --out benchmarks/out [--command "..."]

Reads ``group_job_{library}__{architecture}_{device}.json`` of the four check models (bench_group_job.py),
``loader_{device}.json`` (bench_loader.py), ``cpu_budget.json`` (bench_cpu_budget.py),
``job_startup_{library}__{architecture}_{device}.json`` of the start-up models, ``gpu_check_device.txt``
(nvidia-smi) and ``gpu_check_tests.xml`` (pytest's JUnit report of the CUDA-only tests); writes
``gpu_check.json`` and ``gpu_check.md``.
"""

from __future__ import annotations

import argparse
import json
import xml.etree.ElementTree as ET
from pathlib import Path

#: The models of the GPU check: (library, architecture).
CHECK_MODELS = [("open_clip", "ViT-B-32"), ("timm", "resnet50"), ("open_clip", "RN50"), ("open_clip", "ViT-B-16")]

#: The models whose logits job start-up (fixed cost) is measured: (library, architecture).
STARTUP_MODELS = [("open_clip", "ViT-B-32"), ("timm", "resnet50")]

#: The end-to-end goal, as a ratio to pure forward (issue 12, goal 6; issue 22, goal 5).
GOAL_RATIO = 0.8


def test_results(path: Path) -> list[dict]:
    """One record (name, outcome) per test case of a JUnit XML report; [] when there is none."""
    if not path.exists():
        return []
    cases = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome = "passed"
        for tag in ("failure", "error", "skipped"):
            if case.find(tag) is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
        cases.append({"name": case.get("name"), "outcome": outcome, "seconds": float(case.get("time", 0))})
    return cases


def load_result(out: Path, benchmark: str, model: tuple[str, str], device: str) -> dict:
    """A benchmark's JSON ``{benchmark}_{library}__{architecture}_{device}.json`` under ``out``, or a record naming
    the missing file."""
    name = f"{model[0]}__{model[1]}"
    path = out / f"{benchmark}_{name}_{device}.json"
    return json.loads(path.read_text()) if path.exists() else {"model": name, "error": f"no {path.name}"}


def startup_lines(startups: list[dict]) -> list[str]:
    """The markdown table of the job start-up measurements (one row per model and datasets per job)."""
    lines = [
        "",
        "Fixed cost of one logits group job (fresh process; wall minus the job's own forward + write):",
        "",
        "| model | weights MB | datasets in the job | images | wall s | forward + write s | fixed s | "
        "interpreter s | imports s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for startup in startups:
        if "jobs" not in startup:
            lines.append(f"| {startup['model']} | not measured ({startup['error']}) | | | | | | | |")
            continue
        for job in startup["jobs"]:
            lines.append(
                f"| {startup['model']} | {startup['weights_mb']:.0f} | {job['datasets']} | {job['images']:,} | "
                f"{job['wall_s']:.2f} | {job['compute_s']:.2f} | {job['fixed_s']:.2f} | "
                f"{job['interpreter_s']:.2f} | {job['imports_s']:.2f} |"
            )
    return lines


def group_lines(rows: list[dict]) -> list[str]:
    """The markdown table of the study-shaped group jobs (one row per model)."""
    lines = [
        "| model | datasets x images | forward img/s | end to end img/s | ratio | exposed s per dataset | "
        "plan: predicted s (img/s, source) | measured s | measured / predicted |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "forward_img_per_s" not in row:
            lines.append(f"| {row['model']} | not measured ({row['error']}) | | | | | | | |")
            continue
        plan = row["plan"]
        lines.append(
            f"| {row['model']} | {row['datasets']} x {row['n_images']:,} | {row['forward_img_per_s']:,.0f} | "
            f"{row['end_to_end_img_per_s_best']:,.0f} | {row['ratio_best']:.2f}x | "
            f"{row['exposed_per_dataset_s_best']:.3f} | {plan['predicted_compute_s']:.1f} "
            f"({plan['images_per_s']:,.0f}, {plan['source']}) | {plan['measured_span_s']:.1f} | "
            f"{plan['measured_over_predicted']:.2f} |"
        )
    return lines


def loader_lines(loader: dict, budget: dict) -> list[str]:
    """The decoded loader alone (img/s by input size) and the CPU budget per image."""
    lines = [""]
    if "sizes" in loader:
        lines.append(
            "Decoded loader alone ("
            + loader.get("device", "")
            + "), img/s best (median): "
            + ", ".join(
                f"{size} px {r['pipeline']['best']:,.0f} ({r['pipeline']['median']:,.0f})"
                for size, r in loader["sizes"].items()
            )
        )
    else:
        lines.append(f"Decoded loader alone: not measured ({loader.get('error')})")
    if "best" in budget:
        steps = ", ".join(f"{k} {v:.1f}" for k, v in budget["best"].items())
        lines.append(
            f"CPU work per image, us ({budget['cpu_count']} cores): {steps}; sum {budget['sum_best_us']:.1f}, "
            f"/ {budget['node_cores']} cores {budget['per_core_best_us']:.2f} (budget {budget['budget_us']:.2f})"
        )
    else:
        lines.append(f"CPU budget: not measured ({budget.get('error')})")
    return lines


def markdown(
    rows: list[dict],
    tests: list[dict],
    device: str,
    command: str,
    startups: list[dict] = (),
    loader: dict | None = None,
    budget: dict | None = None,
) -> str:
    lines = [f"GPU check on {device or 'unknown device'}: `{command}`", ""]
    lines += group_lines(rows)
    lines += ["", f"Goal: end to end >= {GOAL_RATIO}x forward for each model.", ""]
    lines += loader_lines(loader or {}, budget or {})
    lines += ["", "CUDA-only tests: " + (", ".join(f"{t['name']} {t['outcome']}" for t in tests) or "no report")]
    lines += startup_lines(list(startups))
    return "\n".join(lines) + "\n"


def load_json(path: Path) -> dict:
    """A benchmark's JSON, or a record naming the missing file."""
    return json.loads(path.read_text()) if path.exists() else {"error": f"no {path.name}"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out"))
    parser.add_argument("--command", default="bash benchmarks/gpu_check.sh")
    parser.add_argument("--device", default="cuda", help="the device the throughput JSONs were measured on")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [load_result(args.out, "group_job", model, args.device) for model in CHECK_MODELS]
    loader = load_json(args.out / f"loader_{args.device}.json")
    budget = load_json(args.out / "cpu_budget.json")
    startups = [load_result(args.out, "job_startup", model, args.device) for model in STARTUP_MODELS]
    device_file = args.out / "gpu_check_device.txt"
    device = device_file.read_text().strip() if device_file.exists() else ""
    tests = test_results(args.out / "gpu_check_tests.xml")
    (args.out / "gpu_check.json").write_text(
        json.dumps(
            {
                "device": device,
                "command": args.command,
                "models": rows,
                "cuda_tests": tests,
                "goal_ratio": GOAL_RATIO,
                "job_startup": startups,
                "loader": loader,
                "cpu_budget": budget,
            },
            indent=1,
        )
    )
    table = markdown(rows, tests, device, args.command, startups, loader, budget)
    (args.out / "gpu_check.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
