"""`-p auto`: publish every port a program inside the sandbox binds, without knowing it in advance.

Why it exists: a developer who starts a dev server inside should not have to name its port
when starting the sandbox. The runtime sits outside the sandbox, but `/proc/PID/net/tcp`
(and tcp6, udp, udp6) of a process inside lists the sockets of that process's network
namespace, so the parent reads the sandbox's bound ports without entering it. PID is the
sandbox supervisor's (`Sandbox.pid`), which lives in the sandbox's namespaces as long as it.

Once a second (one loop timer, no thread) `AutoPorts` reads those tables, keeps the TCP
sockets in LISTEN and the UDP sockets bound with no peer, on a wildcard address or on the
sandbox's own address (loopback binds inside are not reachable through tap0, so they are
not published), and diffs the set of (protocol, port) against the previous one. A new port
is published on the same host port at `--publish-auto-addr` through `PortManager.add_forward`
(the API's path; the forward is marked auto), a vanished one is unpublished. Nothing else
happens while the set is unchanged.

Rules: an explicit forward (`-p`, `add_hostfwd`) of the same guest port wins; a host port
that cannot be bound (in use: `ports.auto.conflict`; other errors: `ports.auto.failed`) is
reported once and not retried until the guest closes that port and binds it again; an auto
forward removed through the API stays removed until the same. UDP ports in the kernel's
default ephemeral range (32768-60999, what a fresh namespace has) are skipped: an
unconnected UDP client's auto-bound port looks exactly like a server's.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from .config import AutoPublish, PortSpec
from .ports import PortError, host_port_text

if TYPE_CHECKING:  # pragma: no cover
    from .ports import PortManager

log = logging.getLogger("slirpy")

POLL_INTERVAL = 1.0             # seconds between two reads of the tables
TCP_LISTEN = b"0A"              # include/net/tcp_states.h: TCP_LISTEN
UDP_UNCONNECTED = b"07"         # TCP_CLOSE: a bound UDP socket that has not connect()ed
EPHEMERAL_PORTS = range(32768, 61000)   # net.ipv4.ip_local_port_range of a new namespace
MAX_TABLE_BYTES = 32 << 20      # read at most this much of one table (~200k sockets)
_READ_SIZE = 65536              # below glibc's mmap threshold (DESIGN §3)
V4, V6 = 1, 2                   # which table (family) a port was seen in

Key = tuple[str, int]           # (proto, guest port)


def proc_hex(addr: str) -> bytes:
    """`addr` as /proc/net/{tcp,udp}[6] print it: each 32-bit word in host byte order, in hex."""
    packed = ipaddress.ip_address(addr).packed
    words = (packed[i:i + 4] for i in range(0, len(packed), 4))
    return b"".join((w[::-1] if sys.byteorder == "little" else w).hex().upper().encode()
                    for w in words)


def eligible_addresses(guest: str, guest6: str | None) -> dict[bytes, int]:
    """Local addresses whose binds are published, in proc_hex form -> the family reaching them:
    the wildcards and the sandbox's addresses (and the IPv4 ones as IPv4-mapped IPv6)."""
    out = {proc_hex("0.0.0.0"): V4, proc_hex(guest): V4, proc_hex("::"): V6,
           proc_hex("::ffff:0.0.0.0"): V4, proc_hex("::ffff:" + guest): V4}
    if guest6 is not None:
        out[proc_hex(guest6)] = V6
    return out


def bound_ports(table: bytes, proto: str, eligible: Mapping[bytes, int]) -> dict[int, int]:
    """The ports of one /proc/net table (`proto` tcp or udp, either family) that a wildcard or
    sandbox address listens on (TCP) or is bound to with no peer (UDP) -> family bits."""
    state = TCP_LISTEN if proto == "tcp" else UDP_UNCONNECTED
    ports: dict[int, int] = {}
    for line in table.split(b"\n")[1:]:
        f = line.split(None, 4)
        if len(f) < 4 or f[3] != state:
            continue
        addr, _, port_hex = f[1].partition(b":")
        family = eligible.get(addr)
        if family is None or (proto == "udp" and not f[2].endswith(b":0000")):
            continue
        port = int(port_hex, 16)
        if proto == "udp" and port in EPHEMERAL_PORTS:
            continue
        ports[port] = ports.get(port, 0) | family
    return ports


def diff(old: Iterable[Key], new: Iterable[Key]) -> tuple[list[Key], list[Key]]:
    """(added, removed), each sorted."""
    before, after = set(old), set(new)
    return sorted(after - before), sorted(before - after)


def guest_addr_for(families: int, guest: str, guest6: str | None) -> str | None:
    """The forward's guest address: the family the port was bound in, when only one was (a
    UDP client of the other family would meet a closed port); None: the client's own."""
    if families == V4:
        return guest
    if families == V6 and guest6 is not None:
        return guest6
    return None


def read_proc_table(path: str, dir_fd: int | None = None) -> bytes:
    """One /proc/net table; b"" if it does not exist (no IPv6 in this kernel, process gone).
    With `dir_fd` (a hardened runtime's kept /proc/PID/net), `path` is relative to it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        return b""
    try:
        chunks = []
        size = 0
        while size < MAX_TABLE_BYTES:
            b = os.read(fd, _READ_SIZE)
            if not b:
                break
            chunks.append(b)
            size += len(b)
        return b"".join(chunks)
    finally:
        os.close(fd)


class AutoPorts:
    """Polls the sandbox's socket tables and keeps the auto forwards in step with them."""

    def __init__(self, ports: PortManager, auto: AutoPublish, pid: int,
                 counters: defaultdict[str, int],
                 read_table: Callable[[str], bytes] = read_proc_table,
                 member: tuple[str, str | None] | None = None) -> None:
        """`member` (IP, IPv6 or None): the sandbox is a member of a network served by a router
        whose PortManager serves others too: its forwards always target that IP (as its `-p`
        ports do), and only forwards to it count as its explicit ones."""
        self.ports = ports
        self.auto = auto
        self.counters = counters
        self.read_table = read_table
        self.tables = [(proto, f"/proc/{pid}/net/{proto}{six}")
                       for proto in auto.protos for six in ("", "6")]
        self.member = member
        guest, guest6 = member if member is not None else (ports.guest_addr, ports.guest_addr6)
        self.eligible = eligible_addresses(guest, guest6)
        # Every port seen bound -> its forward id, or None: not published (explicit forward,
        # conflict, error, or removed through the API) until the guest binds it again.
        self.seen: dict[Key, int | None] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task | None = None

    def read_from(self, net_dir_fd: int) -> None:
        """Read the tables relative to `net_dir_fd`, an open /proc/PID/net (a hardened process
        cannot open /proc paths any more)."""
        import functools
        self.tables = [(proto, os.path.basename(path)) for proto, path in self.tables]
        self.read_table = functools.partial(read_proc_table, dir_fd=net_dir_fd)

    def forward_ids(self) -> list[int]:
        """The forwards published so far (a member's router removes them when it leaves)."""
        return [fid for fid in self.seen.values() if fid is not None]

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._tick()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._loop = None

    def scan(self) -> dict[Key, int] | None:
        """The bound ports now -> family bits; None if a table could not be read."""
        found: dict[Key, int] = {}
        for proto, path in self.tables:
            try:
                table = self.read_table(path)
            except OSError:
                self.counters["ports.auto.read_error"] += 1
                return None
            for port, fam in bound_ports(table, proto, self.eligible).items():
                found[(proto, port)] = found.get((proto, port), 0) | fam
        return found

    def _tick(self) -> None:
        self._timer = None
        loop = self._loop
        if loop is None:
            return
        found = self.scan()
        if found is not None:
            added, removed = diff(self.seen, found)
            if added or removed:
                self._task = loop.create_task(self.apply(added, removed, found))
                return              # apply() schedules the next tick when it is done
        self._timer = loop.call_later(POLL_INTERVAL, self._tick)

    async def apply(self, added: list[Key], removed: list[Key], found: Mapping[Key, int]) -> None:
        try:
            for key in removed:
                fid = self.seen.pop(key)
                if fid is not None and self.ports.remove_forward(fid):
                    self.counters["ports.auto.unpublished"] += 1
                    log.info("-p auto: unpublished %s", self._where(key))
            mine = None if self.member is None else {a for a in self.member if a}
            explicit = {(f.spec.proto, f.spec.guest_port)
                        for f in self.ports.forwards.values()
                        if not f.auto and (mine is None or f.spec.guest_addr in mine)}
            for key in added:
                self.seen[key] = None
                if key in explicit:
                    self.counters["ports.auto.explicit"] += 1
                    continue
                self.seen[key] = await self._publish(key, found[key])
        finally:
            self._task = None
            if self._loop is not None:
                self._timer = self._loop.call_later(POLL_INTERVAL, self._tick)

    async def _publish(self, key: Key, families: int) -> int | None:
        proto, port = key
        if self.member is not None:
            guest: str | None = self.member[0]
        else:
            guest = guest_addr_for(families, self.ports.guest_addr, self.ports.guest_addr6)
        try:
            fid = await self.ports.add_forward(
                PortSpec(proto, self.auto.host_addr, port, port, guest), auto=True)
        except PortError as e:
            kind = "conflict" if e.code == errno.EADDRINUSE else "failed"
            self.counters[f"ports.auto.{kind}"] += 1
            sys.stderr.write(f"slirpy: warning: -p auto: {e} (not retried until the sandbox "
                             f"binds port {port}/{proto} again)\n")
            sys.stderr.flush()
            return None
        self.counters["ports.auto.published"] += 1
        log.info("-p auto: published %s", self._where(key))
        return fid

    def _where(self, key: Key) -> str:
        return f"{host_port_text(self.auto.host_addr, key[1], key[0])} -> container port {key[1]}"
