"""Where a sandbox's network comes from (`SandboxOptions.net_mode`): the namespaces S enters for
each mode, and what it sets up in them besides tap0 (hostname, lo, its own /etc files).

    private  unshare user+net+mount+pid: tap0 served by slirpy (`slirpy run`'s default)
    none     unshare user+net+mount+pid: only lo, up
    host     unshare user+mount+pid: the user's own network namespace
    join     setns into a running sandbox's user, net and UTS namespaces, then unshare
             mount+pid (`--network sandbox:NAME`: a pod, a sidecar)
    member   setns into `userns_path` (a networks holder's), unshare net+mount+pid, then
             `member_setup()` plumbs the net namespace (named networks)

Each mode with `hostname` set (except join, which shares its target's) also gets a UTS
namespace of its own.  lo is brought up with two ioctls rather than pyroute2: importing pyroute2
costs more than the rest of a member's start-up, and these modes need nothing else from it.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct

from slirpy.sandbox.libc import (CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWUSER, CLONE_NEWUTS, sethostname,
                                 setns, setns_fd, unshare)
from slirpy.sandbox.options import NET_MODES, SandboxError, SandboxOptions
from slirpy.sandbox.resolv import bind_etc_files

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
_IFREQ = struct.Struct("16sh22x")      # struct ifreq: name, then ifr_flags in a 24-byte union


def writes_id_maps(mode: str) -> bool:
    """Whether S's new user namespace gets maps (a mode that joins an existing one: no)."""
    return mode not in ("join", "member")


def enter(opts: SandboxOptions) -> None:  # pragma: no cover - runs in S
    """S: enter the namespaces of `opts.net_mode`.  Raises OSError or SandboxError."""
    mode = opts.net_mode
    if mode not in NET_MODES:
        raise SandboxError(f"unknown network mode {mode!r} (allowed: {', '.join(NET_MODES)})")
    uts = CLONE_NEWUTS if opts.hostname is not None and mode != "join" else 0
    if mode in ("private", "none"):
        unshare(CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWPID | uts)
    elif mode == "host":
        unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | uts)
    elif mode == "join":
        if opts.join_pid is None:
            raise SandboxError("network mode join needs the pid of a process to join")
        join(opts.join_pid)
        unshare(CLONE_NEWNS | CLONE_NEWPID)
    else:
        if opts.userns_path is None:
            raise SandboxError("network mode member needs a user namespace (userns_path)")
        try:
            setns(opts.userns_path, CLONE_NEWUSER)
        except OSError as e:
            raise SandboxError(f"cannot enter the user namespace {opts.userns_path}: {e.strerror}") from None
        unshare(CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWPID | uts)


def join(pid: int) -> None:  # pragma: no cover - runs in S
    """Enter the user, net and UTS namespaces of `pid` (those that are not already ours).

    Every namespace file is opened first: after setns(CLONE_NEWUSER), /proc/PID may look
    different to us.  A namespace that is already ours is skipped, since joining one owned by
    the initial user namespace (a `host` sandbox's net) would be refused."""
    fds: list[tuple[int, int]] = []
    try:
        for kind, flag in (("user", CLONE_NEWUSER), ("net", CLONE_NEWNET), ("uts", CLONE_NEWUTS)):
            path = f"/proc/{pid}/ns/{kind}"
            try:
                if os.stat(path).st_ino == os.stat(f"/proc/self/ns/{kind}").st_ino:
                    continue
                fds.append((os.open(path, os.O_RDONLY | os.O_CLOEXEC), flag))
            except OSError as e:
                raise SandboxError(f"cannot open {path} (has the sandbox ended?): {e.strerror}") from None
        for fd, flag in fds:
            try:
                setns_fd(fd, flag)
            except OSError as e:
                raise SandboxError(f"cannot join the sandbox's namespaces (pid {pid}): {e.strerror}") from None
    finally:
        for fd, _ in fds:
            os.close(fd)


def lo_up() -> None:  # pragma: no cover - runs in S
    """Bring lo up (the kernel gives it 127.0.0.1 and ::1).  Raises OSError."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        got = fcntl.ioctl(s, SIOCGIFFLAGS, _IFREQ.pack(b"lo", 0))
        flags = _IFREQ.unpack(got)[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, _IFREQ.pack(b"lo", flags | IFF_UP))


def prepare(opts: SandboxOptions) -> list[str]:  # pragma: no cover - runs in S
    """S, inside its namespaces with its mounts private: hostname, lo, /etc files.  Problems."""
    problems = []
    if opts.hostname is not None and opts.net_mode != "join":
        try:
            sethostname(opts.hostname)
        except OSError as e:
            problems.append(f"cannot set the hostname {opts.hostname!r}: {e.strerror}")
    if opts.net_mode in ("none", "member"):
        try:
            lo_up()
        except OSError as e:
            problems.append(f"cannot bring lo up: {e.strerror}")
    files = {}
    if opts.resolv_conf_text is not None:
        files["resolv.conf"] = opts.resolv_conf_text
    if opts.hosts_text is not None:
        files["hosts"] = opts.hosts_text
    if files:
        problem = bind_etc_files(files)
        if problem:
            problems.append(problem)
    return problems
