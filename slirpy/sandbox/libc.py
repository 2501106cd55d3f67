"""The kernel calls the sandbox needs that Python's os module lacks: unshare, setns, mount,
umount2, sethostname and prctl(PR_SET_PDEATHSIG), through libc, with their flags.

Every other module of the package calls these wrappers, which turn a failed call into an
OSError (errno, strerror, path) as os does, rather than touching ctypes itself.
"""

from __future__ import annotations

import ctypes
import os


CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_BIND = 0x1000
MNT_DETACH = 2
MS_REC = 0x4000
MS_PRIVATE = 0x40000
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36

_libc = ctypes.CDLL(None, use_errno=True)
_libc.unshare.argtypes = [ctypes.c_int]
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]


def unshare(flags: int) -> None:
    if _libc.unshare(flags) != 0:
        e = ctypes.get_errno()
        from slirpy import doctor      # here: its imports would cost every start-up
        raise doctor.NamespaceError(e, f"cannot create namespaces (unshare user+net+mount+pid): {os.strerror(e)}")


def sethostname(name: str) -> None:
    raw = name.encode()
    if _libc.sethostname(raw, len(raw)) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"sethostname: {os.strerror(e)}")


def mount(source: str | None, target: str, fstype: str | None, flags: int) -> None:
    enc = (lambda s: s.encode() if s is not None else None)
    if _libc.mount(enc(source), enc(target), enc(fstype), flags, None) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), target)


def umount_detached(target: str) -> None:
    """umount2(MNT_DETACH); a failure is ignored."""
    _libc.umount2(target.encode(), MNT_DETACH)


def set_pdeathsig(sig: int) -> None:
    if _libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"prctl(PR_SET_PDEATHSIG): {os.strerror(e)}")


def set_child_subreaper() -> None:
    """Orphaned descendants become our children (not init's); kept across execve."""
    if _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(e)}")


def setns_fd(fd: int, nstype: int) -> None:
    """Join the namespace open at `fd`; OSError (errno, strerror) on failure."""
    if _libc.setns(fd, nstype) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def setns(path: str, nstype: int) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, nstype) != 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e), path)
    finally:
        os.close(fd)
