"""Importing a module while one of its own imports is answered by a stand-in.

Start-up (issue 18): some modules import, at their top, a heavy one they use in a single
corner: pyseccomp calls `ctypes.util.find_library`, which runs `ldconfig` (seccompbinding.py).
`import_with` imports such a module with stand-ins in sys.modules (and, for a dotted name, on its
parent package) for the length of that import only: whatever was there before, or nothing, is
put back afterwards, so every later import gets the real module.  `real` is how a stand-in gets
the real module when it needs it after all.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False   # typing's, without importing typing (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from types import ModuleType


def real(name: str, stand_in: ModuleType) -> ModuleType:
    """The real module `name`, imported now if it is not (`stand_in` taken out of its place in
    sys.modules first, if it is still there: an import of `name` would return it)."""
    if sys.modules.get(name) is stand_in:
        del sys.modules[name]
    __import__(name)
    return sys.modules[name]


def import_with(module: str, stand_ins: dict[str, ModuleType]) -> ModuleType:
    """Import `module` (if it is not imported yet) with `stand_ins` ({name: module}) in place of
    those modules during its import; what was there before is restored, also if it fails."""
    found = sys.modules.get(module)
    if found is not None:
        return found
    saved: list[tuple[dict, str, object, ModuleType]] = []
    for name, stand_in in stand_ins.items():
        parent_name, _, leaf = name.rpartition(".")
        places: list[tuple[dict, str]] = [(sys.modules, name)]
        parent = sys.modules.get(parent_name) if parent_name else None
        if parent is not None:
            places.append((parent.__dict__, leaf))
        for namespace, key in places:
            saved.append((namespace, key, namespace.get(key), stand_in))
            namespace[key] = stand_in
    try:
        __import__(module)
        return sys.modules[module]
    finally:
        for namespace, key, before, stand_in in saved:
            if namespace.get(key) is stand_in:     # else the real module was imported meanwhile
                if before is None:
                    del namespace[key]
                else:
                    namespace[key] = before
