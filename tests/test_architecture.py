"""The package mirrors the DAG (docs/architecture.md): imports flow one way, datasets -> models -> logits ->
metrics -> figures/qc, production stages never import the demo, no subpackages import each other in a cycle, no
modules do either (inside a stage as well as between stages), and every module imports on its own."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "clip_robustness"

#: Position of each stage in the DAG: a stage may import only stages before it (and the shared glue).
STAGE_ORDER = {"datasets": 0, "models": 1, "logits": 2, "metrics": 3, "figures": 4, "qc": 4}
BESIDE = {"workflow", "demo", "resources"}


def subpackage_imports() -> dict[str, set[str]]:
    """``{subpackage: subpackages it imports}`` read from the source, top-level and function-level imports alike."""
    edges: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).parts
        if len(parts) < 2:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else ([alias.name for alias in node.names] if isinstance(node, ast.Import) else [])
            )
            for name in names:
                dotted = name.split(".")
                if dotted[0] == "clip_robustness" and len(dotted) > 1 and dotted[1] != parts[0]:
                    edges[parts[0]].add(dotted[1])
    return edges


def test_every_subpackage_is_a_stage_or_beside_them():
    found = {p.name for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith("__")}
    assert found <= set(STAGE_ORDER) | BESIDE, found - set(STAGE_ORDER) - BESIDE


def test_stages_import_only_earlier_stages():
    backwards = [
        (src, dst)
        for src, targets in subpackage_imports().items()
        if src in STAGE_ORDER
        for dst in targets
        if dst in STAGE_ORDER and STAGE_ORDER[dst] >= STAGE_ORDER[src]
    ]
    assert backwards == []


def test_production_stages_never_import_the_demo():
    assert [src for src, targets in subpackage_imports().items() if src in STAGE_ORDER and "demo" in targets] == []


def test_subpackages_import_each_other_without_cycles():
    edges = subpackage_imports()
    state: dict[str, str] = {}

    def cycle_from(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                return [*path, node, nxt]
            if nxt not in state and (found := cycle_from(nxt, [*path, node])):
                return found
        state[node] = "done"
        return None

    cycles = [c for node in sorted(edges) if node not in state and (c := cycle_from(node, []))]
    assert cycles == []


#: Module import circles known and owned elsewhere, each to be removed with its fix (not a licence for new ones):
#: none left.
KNOWN_CIRCLES: frozenset[frozenset[str]] = frozenset()


def module_name(path: Path) -> str:
    """The dotted name of a package source file (``pkg/__init__.py`` -> ``pkg``)."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> list[str]:
    return sorted(module_name(path) for path in PACKAGE.rglob("*.py"))


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The package modules ``path`` names in its imports, at the top level or inside functions alike. ``from a
    import b`` names ``a.b`` where that is a module, else ``a``; a module's parent packages are not counted (Python
    runs them first, but a package importing its own submodules is not a circle of the package's design)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module in modules:
            subs = {f"{node.module}.{alias.name}" for alias in node.names} & modules
            found |= subs or {node.module}
            if len(subs) < len(node.names):
                found.add(node.module)
    return found


def module_imports() -> dict[str, set[str]]:
    """``{module: package modules it imports}`` over the whole package."""
    modules = set(package_modules())
    return {module_name(path): imported_modules(path, modules) - {module_name(path)} for path in PACKAGE.rglob("*.py")}


def strongly_connected(edges: dict[str, set[str]]) -> list[set[str]]:
    """The groups of two or more modules that import each other, directly or around a circle (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set()
            while (member := stack.pop()) != node:
                group.add(member)
            group.add(node)
            if len(group) > 1:
                groups.append(group)

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return groups


def test_the_circle_finder_finds_a_circle_inside_a_stage_and_one_through_three_modules():
    edges = {"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"e"}, "e": {"c", "a"}, "f": {"a"}}
    assert sorted(map(sorted, strongly_connected(edges))) == [["a", "b"], ["c", "d", "e"]]


def test_the_import_reader_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text("def f():\n    from clip_robustness.models import build\n    import clip_robustness.qc\n")
    modules = {"clip_robustness.models", "clip_robustness.models.build", "clip_robustness.qc"}
    assert imported_modules(source, modules) == {"clip_robustness.models.build", "clip_robustness.qc"}


def test_no_modules_import_each_other_in_a_circle():
    circles = [sorted(group) for group in strongly_connected(module_imports()) if frozenset(group) not in KNOWN_CIRCLES]
    assert circles == []


#: Imports each module named on the command line in a fresh state of the package (third-party modules stay loaded, so
#: the whole package is checked in one interpreter, in seconds); prints {module: error} of those that fail.
_IMPORT_EACH = """
import importlib, json, sys, traceback
failed = {}
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m == "clip_robustness" or m.startswith("clip_robustness.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except BaseException:
        failed[name] = traceback.format_exc(limit=-3)
print(json.dumps(failed))
"""


def test_every_module_imports_on_its_own_in_a_fresh_interpreter():
    modules = [name for name in package_modules() if not name.endswith(".__main__")]  # scripts: they run on import
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_EACH, *modules],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=PACKAGE.parents[1],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {}
    assert len(modules) > 50  # the whole package was walked


# ---------------------------------------------------------------------------------------------- long functions

REPO = PACKAGE.parents[1]
#: Longest a function may run (def to last line, docstring included) without a reason written beside it: a comment
#: starting with LONG_FUNCTION_REASON in the three lines above its ``def`` (or decorators).
MAX_FUNCTION_LINES = 60
LONG_FUNCTION_REASON = "# Longer than 60 lines:"


def long_functions_without_reason(paths: list[Path]) -> list[str]:
    """``path:line name (n lines)`` of every function longer than MAX_FUNCTION_LINES with no reason above it."""
    found = []
    for path in paths:
        lines = path.read_text(encoding="utf-8").splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            length = node.end_lineno - node.lineno + 1
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            above = lines[max(0, start - 4) : start - 1]
            if length > MAX_FUNCTION_LINES and not any(line.strip().startswith(LONG_FUNCTION_REASON) for line in above):
                found.append(f"{path}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_the_long_function_finder_sees_a_long_function_and_its_reason(tmp_path):
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / "m.py").write_text(f"def short():\n    pass\n\n\ndef long():\n{body}")
    assert long_functions_without_reason([tmp_path / "m.py"]) == [f"{tmp_path / 'm.py'}:5 long (61 lines)"]
    (tmp_path / "m.py").write_text(f"{LONG_FUNCTION_REASON} one table in one place.\ndef long():\n{body}")
    assert long_functions_without_reason([tmp_path / "m.py"]) == []


def test_no_function_runs_past_60_lines_without_a_reason_beside_it():
    paths = [*PACKAGE.rglob("*.py"), *(REPO / "workflow" / "scripts").glob("*.py"), *(REPO / "benchmarks").glob("*.py")]
    assert long_functions_without_reason(sorted(paths)) == []


def test_common_smk_stays_wiring_of_at_most_250_lines():
    """Issue 21: the workflow's Python is input functions and wiring; logic lives in the package."""
    lines = (REPO / "workflow" / "rules" / "common.smk").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"common.smk has {len(lines)} lines: move logic into the package"


# ---------------------------------------------------------------------------------------------- a figure to its images

#: The rules between results/figures/calibration.png and the images, last to first (plot_calibration: the loop over
#: FIGURES in figures.smk).
CALIBRATION_CHAIN_RULES = (
    "aggregate_metrics",
    "compute_model_metrics",
    "cache_logits",
    "decode_images",
    "build_manifest",
)
MAX_CHAIN_FILES = 25


def chain_files() -> tuple[int, list[Path]]:
    """The stated count and the files of docs/architecture.md's "From a figure to its images" table, in order."""
    section = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8").split("## From a figure to its images")[1]
    stated = int(re.search(r"it is \*\*(\d+) files\*\*", section).group(1))
    rows = re.findall(r"^\| \d+ \| `([^`]+)` \|", section, re.M)
    return stated, [REPO / row for row in rows]


def test_the_figure_to_images_chain_in_the_docs_is_true_and_at_most_25_files():
    stated, files = chain_files()
    assert stated == len(files) == len(set(files)) <= MAX_CHAIN_FILES
    assert [f for f in files if not f.is_file()] == []
    rules = "".join(f.read_text(encoding="utf-8") for f in files if f.suffix == ".smk")
    assert "for figure in FIGURES:" in rules and 'f"plot_{figure.name}"' in rules
    assert [r for r in CALIBRATION_CHAIN_RULES if not re.search(rf"^rule {r}:", rules, re.M)] == []
    # every listed module is reached from a listed rule script through listed modules only
    modules = set(package_modules())
    listed = {module_name(f) for f in files if PACKAGE in f.parents}
    reached = set().union(*(imported_modules(f, modules) for f in files if f.parent.name == "scripts")) & listed
    frontier = set(reached)
    while frontier:
        frontier = (
            set().union(
                *(
                    imported_modules(PACKAGE.parent / (m.replace(".", "/") + ".py"), modules)
                    if (PACKAGE.parent / (m.replace(".", "/") + ".py")).is_file()
                    else imported_modules(PACKAGE.parent / m.replace(".", "/") / "__init__.py", modules)
                    for m in frontier
                )
            )
            & listed - reached
        )
        reached |= frontier
    assert listed - reached == set()
