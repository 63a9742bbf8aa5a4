"""A model library is known only to its adapter: no package code outside ``models/adapters/`` names or imports a library.

What counts: a string literal whose whole value is a library identifier (a key of ``ADAPTERS``, one of their pip
distributions, or add-model's hub prefix ``hf-hub``) anywhere in the package's Python code (compared with a row's
``library``, keyed by it, passed as it) or quoted in a workflow file. What does not: the same words inside longer
strings (messages, docstrings, comments), import statements (``import timm`` inside a function is the library's own
code, not a choice between libraries), and the first argument of ``package_file`` (a Python package whose shipped
data is read, not a model library). Allowed where they are: the adapters package and the registry data files.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

from clip_robustness.models.adapters import ADAPTERS, HUB_CLI_PREFIX

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "clip_robustness"
ADAPTERS_DIR = PACKAGE / "models" / "adapters"
#: Calls whose first argument names a Python package to read shipped data from.
PACKAGE_DATA_CALLS = frozenset({"package_file"})


def library_identifiers() -> frozenset[str]:
    distributions = {adapter.distribution for adapter in ADAPTERS.values() if adapter.distribution}
    return frozenset({*ADAPTERS, *distributions, HUB_CLI_PREFIX})


def _package_data_arguments(tree: ast.AST) -> set[int]:
    """``id`` of the string nodes that are the first argument of a :data:`PACKAGE_DATA_CALLS` call."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args:
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
            if name in PACKAGE_DATA_CALLS:
                found.add(id(node.args[0]))
    return found


def library_literals(source: str, names: frozenset[str]) -> list[tuple[int, str]]:
    """``(line, name)`` of each string literal of ``source`` (Python) whose whole value is one of ``names``."""
    tree = ast.parse(source)
    exempt = _package_data_arguments(tree)
    return sorted(
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value in names
        and id(node) not in exempt
    )


def python_code() -> list[Path]:
    files = [*PACKAGE.rglob("*.py"), *(ROOT / "workflow").rglob("*.py"), ROOT / "Snakefile"]
    return [path for path in files if not path.is_relative_to(ADAPTERS_DIR) and path.suffix == ".py"]


def test_the_finder_sees_a_comparison_a_key_and_an_argument_but_not_a_message_or_package_data():
    source = (
        'if row["library"] == "timm":\n    x = {"open_clip": 1}\n    f("hf-hub")\n'
        'y = "timm models are fine in a message"\nz = package_file("timm", "data/x.txt")\n'
    )
    assert library_literals(source, library_identifiers()) == [(1, "timm"), (2, "open_clip"), (3, "hf-hub")]


def test_no_library_name_outside_the_adapters_in_the_package_and_the_workflow_scripts():
    names = library_identifiers()
    found = {
        str(path.relative_to(ROOT)): hits
        for path in python_code()
        if (hits := library_literals(path.read_text(encoding="utf-8"), names))
    }
    assert found == {}


def test_no_library_name_quoted_in_the_workflow_files():
    quoted = re.compile("[\"'](" + "|".join(map(re.escape, sorted(library_identifiers()))) + ")[\"']")
    found = {
        str(path.relative_to(ROOT)): quoted.findall(path.read_text(encoding="utf-8"))
        for path in [ROOT / "Snakefile", *(ROOT / "workflow").rglob("*.smk")]
    }
    assert {path: hits for path, hits in found.items() if hits} == {}


#: Beside the stages: the demo trains its tiny models with the libraries themselves (never imported by a stage).
IMPORTS_ALLOWED = (ADAPTERS_DIR, PACKAGE / "demo")


def library_modules() -> frozenset[str]:
    """The top-level modules of the installed model libraries (the adapter table's names that are importable)."""
    return frozenset(name for name in ADAPTERS if importlib.util.find_spec(name) is not None)


def imported_libraries(source: str, libraries: frozenset[str]) -> list[tuple[int, str]]:
    """``(line, module)`` of each import of a module of ``libraries`` in ``source``, inside functions as well."""
    found = []
    for node in ast.walk(ast.parse(source)):
        names = (
            [alias.name for alias in node.names]
            if isinstance(node, ast.Import)
            else ([node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
        )
        found += [(node.lineno, name) for name in names if name.split(".")[0] in libraries]
    return sorted(found)


def test_the_libraries_are_the_installed_ones_of_the_table():
    assert library_modules() >= {"timm", "open_clip"}


def test_no_stage_module_outside_the_adapters_imports_a_model_library():
    libraries = library_modules()
    found = {
        str(path.relative_to(ROOT)): hits
        for path in PACKAGE.rglob("*.py")
        if not any(path.is_relative_to(allowed) for allowed in IMPORTS_ALLOWED)
        and (hits := imported_libraries(path.read_text(encoding="utf-8"), libraries))
    }
    assert found == {}
