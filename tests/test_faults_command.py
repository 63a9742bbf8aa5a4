"""`make faults` (tools/faults.py): every fault of both rounds names a test that exists, and the fast part of the matrix
(the unit-level faults, what CI runs of it: the rest runs in CI as the tests themselves) prints one handled line per
fault from a real run of those tests."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import faults  # noqa: E402


def test_every_fault_names_an_existing_test_and_every_kind_and_round_is_present():
    for fault in faults.FAULTS:
        path, _, name = fault.test.partition("::")
        functions = {
            node.name for node in ast.walk(ast.parse((ROOT / path).read_text())) if isinstance(node, ast.FunctionDef)
        }
        assert name in functions, fault
    assert {f.kind for f in faults.FAULTS} == {"fast", "demo", "slurm"}
    assert (
        sum(f.round == "round1" for f in faults.FAULTS) >= 16 and sum(f.round == "round2" for f in faults.FAULTS) >= 10
    )
    assert len({f.name for f in faults.FAULTS}) == len(faults.FAULTS)


def test_fast_faults_run_and_print_one_handled_line_per_fault():
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools/faults.py"), "fast"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    fast = faults.select("fast")
    lines = [line for line in result.stdout.splitlines() if line.startswith(("PASS", "FAIL"))]
    assert result.stdout.splitlines()[0] == f"faults: {len(fast)} of {len(fast)} handled (fast)"
    assert [line.split("|")[0][6:].strip() for line in lines] == [f.name for f in fast]
    assert all(
        line.startswith("PASS") and line.endswith("| wrong outputs left: none") and "detected: yes" in line
        for line in lines
    ), lines


def test_an_unknown_fault_name_is_refused_naming_the_choices():
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools/faults.py"), "flood"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode != 0 and "unknown fault(s) ['flood']" in result.stderr and "kill -9" in result.stderr
