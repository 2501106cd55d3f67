"""No import cycles among slirpy's modules (issue 14, DESIGN §2: one-way dependencies).

Every import counts wherever it is written: at module level, inside a function, under
`if TYPE_CHECKING:`. A cycle hidden in a function body is still a cycle in the design (the
two modules cannot be understood, or split, one without the other).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "slirpy"


def module_name(path: Path) -> str:
    parts = ("slirpy",) + path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_only(tree: ast.AST) -> set[ast.AST]:
    """The import statements written under `if TYPE_CHECKING:` (annotations only)."""
    guarded: set[ast.AST] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING",
                                                                   "typing.TYPE_CHECKING"):
            for stmt in node.body:
                guarded.update(n for n in ast.walk(stmt) if isinstance(n, (ast.Import, ast.ImportFrom)))
    return guarded


def imports_of(name: str, source: str, known: set[str], is_package: bool) -> dict[str, bool]:
    """The slirpy modules that `source` (module `name`) imports, anywhere in the file, each
    with whether every import of it is a type-only one (under `if TYPE_CHECKING:`).
    `from X import y` counts as an import of X.y when that is a module, else of X."""
    here = name if is_package else name.rpartition(".")[0]
    tree = ast.parse(source)
    type_only = _type_checking_only(tree)
    found: dict[str, bool] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                base = f"{anchor}.{base}" if base else anchor
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                       for alias in node.names]
        else:
            continue
        for target in targets:
            # `import slirpy.a.b` names slirpy.a.b; fall back to the nearest known parent.
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found[target] = found.get(target, True) and node in type_only
    return found


def import_graph() -> dict[str, dict[str, bool]]:
    """module -> {imported slirpy module: type-only}"""
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path.read_text(), known, path.name == "__init__.py")
            for name, path in mods.items()}


def without(graph: dict[str, dict[str, bool]], edges: Iterable[tuple[str, str]]) -> dict[str, set[str]]:
    drop = set(edges)
    return {a: {b for b in targets if (a, b) not in drop} for a, targets in graph.items()}


def find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None (depth-first search, three colours)."""
    state: dict[str, int] = {}          # absent: unseen, 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle is not None:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle is not None:
                return cycle
    return None


# The one exception, left for the owners of slirpy.tcpip.tcp: the connection's helper modules
# (segment arrival, transmission) annotate their argument as the TcpConnection that calls
# them. Only type-only edges may be listed here, and each must still exist.
TYPE_ONLY_BACK_EDGES = frozenset({
    ("slirpy.tcpip.tcp.arrival", "slirpy.tcpip.tcp.connection"),
    ("slirpy.tcpip.tcp.transmit", "slirpy.tcpip.tcp.connection"),
    ("slirpy.tcpip.tcp.timestamps", "slirpy.tcpip.tcp.connection"),
})


def test_the_graph_sees_slirpy_modules_and_their_imports():
    graph = import_graph()
    assert {"slirpy.cli", "slirpy.runtime", "slirpy.tcpip.stack", "slirpy.proxy.tcp"} <= set(graph)
    assert graph["slirpy.cli"]["slirpy.config"] is False
    assert "slirpy.tcpip.stack" in graph["slirpy.runtime"]


def test_no_import_cycles():
    cycle = find_cycle(without(import_graph(), TYPE_ONLY_BACK_EDGES))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("edge", sorted(TYPE_ONLY_BACK_EDGES), ids=lambda e: f"{e[0]}->{e[1]}")
def test_listed_exceptions_are_type_only_and_still_needed(edge):
    importer, imported = edge
    assert import_graph()[importer].get(imported) is True


@pytest.mark.parametrize("files, cycle", [
    ({"a.py": "from . import b\n", "b.py": "def f():\n    from .a import x\n"},
     ["slirpy.a", "slirpy.b", "slirpy.a"]),
    ({"a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .p.c import C\n",
      "p/__init__.py": "", "p/c.py": "from ..a import A\n"},
     ["slirpy.a", "slirpy.p.c", "slirpy.a"]),
    ({"a.py": "import slirpy.b\n", "b.py": "from slirpy import a\n"},
     ["slirpy.a", "slirpy.b", "slirpy.a"]),
    ({"a.py": "from . import b\n", "b.py": "import json\n"}, None),
])
def test_the_checker_finds_cycles_in_any_kind_of_import(tmp_path, monkeypatch, files, cycle):
    root = tmp_path / "slirpy"
    for rel, text in {"__init__.py": "", **files}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    monkeypatch.setitem(globals(), "PACKAGE", root)
    assert find_cycle(import_graph()) == cycle
