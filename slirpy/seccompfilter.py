"""The seccomp allow-list of the hardened runtime process (harden.py step 4), built and loaded
with libseccomp through the pyseccomp binding: no hand-written BPF.

Why an allow-list: a deny-list (slirp4netns's) misses whatever its authors did not think of;
the runtime's needs are few and known. How it was derived: `helpers/seccomp-trace` runs a
hardened `slirpy run` (filter off) under `strace -f` through TCP, UDP and ping of both
families, DNS over UDP and TCP to both forwarders, a resolv.conf change, published ports (TCP
over IPv4 and IPv6, UDP), `-p auto`, every API command (port add/ls/rm, stats, flows, pcap
start and stop, a pcap start refused over a file that is not a capture), `--impair`,
`--stats-file`, SIGTERM passed on to the command, and the exit, and prints every call the runtime made after hardening (perf/NOTES.md "seccomp allow-list" has
the counts). Every call it saw is below; the few others are marked `+` with their reason.

================  ===========================================================================
who               calls
================  ===========================================================================
event loop        epoll_pwait epoll_ctl; + epoll_wait (the same on other libuv builds)
                  sched_yield (busy polling gives the CPU to any task that wants it: busypoll.py)
                  + poll ppoll (proxy/tcp.eof_next: has a host socket's FIN come? ppoll where
                  the architecture has no poll)
TAP, pipes, fds   read write writev ioctl fcntl close lseek pread64 (pcap_start reading an
                  existing file's header)
host sockets      socket (AF_INET, AF_INET6, AF_UNIX only) connect bind listen accept4
                  sendto recvfrom sendmsg recvmsg shutdown getsockopt setsockopt getsockname
                  getpeername socketpair
files             openat newfstatat getdents64 ftruncate unlink rename (resolv.conf re-reads,
                  pcap files, the fd count of `slirpy stats` and `-p auto`'s tables through
                  kept directory fds, the API socket and the stats file at exit); + fstat
                  statx unlinkat renameat renameat2 (the same calls in other libc versions and
                  architectures)
memory            brk munmap madvise (malloc_trim when idle); + mmap mremap mprotect (the
                  allocators under load: Python's arenas, glibc's blocks past its thresholds)
signals, process  rt_sigaction rt_sigreturn pidfd_send_signal (passing signals on to the
                  command) wait4 (reaping it) getpid futex exit_group; + rt_sigprocmask
                  (libuv masks signals around its handlers) restart_syscall (the kernel's own
                  restart of an interrupted call) getrandom clock_gettime (the vDSO's fallback)
================  ===========================================================================

The networks' router (networks/router.py) runs under this same list, unchanged: what it does
beyond a `slirpy run` runtime is a unix control socket (socket, bind, listen, accept4, read,
write), requests to its plumber over a socketpair made before hardening (sendto, recvfrom) and
an events pipe watched by the loop (read, epoll_ctl). The plumber, an unhardened child, does
what the list forbids (the registry's flock, the keeper, setns() children for bridges and nft,
pidfd_open of members), so no call was added for the router.

Anything else (execve, clone/fork, ptrace, mount, unshare, setns, open_by_handle_at, bpf,
keyctl, io_uring_*, ...) traps: the kernel sends SIGSYS before the call runs, and the handler
writes one line naming the call to stderr and ends the process with status 159 (128 + SIGSYS).
The handler is a ctypes callback because only a C-level handler runs at once: a Python-level
one would run later, after the call had returned an error to whoever made it. Only write and
exit_group run after the trap.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

from .seccompbinding import load as load_binding

EXIT_STATUS = 128 + 31      # as if killed by SIGSYS
SIGSYS = 31
SA_SIGINFO = 4
SOCKET_FAMILIES = (1, 2, 10)     # socket() is allowed for AF_UNIX, AF_INET, AF_INET6 only

# The module docstring's table, in its order (names this architecture lacks, such as
# epoll_wait and rename on arm64, are skipped).
ALLOWED = (
    # event loop
    "epoll_pwait", "epoll_ctl", "epoll_wait", "sched_yield", "poll", "ppoll",
    # TAP, pipes, fds
    "read", "write", "writev", "ioctl", "fcntl", "close", "lseek", "pread64",
    # host sockets
    "socket", "connect", "bind", "listen", "accept4", "sendto", "recvfrom", "sendmsg",
    "recvmsg", "shutdown", "getsockopt", "setsockopt", "getsockname", "getpeername", "socketpair",
    # files
    "openat", "newfstatat", "getdents64", "ftruncate", "unlink", "rename", "fstat", "statx",
    "unlinkat", "renameat", "renameat2",
    # memory
    "brk", "munmap", "mmap", "mremap", "madvise", "mprotect",
    # signals, process
    "rt_sigaction", "rt_sigreturn", "pidfd_send_signal", "wait4", "getpid", "futex",
    "exit_group", "rt_sigprocmask", "restart_syscall", "getrandom", "clock_gettime",
)


class Prepared:
    """The filter built (not loaded) and the names of the calls, for the SIGSYS handler.

    A plain class, not a dataclass: imported before a hardened `slirpy run`'s command is
    released (as harden.Hardened)."""

    __slots__ = ("filter", "names")

    def __init__(self, filter: Any, names: dict[int, str]) -> None:
        self.filter = filter
        self.names = names


def prepare(allowed: tuple[str, ...] = ALLOWED) -> Prepared:
    """Build the filter; loads libseccomp (before the root is emptied)."""
    pyseccomp = load_binding()

    arch = pyseccomp.system_arch()
    flt = pyseccomp.SyscallFilter(pyseccomp.TRAP)
    try:        # a binary tree over the call numbers instead of a linear list (libseccomp >= 2.5)
        flt.set_attr(pyseccomp.Attr.CTL_OPTIMIZE, 2)
    except OSError:
        pass
    names: dict[int, str] = {}
    for name in allowed:
        nr = pyseccomp.resolve_syscall(arch, name)
        if nr < 0:
            continue                     # not a call of this architecture
        if name == "socket":             # the families the runtime uses, no netlink, packet...
            for family in SOCKET_FAMILIES:
                flt.add_rule(pyseccomp.ALLOW, nr, pyseccomp.Arg(0, pyseccomp.EQ, family))
        else:
            flt.add_rule(pyseccomp.ALLOW, nr)
    for nr in range(600):                # names for the handler's message, looked up now
        try:
            names[nr] = pyseccomp.resolve_syscall(arch, nr).decode()
        except ValueError:
            continue
    return Prepared(flt, names)


def refuse_io_uring() -> None:
    """A first filter, loaded before the event loop exists: io_uring_setup fails with ENOSYS (as
    on a kernel without io_uring), everything else is allowed. See harden.before_loop."""
    import errno

    pyseccomp = load_binding()

    flt = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
    nr = pyseccomp.resolve_syscall(pyseccomp.system_arch(), "io_uring_setup")
    if nr >= 0:
        flt.add_rule(pyseccomp.ERRNO(errno.ENOSYS), nr)
        flt.load()


class _SigInfo(ctypes.Structure):
    _fields_ = [("signo", ctypes.c_int), ("errno", ctypes.c_int), ("code", ctypes.c_int),
                ("_pad", ctypes.c_int), ("call_addr", ctypes.c_void_p), ("syscall", ctypes.c_int),
                ("arch", ctypes.c_uint)]


_HANDLER = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.POINTER(_SigInfo), ctypes.c_void_p)


class _SigAction(ctypes.Structure):       # glibc's struct sigaction (x86_64, arm64)
    _fields_ = [("handler", _HANDLER), ("mask", ctypes.c_ulong * 16), ("flags", ctypes.c_int),
                ("restorer", ctypes.c_void_p)]


def message(nr: int, names: dict[int, str]) -> bytes:
    """The one line written when a forbidden call traps."""
    name = names.get(nr, "?")
    return (f"slirpy: seccomp: forbidden system call {name} ({nr}); the hardened network "
            f"process stops here (exit status {EXIT_STATUS})\n").encode()


def install(prepared: Prepared) -> object:
    """Install the SIGSYS handler, then load the filter. Returns the handler's ctypes callback,
    which must stay referenced for the life of the process."""
    names = prepared.names

    def on_sigsys(signo: int, info: Any, context: Any) -> None:
        os.write(2, message(info.contents.syscall, names))
        os._exit(EXIT_STATUS)

    callback = _HANDLER(on_sigsys)
    act = _SigAction()
    act.handler = callback
    act.flags = SA_SIGINFO
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.sigaction(SIGSYS, ctypes.byref(act), None) != 0:
        raise OSError(ctypes.get_errno(), "sigaction(SIGSYS)")
    prepared.filter.load()
    return callback
