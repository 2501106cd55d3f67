"""pyseccomp (libseccomp's binding), imported without running `ldconfig` twice.

pyseccomp finds libc and libseccomp with `ctypes.util.find_library` when it is imported, and on
Linux that runs `ldconfig -p` in a subprocess for each: ~6 ms of the ~7 its import takes here,
on the way to a hardened sandbox's command (launch.py, before the release) and to slirp4netns
mode's seccomp filter.  `load` answers those two lookups with the libraries' sonames when the
dynamic loader opens them by that name (as find_library's answer would be opened), and asks the
real find_library for anything else and whenever a soname does not load (musl, an odd
install).  Nothing else of pyseccomp changes.  Its import sees a stand-in ctypes.util holding
only that find_library (standin.import_with), and the module that was there before is back
afterwards: the real ctypes.util is imported only if a soname does not load (it imports
subprocess, shutil and tempfile: ~3 ms more, made while a hardened `slirpy run`'s sandbox sets
up tap0, which they outlasted).
"""

from __future__ import annotations

import sys

from . import standin

TYPE_CHECKING = False   # typing's, without importing typing (slirp4netns mode imports this early)
if TYPE_CHECKING:  # pragma: no cover
    from types import ModuleType

# The stable sonames (libseccomp's has been .2 since 2012, glibc's .6 for decades).
SONAMES = {"c": "libc.so.6", "seccomp": "libseccomp.so.2"}


def load() -> ModuleType:
    """The pyseccomp module (imported now if it was not).  Raises what its import raises
    (ImportError; RuntimeError when libseccomp is not found; OSError when it cannot be loaded)."""
    mod = sys.modules.get("pyseccomp")
    if mod is not None:
        return mod
    import ctypes
    import types

    before = sys.modules.get("ctypes.util")     # the real module, if something imported it
    stand_in = types.ModuleType("ctypes.util")

    def find_library(name: str) -> str | None:
        soname = SONAMES.get(name)
        if soname is not None:
            try:
                ctypes.CDLL(soname)
            except OSError:
                pass
            else:
                return soname
        # the real module, imported now if need be (~3 ms: subprocess, shutil, tempfile), and kept
        real = before if before is not None else standin.real("ctypes.util", stand_in)
        return real.find_library(name)

    setattr(stand_in, "find_library", find_library)
    return standin.import_with("pyseccomp", {"ctypes.util": stand_in})


def preload() -> None:
    """`load`, for a start-up's idle moment (while a child sets up the TAP): a failure is left
    for harden.before_loop to report, which loads the binding again."""
    try:
        load()
    except (ImportError, RuntimeError, OSError):
        pass
