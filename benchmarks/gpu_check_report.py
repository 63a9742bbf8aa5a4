"""Collect benchmarks/gpu_check.sh's results into one JSON and one markdown table (a command, not a test).

    .venv/bin/python benchmarks/gpu_check_report.py --out benchmarks/out [--command "..."]

Reads ``throughput_{library}__{architecture}_cuda.json`` of the four check models,
``job_startup_{library}__{architecture}_cuda.json`` of the start-up models, ``gpu_check_device.txt``
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

#: The end-to-end goal, as a ratio to pure forward (issue 12, goal 6).
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
    lines = ["", "Fixed cost of one logits group job (fresh process; wall minus the job's own forward + write):", "",
             "| model | weights MB | datasets in the job | images | wall s | forward + write s | fixed s | "
             "interpreter s | imports s |", "|---|---|---|---|---|---|---|---|---|"]
    for startup in startups:
        if "jobs" not in startup:
            lines.append(f"| {startup['model']} | not measured ({startup['error']}) | | | | | | | |")
            continue
        for job in startup["jobs"]:
            lines.append(f"| {startup['model']} | {startup['weights_mb']:.0f} | {job['datasets']} | {job['images']:,} | "
                         f"{job['wall_s']:.2f} | {job['compute_s']:.2f} | {job['fixed_s']:.2f} | "
                         f"{job['interpreter_s']:.2f} | {job['imports_s']:.2f} |")
    return lines


def markdown(rows: list[dict], tests: list[dict], device: str, command: str, startups: list[dict] = ()) -> str:
    lines = [f"GPU check on {device or 'unknown device'}: `{command}`", "",
             "| model | forward img/s | reference | decoded, decode excluded | decode only | decoded, decode included |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        if "images_per_s" not in row:
            lines.append(f"| {row['model']} | not measured ({row['error']}) | | | | |")
            continue
        rate, ratio = row["images_per_s"], row["ratio_to_forward"]
        cells = [f"{rate[k]:,.0f} ({ratio[k]:.2f}x)" for k in ("reference", "decoded (decode excluded)")]
        cells += [f"{rate['decode only']:,.0f}", f"{rate['decoded (decode included)']:,.0f} "
                  f"({ratio['decoded (decode included)']:.2f}x)"]
        lines.append(f"| {row['model']} | {rate['forward']:,.0f} | " + " | ".join(cells) + " |")
    lines += ["", f"Goal: decoded (decode excluded) >= {GOAL_RATIO}x forward up to ViT-B-16 speed.", "",
              "CUDA-only tests: " + (", ".join(f"{t['name']} {t['outcome']}" for t in tests) or "no report")]
    lines += startup_lines(list(startups))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out"))
    parser.add_argument("--command", default="bash benchmarks/gpu_check.sh")
    parser.add_argument("--device", default="cuda", help="the device the throughput JSONs were measured on")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [load_result(args.out, "throughput", model, args.device) for model in CHECK_MODELS]
    startups = [load_result(args.out, "job_startup", model, args.device) for model in STARTUP_MODELS]
    device_file = args.out / "gpu_check_device.txt"
    device = device_file.read_text().strip() if device_file.exists() else ""
    tests = test_results(args.out / "gpu_check_tests.xml")
    (args.out / "gpu_check.json").write_text(json.dumps({"device": device, "command": args.command, "models": rows,
                                                         "cuda_tests": tests, "goal_ratio": GOAL_RATIO,
                                                         "job_startup": startups}, indent=1))
    table = markdown(rows, tests, device, args.command, startups)
    (args.out / "gpu_check.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
