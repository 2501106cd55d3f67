"""Build hook: compile slirpy's hot modules with mypyc, or fall back to pure Python.

pyproject.toml holds everything else; this file only decides `ext_modules`.  The modules in
NATIVE_MODULES (the per-packet path) are compiled ahead of time with mypyc when a C compiler
and the Python headers are present; otherwise, or with SLIRPY_PURE=1 in the environment, the
package is built as plain Python.  A failing C build falls back to pure Python too (with a
warning), so `pip install .` never fails for want of a compiler.  The .py files are always
installed: Python imports an extension module before a .py of the same name, so a compiled
build runs the .so files and a pure one the sources.  `slirpy --version` says which ran.

Editable installs (`pip install -e .`) build the extensions in place, next to the sources:
after editing one of these modules, rebuild (helpers/test and helpers/demo do it when the
sources changed; by hand: `pip install -e .` again, or `SLIRPY_PURE=1 pip install -e .` and
delete the .so files to go pure).

The light run's waiter, slirpy/sandbox/waiter.c, is built here too (build_py), by
slirpy/nativewaiter.py: into the package for `pip install .`, next to the source for an
editable install; without a C compiler, or with SLIRPY_PURE=1, slirpy runs its Python fallback.
"""

from __future__ import annotations

import glob
import os
import shutil
import sys
import sysconfig
from typing import Any

from setuptools import Distribution, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

# Compiled, in one shared library: the pure TCP/IP core, and the runtime's per-packet path (the
# event loop's callbacks in runtime.py, the host-socket adapters of proxy/ and ports.py).
NATIVE_GLOBS = ["slirpy/tcpip/**/*.py", "slirpy/proxy/*.py", "slirpy/ports.py", "slirpy/runtime.py",
                "slirpy/busypoll.py"]
# The shared library's module name (inside the package, so editable installs find it too).
GROUP = "slirpy._native"


def _why_pure() -> str | None:
    """Why this build is pure Python, or None to compile."""
    if os.environ.get("SLIRPY_PURE", "") not in ("", "0"):
        return "SLIRPY_PURE is set"
    if sys.implementation.name != "cpython":
        return f"{sys.implementation.name} is not CPython"
    include = sysconfig.get_paths()["include"]
    if not os.path.exists(os.path.join(include, "Python.h")):
        return f"no Python headers ({include}/Python.h; install python3-dev)"
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        return f"no C compiler ({cc}; install gcc)"
    return None


def _native_sources() -> list[str]:
    """The modules to compile.  Package __init__ files stay Python: a compiled one computes
    its __path__ as if the shared library sat at the top level, not inside slirpy/."""
    found = (f for pattern in NATIVE_GLOBS for f in glob.glob(pattern, recursive=True))
    return sorted(f for f in found if os.path.basename(f) != "__init__.py")


class _build_ext_or_pure(build_ext):
    """build_ext that leaves a pure build behind, with a warning, if the C build fails."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # compiler errors come as several distutils types
            print(f"slirpy: compiling failed ({exc}); installing pure Python", file=sys.stderr)
            for ext in self.extensions:  # no shim may outlive the shared library it needs
                path = self.get_ext_fullpath(ext.name)
                if os.path.exists(path):
                    os.remove(path)
            self.extensions = []
            return
        self._stamp(self.get_outputs())

    def copy_extensions_to_source(self) -> None:  # editable installs and --inplace
        super().copy_extensions_to_source()
        build_py = self.get_finalized_command("build_py")
        self._stamp(self._get_inplace_equivalent(build_py, ext)[0] for ext in self.extensions)

    @staticmethod
    def _stamp(paths: Any) -> None:
        """setuptools leaves an extension whose C code did not change as it was; stamp each
        as built now, so that slirpy.native (doctor, helpers/test) can tell a module edited
        since the last build by its .py being newer than its extension."""
        for path in paths:
            if os.path.exists(path):
                os.utime(path)


def _nativewaiter() -> Any:
    """slirpy/nativewaiter.py, loaded by path: importing the slirpy package here is not wanted."""
    import importlib.util
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(here, "slirpy", "nativewaiter.py")
    spec = importlib.util.spec_from_file_location("_slirpy_nativewaiter", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _build_py_and_waiter(build_py):
    """build_py, then the native waiter: in the source tree for editable installs, else into
    the build directory (and so into the wheel).  A failed compile only warns."""

    def run(self) -> None:
        super().run()
        nativewaiter = _nativewaiter()
        if getattr(self, "editable_mode", False):
            dest = os.path.dirname(nativewaiter.SOURCE)
        else:
            dest = os.path.join(self.build_lib, "slirpy", "sandbox")
        print(f"slirpy: {nativewaiter.build(dest)}", file=sys.stderr)


class _Distribution(Distribution):
    """A wheel that holds the native waiter is a platform wheel, compiled modules or not."""

    def has_ext_modules(self) -> bool:
        return bool(super().has_ext_modules()) or _nativewaiter().why_not_built() is None


def _ext_modules() -> list[Any]:
    why = _why_pure()
    if why is not None:
        print(f"slirpy: building pure Python: {why}", file=sys.stderr)
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("slirpy: building pure Python: mypyc is not installed", file=sys.stderr)
        return []
    # The options come from pyproject's [tool.mypy]; only a part of slirpy is given here,
    # so its sections for the other modules are unused (not an error for this run).
    args = ["--no-warn-unused-configs", *_native_sources()]
    return list(mypycify(args, opt_level="3", group_name=GROUP))


setup(ext_modules=_ext_modules(), cmdclass={"build_ext": _build_ext_or_pure, "build_py": _build_py_and_waiter},
      distclass=_Distribution)
