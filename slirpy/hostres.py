"""Host resources the runtime sizes itself to: file descriptors and glibc's allocator.

Apart from runtime.py because none of it is about moving packets: it runs once at start-up
(or on an idle timer) and only talks to the C library and the kernel's limits.
"""

from __future__ import annotations

import os
import resource
from typing import Any, Callable

FD_RESERVE = 64     # fds kept for the TAP, pidfd, listeners, the API socket, logging...
IDLE_CHECK = 2.0    # seconds between checks for "no traffic": then freed memory goes back to the OS

# glibc mallopt() parameters
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_malloc() -> Callable[[], Any] | None:
    """Keep glibc from mmap()ing and unmapping every large buffer, return a trim function.

    Queued host data is kept as the chunks host reads returned (up to 256 KB each, see
    tcpip/sendbuf.py). With glibc's defaults such blocks come from mmap or from a heap top
    that is trimmed back to the OS again and again, so every host read pays page faults
    (perf/NOTES.md, "glibc malloc thresholds"). Large
    blocks are served from the heap and freed memory is kept while traffic flows; when the
    runtime sees no traffic it calls the returned `malloc_trim(0)` so that idle RSS drops
    again. Returns None where this is not glibc.
    """
    try:
        import ctypes
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    mallopt(_M_MMAP_THRESHOLD, 16 << 20)
    mallopt(_M_TRIM_THRESHOLD, 256 << 20)
    return lambda: trim(0)


def nofile_target(soft: int, hard: int) -> int:
    """The soft RLIMIT_NOFILE that raise_nofile_limit leaves in force for these limits when
    its setrlimit succeeds: the hard limit (an unlimited one counts as 2**20)."""
    inf = resource.RLIM_INFINITY
    if hard == inf:
        hard = 1 << 20
    if soft != inf and soft >= hard:
        return min(soft, hard)
    return hard


def raise_nofile_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = nofile_target(soft, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, target))
        except (ValueError, OSError):
            return soft
    return target


def fit_limits_to_fds(limits: Any, nofile: int, reserve: int = FD_RESERVE) -> Any:
    """`limits` with the TCP/UDP/ICMP flow caps lowered so their host sockets fit in `nofile`
    fds minus `reserve` (the same object when they already fit)."""
    budget = max(nofile - reserve, 16)
    tcp, udp, icmp = limits.max_tcp_flows, limits.max_udp_flows, limits.max_icmp_flows
    if tcp + udp + icmp <= budget:
        return limits
    icmp = min(icmp, max(budget // 16, 1))
    udp = min(udp, max(budget // 4, 1))
    tcp = max(budget - udp - icmp, 1)
    return limits.replace(max_tcp_flows=tcp, max_udp_flows=udp, max_icmp_flows=icmp,
                          max_half_open=min(limits.max_half_open, tcp))


def open_fds(fd_dir: int | None = None) -> int | None:
    """How many file descriptors this process has open (None where /proc is not mounted).
    `fd_dir`: an open directory fd of /proc/self/fd (a hardened runtime has no /proc)."""
    try:
        if fd_dir is not None:
            return len(os.listdir(fd_dir)) - 1        # minus listdir's own copy of fd_dir
        return len(os.listdir("/proc/self/fd")) - 1      # minus the one listdir itself holds
    except OSError:
        return None
