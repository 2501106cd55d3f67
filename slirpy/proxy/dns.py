"""Host side of DNS flows when the host lists several nameservers: fall back to the next.

Why a module: a plain UDP flow has one connected socket to one destination, which was all DNS
needed while only the first nameserver of the host's resolv.conf was ever asked. The host's
own resolver asks the next nameserver when one does not answer in time (resolv(5)); so do
we, per query: a query goes to the first nameserver; if no answer with its id came back after
`FALLBACK_AFTER` seconds, or that server refused it (an ICMP error for that very query, read
from the socket's error queue), the same bytes go to the next one, up to MAXNS servers (3, as
glibc), each once. An answer from any of them goes to the guest; answers from other addresses
are dropped. Counters: `dns.upstream.fallback` (a query sent to a next server),
`dns.upstream.timeout` (no server answered it), `dns.upstream.refused`,
`dns.upstream.drop.stranger`. Bounded: MAX_PENDING queries tracked per flow (a query beyond
goes to the first server only), one timer each, cancelled on answer or close.

With a single upstream (`--dns-upstream`, or one nameserver) nothing changes: the flow gets an
ordinary connected socket (proxy/udp.py), whose ICMP errors reach the guest as before.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from typing import TYPE_CHECKING, Final

from .host import FlowHost, UdpFlowSocket, remove_reader
from .udp import host_socket
from .udp import open_flow as open_udp_flow

if TYPE_CHECKING:
    from ..resolvconf import ResolvConf

MAXNS = 3                   # nameservers asked, as glibc's MAXNS
FALLBACK_AFTER = 1.0        # seconds a server has to answer before the next one is asked
MAX_PENDING = 32            # queries of one flow tracked for fallback
_READ_BATCH: Final = 64
ECONNREFUSED = 111


def upstreams(configured: tuple[str, int] | None, resolv: ResolvConf) -> list[tuple[str, int]]:
    """Where DNS goes now: `--dns-upstream` alone, else the host's nameservers (at most
    MAXNS), else glibc's default (resolvconf.FALLBACK_UPSTREAM)."""
    if configured is not None:
        return [configured]
    servers = resolv.nameservers()[:MAXNS]
    return [(s, 53) for s in servers] if servers else [resolv.upstream()]


def open_flow(flow_host: FlowHost, flow_id: int, servers: list[tuple[str, int]],
              guest: str | None = None) -> UdpFlowSocket:
    """The host side of DNS flow `flow_id`: an ordinary UDP flow for a single server, else a
    `HostDnsFlow`. Raises OSError as proxy.udp.open_flow does."""
    if len(servers) == 1:
        host, port = servers[0]
        return open_udp_flow(flow_host, flow_id, host, port, guest)
    return HostDnsFlow(flow_host, flow_id, servers)


def _key(host: str, port: int) -> tuple[bytes, int]:
    return ipaddress.ip_address(host.split("%", 1)[0]).packed, port


class _Query:
    __slots__ = ("data", "server", "timer")

    def __init__(self, data: bytes, timer: asyncio.TimerHandle | None) -> None:
        self.data = data
        self.server = 0
        self.timer = timer


class HostDnsFlow:
    """One DNS flow's queries, each asked of the nameservers in turn (see the module doc)."""

    def __init__(self, flow_host: FlowHost, flow_id: int, servers: list[tuple[str, int]]) -> None:
        self.flow_host = flow_host
        self.flow_id = flow_id
        self.servers = servers[:MAXNS]
        self._known = {_key(h, p) for h, p in self.servers}
        self._socks: dict[int, socket.socket] = {}       # family -> unconnected socket
        self.pending: dict[bytes, _Query] = {}           # query id (2 bytes) -> its state
        self.closed = False
        self._sock_for(self.servers[0][0])               # OSError now, as a plain flow's

    def _sock_for(self, host: str) -> socket.socket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = self._socks.get(family)
        if sock is None:
            sock = host_socket(self.flow_host, host)
            self._socks[family] = sock
            self.flow_host.loop.add_reader(sock.fileno(), self._on_readable, sock)
        return sock

    def send(self, data: bytes | bytearray | memoryview) -> None:
        """A guest query: to the first server, remembered for fallback."""
        data = bytes(data)
        qid = data[:2]
        old = self.pending.pop(qid, None)
        if old is not None and old.timer is not None:
            old.timer.cancel()                      # the guest asked again: start over
        if len(self.pending) < MAX_PENDING:
            self.pending[qid] = _Query(data, self._arm(qid))
        self._send_to(0, data)

    def send_many(self, parts: list[bytes | memoryview]) -> None:
        for data in parts:
            self.send(data)

    def _arm(self, qid: bytes) -> asyncio.TimerHandle:
        return self.flow_host.loop.call_later(FALLBACK_AFTER, self._next_server, qid, False)

    def _send_to(self, index: int, data: bytes) -> bool:
        host, port = self.servers[index]
        try:
            self._sock_for(host).sendto(data, (host, port))
        except OSError:
            self.flow_host.counters["dns.upstream.tx.error"] += 1
            return False
        return True

    def _next_server(self, qid: bytes, refused: bool) -> None:
        """Query `qid` got no answer in time (or was refused): ask the next server."""
        q = self.pending.get(qid)
        if q is None or self.closed:
            return
        c = self.flow_host.counters
        if q.timer is not None:
            q.timer.cancel()
        while q.server + 1 < len(self.servers):
            q.server += 1
            c["dns.upstream.fallback"] += 1
            if self._send_to(q.server, q.data):
                q.timer = self._arm(qid)
                return
        del self.pending[qid]
        c["dns.upstream.timeout"] += 1
        if refused:          # every server refused: the guest hears it, as from a plain flow
            self.flow_host.stack.udp_host_error(self.flow_id, ECONNREFUSED, time.monotonic())
            self.flow_host.request_flush()

    def _on_readable(self, sock: socket.socket) -> None:
        deliver = self.flow_host.stack.udp_host_datagram
        now = time.monotonic()
        for _ in range(_READ_BATCH):
            try:
                data, addr = sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._read_errors(sock)
                continue
            if _key(addr[0], addr[1]) not in self._known:
                self.flow_host.counters["dns.upstream.drop.stranger"] += 1
                continue
            q = self.pending.pop(data[:2], None)
            if q is not None and q.timer is not None:
                q.timer.cancel()
            deliver(self.flow_id, data, now)
        self.flow_host.request_flush()

    def _read_errors(self, sock: socket.socket) -> None:
        """The error queue: each entry carries the query it is about (its first bytes). The
        reader is registered again: libuv stops watching a descriptor that reported POLLERR."""
        loop = self.flow_host.loop
        remove_reader(loop, sock.fileno())
        loop.add_reader(sock.fileno(), self._on_readable, sock)
        for _ in range(MAX_PENDING):
            try:
                data, _anc, _flags, addr = sock.recvmsg(512, 512, socket.MSG_ERRQUEUE)
            except OSError:
                return
            self.flow_host.counters["dns.upstream.refused"] += 1
            q = self.pending.get(data[:2])
            # Only an error about the server the query is waiting for moves it on.
            if q is not None and addr and _key(addr[0], addr[1]) == _key(*self.servers[q.server]):
                self._next_server(data[:2], True)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for q in self.pending.values():
            if q.timer is not None:
                q.timer.cancel()
        self.pending.clear()
        for sock in self._socks.values():
            try:
                remove_reader(self.flow_host.loop, sock.fileno())
            except (ValueError, OSError, RuntimeError):
                pass
            sock.close()
        self._socks.clear()
