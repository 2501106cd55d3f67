"""slirpy: rootless userspace networking for Linux network namespaces."""

__version__ = "0.1.0"

import os as _os  # noqa: E402  (already imported by the interpreter: free)

if _os.environ.get("SLIRPY_PURE", "") not in ("", "0"):  # run the .py even where compiled
    from . import native as _native
    _native.install_pure_finder()
