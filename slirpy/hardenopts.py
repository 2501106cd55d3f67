"""What `slirpy run` says about hardening before it starts the sandbox: the options and the error.

Kept apart from harden.py, which loads ctypes and the C library's functions at import: the
command of `slirpy run` waits for what is imported before its sandbox starts, and harden.py is
needed only once the sandbox's child is at work (launch.py imports it then, in parallel).
"""

from __future__ import annotations


class HardenError(Exception):
    """A hardening step failed; str() names the step and the kernel's reason."""


class HardenOptions:
    """How to harden the serving process (harden.harden).  Read-only once made.

    A plain class, not a frozen dataclass: a hardened `slirpy run` makes one before its command
    starts, and a dataclass's generated methods cost their compilation when this is imported."""

    __slots__ = ("sandbox", "seccomp", "no_new_privs", "keep_dirs", "proc_dirs")
    sandbox: bool                 # own mount namespace with /etc and /run only; capabilities dropped
    seccomp: bool                 # the allow-list of seccompfilter.py (implies no_new_privs)
    no_new_privs: bool
    keep_dirs: tuple[str, ...]    # more host directories, visible at their own path
    proc_dirs: tuple[str, ...]    # /proc directories kept as fds (see Hardened.dir_fds)

    def __init__(self, sandbox: bool = True, seccomp: bool = True, no_new_privs: bool = True,
                 keep_dirs: tuple[str, ...] = (), proc_dirs: tuple[str, ...] = ()) -> None:
        init = object.__setattr__       # past our own __setattr__, which refuses
        init(self, "sandbox", sandbox)
        init(self, "seccomp", seccomp)
        init(self, "no_new_privs", no_new_privs)
        init(self, "keep_dirs", keep_dirs)
        init(self, "proc_dirs", proc_dirs)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"HardenOptions is read-only (cannot set {name})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"HardenOptions is read-only (cannot delete {name})")

    def __repr__(self) -> str:
        return f"HardenOptions({', '.join(f'{k}={getattr(self, k)!r}' for k in self.__slots__)})"
