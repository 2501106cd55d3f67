"""slirpy/nativewaiter.py: whether a light run uses the native waiter, which compilers the build
tries, a build that works and one that cannot, and that helpers/test's compiled pass has it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from slirpy import nativewaiter


def _fake_binary(directory: str, mode: int = 0o755) -> str:
    path = nativewaiter.binary_path(directory)
    with open(path, "w") as f:
        f.write("#!/bin/sh\n")
    os.chmod(path, mode)
    return path


def _unpure() -> dict[str, str]:
    """This environment without SLIRPY_PURE (which build() obeys, as setup.py does)."""
    return {k: v for k, v in os.environ.items() if k != "SLIRPY_PURE"}


def test_a_built_executable_waiter_is_used(tmp_path):
    path = _fake_binary(str(tmp_path))
    assert nativewaiter.to_use({}, str(tmp_path)) == path
    assert nativewaiter.to_use({"SLIRPY_PURE": "0"}, str(tmp_path)) == path


def test_slirpy_pure_or_a_missing_or_unusable_binary_means_the_python_waiter(tmp_path):
    assert nativewaiter.to_use({}, str(tmp_path)) is None                  # not built
    _fake_binary(str(tmp_path))
    assert nativewaiter.to_use({"SLIRPY_PURE": "1"}, str(tmp_path)) is None
    os.chmod(nativewaiter.binary_path(str(tmp_path)), 0o644)
    assert nativewaiter.to_use({}, str(tmp_path)) is None                  # not executable
    other = tmp_path / "d"
    os.makedirs(nativewaiter.binary_path(str(other)))
    assert nativewaiter.to_use({}, str(other)) is None                     # a directory


def test_compilers_musl_first_then_static_then_dynamic(tmp_path, monkeypatch):
    for name in ("musl-gcc", "mycc"):
        os.rename(_fake_binary(str(tmp_path)), tmp_path / name)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert nativewaiter.compilers({"CC": "mycc -m64"}) == [
        ["musl-gcc", "-static"], ["mycc", "-m64", "-static"], ["mycc", "-m64"]]
    os.unlink(tmp_path / "musl-gcc")
    assert nativewaiter.compilers({"CC": "mycc"}) == [["mycc", "-static"], ["mycc"]]
    assert nativewaiter.compilers({"CC": "nonexistent-cc"}) == []


def test_no_compiler_or_slirpy_pure_builds_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert nativewaiter.why_not_built({"CC": "nonexistent-cc"}) == "no C compiler (install gcc)"
    assert nativewaiter.why_not_built({"SLIRPY_PURE": "1"}) == "SLIRPY_PURE is set"
    line = nativewaiter.build(str(tmp_path / "out"), environ={"CC": "nonexistent-cc"})
    assert line == "no native waiter: no C compiler (install gcc)"
    assert not (tmp_path / "out").exists()


def test_a_source_that_does_not_compile_leaves_no_binary_and_says_why(tmp_path):
    if not nativewaiter.compilers():
        pytest.skip("no C compiler here")
    bad = tmp_path / "bad.c"
    bad.write_text("this is not C\n")
    line = nativewaiter.build(str(tmp_path), source=str(bad), environ=_unpure())
    assert line.startswith(f"no native waiter: compiling {bad} failed (")
    assert os.listdir(tmp_path) == ["bad.c"]              # no binary, no temporary file left


def test_build_compiles_waiter_c_into_a_working_binary(tmp_path):
    if not nativewaiter.compilers():
        pytest.skip("no C compiler here")
    line = nativewaiter.build(str(tmp_path), environ=_unpure())
    assert line.startswith("native waiter built with "), line
    path = nativewaiter.binary_path(str(tmp_path))
    assert nativewaiter.to_use({}, str(tmp_path)) == path
    held = subprocess.run([path, "hold"], input=b"anything", timeout=30)   # EOF on stdin: exits 0
    assert held.returncode == 0
    shutil.copy(nativewaiter.SOURCE, tmp_path / "waiter.c")
    os.utime(tmp_path / "waiter.c", (1000, 1000))
    assert not nativewaiter.is_stale(str(tmp_path))
    os.utime(path, (0, 0))
    assert nativewaiter.is_stale(str(tmp_path))                        # older than its source


def test_a_compiled_pass_has_the_native_waiter_and_a_pure_pass_does_not_use_it():
    expect = os.environ.get("SLIRPY_EXPECT_BUILD")
    if expect is None:
        pytest.skip("not run by helpers/test (SLIRPY_EXPECT_BUILD unset)")
    used = nativewaiter.to_use()
    if expect == "compiled":
        assert used == nativewaiter.binary_path() and not nativewaiter.is_stale()
        assert nativewaiter.describe().startswith("native (")
    else:
        assert used is None and nativewaiter.describe().startswith("Python (sandbox/waiter.py)")


def test_the_version_line_names_the_waiter():
    out = subprocess.run([sys.executable, "-m", "slirpy", "--version"], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    assert f"waiter: {nativewaiter.describe()}" in out.splitlines()
