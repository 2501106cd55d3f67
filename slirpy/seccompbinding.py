"""pyseccomp (libseccomp's binding), imported without running `ldconfig` twice.

pyseccomp finds libc and libseccomp with `ctypes.util.find_library` when it is imported, and on
Linux that runs `ldconfig -p` in a subprocess for each: ~6 ms of the ~7 its import takes here,
on the way to a hardened sandbox's command (launch.py, before the release) and to slirp4netns
mode's seccomp filter.  `load` answers those two lookups with the libraries' sonames when the
dynamic loader opens them by that name (as find_library's answer would be opened), and asks the
real find_library for anything else and whenever a soname does not load (musl, an odd
install).  Nothing else of pyseccomp changes.  When nothing has imported ctypes.util yet, its
import sees a stand-in ctypes.util holding only that find_library (the real module imports
subprocess, shutil and tempfile: ~3 ms more, made while a hardened `slirpy run`'s sandbox
sets up tap0, which they outlasted); the real one is imported if a soname does not load.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False   # typing's, without importing typing (slirp4netns mode imports this early)
if TYPE_CHECKING:  # pragma: no cover
    from types import ModuleType
    from typing import Callable

# The stable sonames (libseccomp's has been .2 since 2012, glibc's .6 for decades).
SONAMES = {"c": "libc.so.6", "seccomp": "libseccomp.so.2"}


def load() -> ModuleType:
    """The pyseccomp module (imported now if it was not).  Raises what its import raises
    (ImportError; RuntimeError when libseccomp is not found; OSError when it cannot be loaded)."""
    mod = sys.modules.get("pyseccomp")
    if mod is not None:
        return mod
    import ctypes

    if "ctypes.util" in sys.modules:
        return _import_patching_find_library()
    # Not imported yet: pyseccomp's import gets a stand-in holding just find_library, and the
    # real module (~3 ms: it imports subprocess, shutil and tempfile) is imported only if a
    # soname does not load.
    import types

    stand_in = types.ModuleType("ctypes.util")

    def real_find_library(name: str) -> str | None:
        if sys.modules.get("ctypes.util") is stand_in:
            del sys.modules["ctypes.util"]
        import ctypes.util

        return ctypes.util.find_library(name)

    setattr(stand_in, "find_library", _quick(real_find_library))
    sys.modules["ctypes.util"], ctypes.util = stand_in, stand_in
    try:
        import pyseccomp
    finally:
        if sys.modules.get("ctypes.util") is stand_in:
            del sys.modules["ctypes.util"]
        if getattr(ctypes, "util", None) is stand_in:
            del ctypes.util
    return pyseccomp


def _import_patching_find_library() -> ModuleType:
    """pyseccomp imported with the imported ctypes.util's find_library answered by `_quick`."""
    import ctypes.util

    real = ctypes.util.find_library
    setattr(ctypes.util, "find_library", _quick(real))
    try:
        import pyseccomp
    finally:
        setattr(ctypes.util, "find_library", real)
    return pyseccomp


def _quick(real: Callable[[str], str | None]) -> Callable[[str], str | None]:
    """find_library answering with the soname when the dynamic loader opens it, else `real`'s."""
    import ctypes

    def find_library(name: str) -> str | None:
        soname = SONAMES.get(name)
        if soname is not None:
            try:
                ctypes.CDLL(soname)
            except OSError:
                pass
            else:
                return soname
        return real(name)
    return find_library


def preload() -> None:
    """`load`, for a start-up's idle moment (while a child sets up the TAP): a failure is left
    for harden.before_loop to report, which loads the binding again."""
    try:
        load()
    except (ImportError, RuntimeError, OSError):
        pass
