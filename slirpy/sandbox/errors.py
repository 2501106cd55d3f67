"""`SandboxError`, the one error every step of the package raises, in a module that imports
nothing: slirp4netns mode reaches its ready fd through `attach` and `handoff`, which raise it,
without importing `options` (its dataclass and the config module; perf/NOTES.md, "Start-up")."""

from __future__ import annotations


class SandboxError(Exception):
    """Starting the sandbox failed; str() is one line a user can act on."""
