"""The layout docs/ARCHITECTURE.md describes: dependencies point one way (ui -> planner -> costmodel <-
executor), no module imports one that imports it back, torch only in costmodel's measuring code,
Streamlit only in the UI, and costmodel's top level stays small."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("costmodel", "planner", "executor", "ui")


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, *, top_level_only: bool) -> set[str]:
    """Absolute names of what `path` imports (every `from X import a` also yields `X.a`)."""
    mod = _module(path).split(".")
    package = mod if path.name == "__init__.py" else mod[:-1]
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in (tree.body if top_level_only else ast.walk(tree)):
        if isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1] + [node.module or ""]).strip(".") \
                if node.level else (node.module or "")
            out |= {base} | {f"{base}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return out


FILES = {_module(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def test_no_module_imports_one_that_imports_it_back() -> None:
    graph = nx.DiGraph()
    for mod, path in FILES.items():
        graph.add_edges_from((mod, t) for t in _imports(path, top_level_only=False) if t in FILES and t != mod)
    cycles = [sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1]
    assert cycles == []


@pytest.mark.parametrize(("package", "forbidden"), [
    ("costmodel", ("planner", "executor", "ui", "streamlit")),
    ("planner", ("ui", "streamlit")),
    ("executor", ("planner", "ui", "streamlit")),
])
def test_dependencies_point_one_way(package: str, forbidden: tuple[str, ...]) -> None:
    """`planner.cli`, the one `paraplan` dispatcher, is the exception: it starts the app and the executor."""
    bad = {mod: sorted(t for t in _imports(path, top_level_only=False) if t.split(".")[0] in forbidden)
           for mod, path in FILES.items() if mod.split(".")[0] == package and mod != "planner.cli"}
    assert {m: t for m, t in bad.items() if t} == {}


def test_torch_only_in_the_measuring_code_of_costmodel() -> None:
    users = sorted(mod for mod, path in FILES.items() if mod.startswith("costmodel.")
                   and any(t.split(".")[0] == "torch" for t in _imports(path, top_level_only=False)))
    assert [m for m in users if not m.startswith("costmodel.calibration.profile")] == []


def test_costmodel_top_level_is_small_and_every_subpackage_says_what_it_holds() -> None:
    entries = [p for p in (ROOT / "costmodel").iterdir() if p.name != "__pycache__"]
    assert len(entries) <= 12, sorted(p.name for p in entries)
    for sub in (p for p in entries if p.is_dir() and (p / "__init__.py").is_file()):
        doc = ast.get_docstring(ast.parse((sub / "__init__.py").read_text()))
        assert doc, f"costmodel/{sub.name}/__init__.py has no docstring"
