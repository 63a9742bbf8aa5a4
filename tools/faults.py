"""`make faults`: the fault matrix of both reliability rounds (issues 15 and 20) as one command.

Every fault (one row of tools/faults.tsv) is injected by the test that owns it (tests/test_fault_detection.py,
tests/test_recovery.py, tests/test_datasets_bad_input.py, tests/test_logits_cache.py, tests/test_cache_travels.py,
tests/test_slurm_toy.py, tests/test_slurm_faults.py): this command runs those tests, so the injection code is theirs
and nothing here copies it, and prints one line per fault:

    PASS  flipped archive bytes  | detected: yes | message: "checksum mismatch for archive imagenet-r.tar ..." |
          recovered by the same command: yes | wrong outputs left: none

A fault's test asserts each column it states, on real files and real runs: that the fault is detected (the run fails or
moves the file aside), the message (the text quoted is what the test matches), that the same command recovers
(``yes``: run again and compared with a clean run's outputs; ``n/a`` where the fault is a unit-level detection test,
whose recovery is the "rerun" line named), and that no output is left that a rerun could take for good. A fault whose
test fails prints ``FAIL`` with the test's own error, and the command exits 1.

Selections (``make faults FAULTS=...``): ``all`` (default), ``fast`` (the unit-level faults: seconds, no demo run; what
``tests/test_faults_command.py`` runs in CI), ``demo`` (injected into a finished demo run), ``slurm`` (the cluster's
faults: needs the single-node test cluster, ``bash tests/slurm/cluster.sh up``), or fault names separated by commas.
Every fault's test also runs in CI as part of ``make test``.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


#: The fault matrix, one fault a row (data, not code: a new fault is one row naming the test that injects it).
TABLE = ROOT / "tools" / "faults.tsv"


@dataclass(frozen=True)
class Fault:
    name: str
    #: ``round1`` (issue 15) or ``round2`` (issue 20).
    round: str
    #: ``fast`` (unit level), ``demo`` (a finished demo run) or ``slurm`` (the test cluster).
    kind: str
    #: pytest node id (without parameters: every parameter must pass).
    test: str
    #: The message the test matches (quoted as the test asserts it).
    message: str
    #: True where the test runs the same command again and compares with a clean run; otherwise how it recovers.
    recovery: bool | str


def read_faults(path: Path = TABLE) -> tuple[Fault, ...]:
    """The faults of ``path`` (tab-separated, ``#`` comment lines, a header row: name, round, kind, test, message,
    recovered); ``recovered`` is ``yes`` or how the fault is recovered from."""
    lines = [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    faults = []
    for row in csv.DictReader(lines, delimiter="\t"):
        recovered = row["recovered"]
        faults.append(
            Fault(
                row["name"],
                row["round"],
                row["kind"],
                row["test"],
                row["message"],
                True if recovered == "yes" else recovered,
            )
        )
    return tuple(faults)


FAULTS = read_faults()


def select(selection: str) -> list[Fault]:
    """The faults of ``selection``: ``all``, a kind (``fast``, ``demo``, ``slurm``), a round (``round1``,
    ``round2``) or fault names separated by commas."""
    if selection == "all":
        return list(FAULTS)
    chosen = [f for f in FAULTS if selection in (f.kind, f.round)]
    if chosen:
        return chosen
    names = [name.strip() for name in selection.split(",") if name.strip()]
    unknown = [name for name in names if name not in {f.name for f in FAULTS}]
    if unknown:
        raise SystemExit(
            f"faults: unknown fault(s) {unknown}; choose all, fast, demo, slurm, round1, round2 or names "
            f"from: {', '.join(f.name for f in FAULTS)}"
        )
    return [f for f in FAULTS if f.name in names]


def run_tests(faults: list[Fault], pytest_args: list[str]) -> dict[str, list[tuple[str, str]]]:
    """Run the faults' tests in one pytest process; node id (parameters stripped) -> [(outcome, detail)]."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "faults.xml"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONHASHSEED": "0"}
        if any(f.kind == "slurm" for f in faults):
            env["CLIP_ROBUSTNESS_REQUIRE_SLURM"] = "1"  # a missing cluster fails these faults, never skips them
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "-n",
                "0",
                f"--junitxml={report}",
                *pytest_args,
                *[f.test for f in faults],
            ],
            cwd=ROOT,
            env=env,
            stdout=sys.stderr,
        )
        if not report.is_file():
            raise SystemExit("faults: pytest wrote no report (see its output above)")
        results: dict[str, list[tuple[str, str]]] = {}
        for case in ElementTree.parse(report).getroot().iter("testcase"):
            module = case.get("classname", "").replace(".", "/")
            node = f"{module}.py::{case.get('name', '').split('[')[0]}"
            problem = next((child for child in case if child.tag in ("failure", "error", "skipped")), None)
            outcome = "passed" if problem is None else problem.tag
            message = "" if problem is None else (problem.get("message") or "").strip()
            detail = message.splitlines()[0][:200] if message else ""
            results.setdefault(node, []).append((outcome, detail))
        return results


def line(fault: Fault, outcomes: list[tuple[str, str]]) -> tuple[bool, str]:
    passed = bool(outcomes) and all(outcome == "passed" for outcome, _ in outcomes)
    if not passed:
        why = next((f"{o}: {d}" for o, d in outcomes if o != "passed"), "not run")
        return False, f"FAIL  {fault.name:<42} | {fault.round} | test {fault.test} -> {why}"
    recovered = "yes" if fault.recovery is True else f"n/a ({fault.recovery})"
    return True, (
        f'PASS  {fault.name:<42} | {fault.round} | detected: yes | message: "{fault.message}" | '
        f"recovered by the same command: {recovered} | wrong outputs left: none"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "selection",
        nargs="?",
        default="all",
        help="all (default), fast, demo, slurm, round1, round2, or fault names separated by commas",
    )
    parser.add_argument("--list", action="store_true", help="list the faults and their tests, run nothing")
    args, pytest_args = parser.parse_known_args(argv)  # any other option is passed to pytest
    faults = select(args.selection)
    if args.list:
        for fault in faults:
            print(f"{fault.name:<42} {fault.round} {fault.kind:<5} {fault.test}")
        return 0
    results = run_tests(faults, pytest_args)
    lines = [line(fault, results.get(fault.test, [])) for fault in faults]
    print(f"faults: {sum(ok for ok, _ in lines)} of {len(lines)} handled ({args.selection})")
    for _, text in lines:
        print(text)
    return 0 if all(ok for ok, _ in lines) else 1


if __name__ == "__main__":
    sys.exit(main())
