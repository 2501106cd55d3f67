"""The build that runs is the one asked for (issue 18): compiled modules really imported, or
pure Python everywhere with SLIRPY_PURE=1; and stale compiled files are found.

helpers/test sets SLIRPY_EXPECT_BUILD (compiled or pure) after building the venv, so a
compiled CI pass that silently ran the .py files fails here.
"""

from __future__ import annotations

import importlib.machinery
import json
import os
import subprocess
import sys

import pytest

from slirpy import native

EXT = tuple(importlib.machinery.EXTENSION_SUFFIXES)
HOT = ("slirpy.tcpip.stack", "slirpy.tcpip.tcp.connection", "slirpy.tcpip.iface.tcp",
       "slirpy.tcpip.wire.tcp")

PROBE = r"""
import importlib, json, sys
mods = [importlib.import_module(m) for m in sys.argv[1:]]
import slirpy.native
print(json.dumps({"files": [m.__file__ for m in mods], "describe": slirpy.native.describe()}))
"""


def probe(env: dict[str, str]) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, *HOT], capture_output=True, text=True,
                         check=True, env={**os.environ, **env}).stdout
    return json.loads(out)


def test_the_expected_build_runs() -> None:
    expect = os.environ.get("SLIRPY_EXPECT_BUILD")
    if expect is None:
        pytest.skip("SLIRPY_EXPECT_BUILD is set by helpers/test")
    files = [sys.modules.get(m) or __import__(m, fromlist=["_"]) for m in HOT]
    paths = [m.__file__ or "" for m in files]
    if expect == "compiled" and not native.pure_requested():
        assert all(p.endswith(EXT) for p in paths), paths
        compiled = native.compiled_modules()
        assert set(HOT) <= set(compiled)
        assert native.stale_modules(compiled) == []
        assert native.describe().startswith("compiled with mypyc: ")
    else:
        assert all(p.endswith(".py") for p in paths), paths
        assert native.describe().startswith("pure Python")


def test_slirpy_pure_imports_every_module_from_its_source() -> None:
    seen = probe({"SLIRPY_PURE": "1"})
    assert all(f.endswith(".py") for f in seen["files"]), seen
    assert seen["describe"].startswith("pure Python (SLIRPY_PURE=1)")


def test_without_slirpy_pure_a_compiled_module_is_the_one_imported() -> None:
    seen = probe({"SLIRPY_PURE": "0"})
    compiled = native.compiled_modules()
    for name, path in zip(HOT, seen["files"]):
        assert path.endswith(EXT) == (name in compiled), (name, path)


def test_compiled_modules_and_stale_ones_are_found(tmp_path) -> None:
    pkg = tmp_path / "slirpy"
    (pkg / "tcpip").mkdir(parents=True)
    for rel in ("__init__.py", "native.py", "tcpip/__init__.py", "tcpip/a.py", "tcpip/b.py"):
        (pkg / rel).write_text("")
    ext = EXT[0]
    (pkg / "tcpip" / f"a{ext}").write_bytes(b"")
    (pkg / "tcpip" / f"b{ext}").write_bytes(b"")
    os.utime(pkg / "tcpip" / "a.py", (1000, 1000))     # built after its source: current
    os.utime(pkg / "tcpip" / f"b{ext}", (1000, 1000))   # built before its source: stale
    found = native.compiled_modules(str(pkg))
    assert sorted(found) == ["slirpy.tcpip.a", "slirpy.tcpip.b"]
    assert found["slirpy.tcpip.a"] == (str(pkg / "tcpip" / "a.py"), str(pkg / "tcpip" / f"a{ext}"))
    assert native.stale_modules(found) == ["slirpy.tcpip.b"]


def test_only_a_tree_compiled_in_place_can_be_stale(tmp_path) -> None:
    import sysconfig
    assert native.built_in_place(str(tmp_path / "slirpy"))
    assert not native.built_in_place(os.path.join(sysconfig.get_paths()["platlib"], "slirpy"))


@pytest.mark.parametrize("value,pure", [("", False), ("0", False), ("1", True), ("yes", True)])
def test_pure_requested(value: str, pure: bool) -> None:
    assert native.pure_requested({"SLIRPY_PURE": value}) is pure
    assert native.pure_requested({}) is False
