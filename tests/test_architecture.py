"""The package mirrors the DAG (docs/architecture.md): imports flow one way, datasets -> models -> logits ->
metrics -> figures/qc, production stages never import the demo, and no subpackages import each other in a cycle."""

from __future__ import annotations

import ast
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
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else (
                [alias.name for alias in node.names] if isinstance(node, ast.Import) else [])
            for name in names:
                dotted = name.split(".")
                if dotted[0] == "clip_robustness" and len(dotted) > 1 and dotted[1] != parts[0]:
                    edges[parts[0]].add(dotted[1])
    return edges


def test_every_subpackage_is_a_stage_or_beside_them():
    found = {p.name for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith("__")}
    assert found <= set(STAGE_ORDER) | BESIDE, found - set(STAGE_ORDER) - BESIDE


def test_stages_import_only_earlier_stages():
    backwards = [(src, dst) for src, targets in subpackage_imports().items() if src in STAGE_ORDER
                 for dst in targets if dst in STAGE_ORDER and STAGE_ORDER[dst] >= STAGE_ORDER[src]]
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
