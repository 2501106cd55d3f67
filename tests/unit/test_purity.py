"""slirpy.tcpip is pure: it imports only pure standard-library modules and itself.

The allow-list is deliberately short; adding to it is a design decision, not a fix.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TCPIP = Path(__file__).resolve().parents[2] / "slirpy" / "tcpip"

ALLOWED = frozenset({
    "__future__", "abc", "array", "bisect", "collections", "dataclasses", "enum", "functools",
    "heapq", "ipaddress", "itertools", "math", "numbers", "operator", "random", "re", "struct",
    "typing", "typing_extensions", "weakref", "zlib", "binascii", "hashlib", "hmac",
})
# Named explicitly so that a careless addition to ALLOWED is caught too.
FORBIDDEN = frozenset({
    "os", "socket", "time", "asyncio", "select", "selectors", "threading", "subprocess", "signal",
    "uvloop", "multiprocessing", "concurrent", "io", "sys", "fcntl", "ctypes", "mmap", "logging",
    "datetime", "pyroute2", "click", "scapy", "shutil", "pathlib", "tempfile", "builtins",
    "importlib", "secrets", "gc", "inspect", "warnings",
})


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """(lineno, top-level module or '.relative') for every import, anywhere in the file."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                found.append((node.lineno, "." * node.level + (node.module or "")))
            else:
                found.append((node.lineno, node.module or ""))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id in ("__import__", "eval", "exec", "open", "compile"):
            found.append((node.lineno, f"<call {node.func.id}>"))
    return found


def violations(source: str, depth: int = 0) -> list[str]:
    """`depth`: how many sub-packages below slirpy/tcpip/ the file sits (tcp/x.py: 1)."""
    bad = []
    for lineno, name in imported_modules(ast.parse(source)):
        if name.startswith("."):
            if len(name) - len(name.lstrip(".")) > depth + 1:
                bad.append(f"line {lineno}: relative import leaves slirpy.tcpip: {name}")
            continue
        top = name.split(".")[0]
        if name == "slirpy.tcpip" or name.startswith("slirpy.tcpip."):
            continue
        if top in FORBIDDEN or top not in ALLOWED:
            bad.append(f"line {lineno}: {name}")
    return bad


def tcpip_files() -> list[Path]:
    """Every module of slirpy.tcpip, sub-packages included."""
    return sorted(TCPIP.rglob("*.py"))


def depth(path: Path) -> int:
    return len(path.relative_to(TCPIP).parts) - 1


def test_there_are_modules_to_check():
    names = {p.name for p in tcpip_files()}
    assert {"__init__.py", "checksum.py", "tcp.py", "ipv4.py"} <= names


def test_allow_list_excludes_forbidden():
    assert not ALLOWED & FORBIDDEN


@pytest.mark.parametrize("path", tcpip_files(), ids=lambda p: str(p.relative_to(TCPIP)))
def test_tcpip_module_is_pure(path):
    assert violations(path.read_text(), depth(path)) == []


def test_subpackages_are_checked():
    # Every directory holding modules is a package whose files the walk above reaches.
    checked = {p.parent for p in tcpip_files()}
    dirs = {p.parent for p in TCPIP.rglob("*") if p.suffix in (".py", ".pyx", ".so")}
    assert dirs <= checked
    assert all((d / "__init__.py").is_file() for d in dirs)
    assert any(depth(p) for p in tcpip_files())


@pytest.mark.parametrize("source", ["from ...proxy import tcp", "from ... import config"])
def test_checker_catches_escape_from_subpackage(source):
    assert violations(source, depth=1) != []


def test_checker_allows_parent_from_subpackage():
    assert violations("from ..flow import FlowTable", depth=1) == []


@pytest.mark.parametrize("source", [
    "import os",
    "import os.path",
    "from os import path",
    "import socket, struct",
    "from time import monotonic",
    "import asyncio",
    "def f():\n    import select\n",
    "try:\n    import uvloop\nexcept ImportError:\n    pass\n",
    "from threading import Lock",
    "import subprocess",
    "import signal",
    "import scapy.all",
    "import slirpy.runtime",
    "from slirpy import config",
    "from .. import config",
    "from ..proxy import tcp",
    "import numpy",
    "m = __import__('os')",
    "open('/etc/passwd')",
])
def test_checker_catches(source):
    assert violations(source) != []


@pytest.mark.parametrize("source, at_depth", [
    ("from ... import config", 1),
    ("from ...proxy import tcp", 1),
    ("from .. import errors", 0),
])
def test_checker_catches_in_subpackages(source, at_depth):
    assert violations(source, at_depth) != []


@pytest.mark.parametrize("source", [
    "import struct",
    "from dataclasses import dataclass",
    "from __future__ import annotations",
    "from .errors import MalformedPacket",
    "from . import checksum",
    "from slirpy.tcpip.seqnum import seq_add",
    "import enum, heapq",
])
def test_checker_allows(source):
    assert violations(source) == []


@pytest.mark.parametrize("source", ["from ..errors import MalformedPacket", "from .. import seqnum"])
def test_checker_allows_in_subpackages(source):
    assert violations(source, 1) == []
