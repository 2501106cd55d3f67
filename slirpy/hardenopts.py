"""What `slirpy run` says about hardening before it starts the sandbox: the options and the error.

Kept apart from harden.py, which loads ctypes and the C library's functions at import: the
command of `slirpy run` waits for what is imported before its sandbox starts, and harden.py is
needed only once the sandbox's child is at work (launch.py imports it then, in parallel).
"""

from __future__ import annotations

from dataclasses import dataclass


class HardenError(Exception):
    """A hardening step failed; str() names the step and the kernel's reason."""


@dataclass(frozen=True)
class HardenOptions:
    """How to harden the serving process (harden.harden)."""

    sandbox: bool = True          # own mount namespace with /etc and /run only; capabilities dropped
    seccomp: bool = True          # the allow-list of seccompfilter.py (implies no_new_privs)
    no_new_privs: bool = True
    keep_dirs: tuple[str, ...] = ()   # more host directories, visible at their own path
    proc_dirs: tuple[str, ...] = ()   # /proc directories kept as fds (see Hardened.dir_fds)
