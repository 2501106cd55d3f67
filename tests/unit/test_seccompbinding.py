"""seccompbinding.load: pyseccomp imported without ldconfig, and find_library left as it was.

Each case runs in a fresh interpreter (pyseccomp's import is what is measured)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from slirpy import seccompbinding

PROBE = r"""
import ctypes.util, json, subprocess, sys
runs = []
real_popen = subprocess.Popen
class Recording(real_popen):
    def __init__(self, args, *a, **kw):
        runs.append(list(args) if not isinstance(args, str) else [args])
        super().__init__(args, *a, **kw)
subprocess.Popen = Recording
real = ctypes.util.find_library
from slirpy import seccompbinding
seccompbinding.SONAMES.update(EXTRA)
mod = seccompbinding.load()
again = seccompbinding.load()
print(json.dumps({"runs": runs, "restored": ctypes.util.find_library is real, "same": mod is again,
                  "binding": hasattr(mod, "SyscallFilter"), "libseccomp": mod._libseccomp_path}))
"""


def probe(extra: dict, script: str = PROBE) -> dict:
    out = subprocess.run([sys.executable, "-c", f"EXTRA = {extra!r}\n{script}"], capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out.splitlines()[-1])


def test_the_sonames_load_and_no_ldconfig_runs():
    r = probe({})
    assert r == {"runs": [], "restored": True, "same": True, "binding": True, "libseccomp": "libseccomp.so.2"}


def test_a_soname_that_does_not_load_is_found_the_usual_way():
    r = probe({"seccomp": "libseccomp.so.999"})
    assert r["runs"], "find_library asked ldconfig (or a compiler)"
    assert r["libseccomp"] not in (None, "libseccomp.so.999") and "seccomp" in r["libseccomp"]
    assert r["restored"] and r["binding"]


@pytest.mark.parametrize("error", [ImportError("no pyseccomp"), RuntimeError("Unable to find libseccomp"),
                                   OSError("file too short")])
def test_preload_leaves_a_failure_to_before_loop(monkeypatch, error):
    def fail():
        raise error
    monkeypatch.setattr(seccompbinding, "load", fail)
    assert seccompbinding.preload() is None


STAND_IN_PROBE = r"""
import json, sys
from slirpy import seccompbinding
seccompbinding.SONAMES.update(EXTRA)
mod = seccompbinding.load()
import ctypes
util = sys.modules.get("ctypes.util")
print(json.dumps({"util_imported": util is not None, "attr": getattr(ctypes, "util", None) is util,
                  "real": util is not None and hasattr(util, "test"),
                  "subprocess": "subprocess" in sys.modules,
                  "binding": hasattr(mod, "SyscallFilter"), "libseccomp": mod._libseccomp_path}))
"""


def test_without_ctypes_util_imported_the_stand_in_leaves_nothing_behind():
    r = probe({}, STAND_IN_PROBE)
    assert r == {"util_imported": False, "attr": True, "real": False, "subprocess": False,
                 "binding": True, "libseccomp": "libseccomp.so.2"}


def test_without_ctypes_util_imported_a_soname_that_does_not_load_imports_the_real_one():
    r = probe({"seccomp": "libseccomp.so.999"}, STAND_IN_PROBE)
    assert r["util_imported"] and r["attr"] and r["real"] and r["binding"]
    assert r["libseccomp"] not in (None, "libseccomp.so.999") and "seccomp" in r["libseccomp"]
