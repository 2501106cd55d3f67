"""Which build of slirpy runs: mypyc-compiled modules or pure Python, and the pure switch.

setup.py compiles the per-packet modules with mypyc when it can; each compiled module is an
extension file beside its .py, and Python imports the extension first.  This module says which
modules run compiled (`slirpy --version`, `slirpy doctor`), finds compiled files older than
their source (an editable install whose sources changed since the last build), and implements
SLIRPY_PURE=1 at run time: a finder, installed by slirpy/__init__.py before any submodule is
imported, that loads every slirpy module from its .py even where an extension exists, so one
install can run and test both builds (helpers/test, perf A/B).
"""

from __future__ import annotations

import importlib.machinery
import os
import sys
import sysconfig
from collections.abc import Sequence
from types import ModuleType

PURE_ENV = "SLIRPY_PURE"
_PACKAGE = "slirpy"
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def pure_requested(environ: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    """SLIRPY_PURE set to anything but empty or 0."""
    return environ.get(PURE_ENV, "") not in ("", "0")


class SourceFirstFinder:
    """A meta path finder for slirpy's submodules that knows only .py files (SLIRPY_PURE=1)."""

    def find_spec(self, name: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if not name.startswith(_PACKAGE + ".") or path is None:
            return None
        loaders = [(importlib.machinery.SourceFileLoader, importlib.machinery.SOURCE_SUFFIXES)]
        for entry in path:
            spec = importlib.machinery.FileFinder(entry, *loaders).find_spec(name)
            if spec is not None:
                return spec
        return None


def install_pure_finder() -> None:
    """Put SourceFirstFinder first on sys.meta_path (once)."""
    if not any(isinstance(f, SourceFirstFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, SourceFirstFinder())


def _extension_beside(source: str) -> str | None:
    stem = source[:-len(".py")]
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        if os.path.exists(stem + suffix):
            return stem + suffix
    return None


def compiled_modules(package_dir: str = _PACKAGE_DIR) -> dict[str, tuple[str, str]]:
    """Module name -> (source, extension file), for every slirpy module that has an extension
    beside its .py."""
    found: dict[str, tuple[str, str]] = {}
    for root, dirs, files in os.walk(package_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith(("_", ".")))
        rel = os.path.relpath(root, package_dir)
        prefix = _PACKAGE if rel == "." else _PACKAGE + "." + rel.replace(os.sep, ".")
        for name in sorted(files):
            if name.endswith(".py") and name != "__init__.py":
                source = os.path.join(root, name)
                ext = _extension_beside(source)
                if ext is not None:
                    found[f"{prefix}.{name[:-3]}"] = (source, ext)
    return found


def stale_modules(compiled: dict[str, tuple[str, str]]) -> list[str]:
    """Compiled modules whose .py changed after the extension was built (rebuild them)."""
    return [module for module, (source, ext) in compiled.items()
            if os.path.getmtime(source) > os.path.getmtime(ext)]


def built_in_place(package_dir: str = _PACKAGE_DIR) -> bool:
    """True for a source tree compiled in place (editable install), which can go stale; False
    for an installed wheel, whose files are unpacked in no particular order of time."""
    paths = sysconfig.get_paths()
    installed = {os.path.realpath(paths[k]) for k in ("purelib", "platlib")}
    return os.path.dirname(os.path.realpath(package_dir)) not in installed


def _packages(modules: Sequence[str]) -> str:
    """'slirpy.tcpip (41)'-style summary, by the second-level package."""
    counts: dict[str, int] = {}
    for m in modules:
        key = ".".join(m.split(".")[:2])
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{k} ({n})" if n > 1 else k for k, n in counts.items())


def describe() -> str:
    """One line: which build runs, and what a user must do about it if anything."""
    compiled = compiled_modules()
    if pure_requested():
        extra = f" ({len(compiled)} compiled modules installed, not used)" if compiled else ""
        return f"pure Python ({PURE_ENV}=1){extra}"
    if not compiled:
        return "pure Python (no compiled modules installed)"
    probe = next(iter(compiled))
    loaded = sys.modules.get(probe) or importlib.import_module(probe)
    where = "" if (loaded.__file__ or "").endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)) \
        else f"; but {probe} was imported from {loaded.__file__}"
    line = f"compiled with mypyc: {len(compiled)} modules: {_packages(list(compiled))}{where}"
    stale = stale_modules(compiled) if built_in_place() else []
    if stale:
        line += (f"; STALE: {len(stale)} .py files changed since the build ({stale[0]}...): "
                 f"rebuild with `pip install -e .`, or run pure with {PURE_ENV}=1")
    return line
