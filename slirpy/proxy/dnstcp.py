"""Host side of DNS-over-TCP flows with name views or several nameservers: local answers, the
rest relayed, the next nameserver tried when one cannot be reached.

Why a module: over UDP the Stack answers a local name before any flow exists (iface/udp.py),
but a TCP flow to the DNS address is a byte stream whose host side is normally one connection
to the upstream. With name views set (networks, issue 15), or several nameservers to fall back
on (as UDP does, proxy/dns.py), the runtime gives such a flow this adapter instead: it
"connects" at once, cuts the guest's stream into DNS messages (RFC 1035 §4.2.2: a 2-byte
length, then the message), answers each the views know (`Stack.dns_answer`: the querier's
names, NXDOMAIN for a foreign network's) and relays the others over one TCP connection to the
upstream, opened on the first such query (the next nameserver is tried when a connect fails
or times out; counted `dns.upstream.tcp.connect_failed`). Answers go back whole, as
messages, so a local answer never cuts into an upstream one; their order may differ from the
queries' (RFC 7766 §6.2.1.1 allows it: the id matches them). Bounded: a message is at most
65535 bytes and at most MAX_BUFFERED bytes wait in either direction, beyond which the flow is
reset (`dns.tcp.reset`). The runtime drives it exactly as a `HostTcpProtocol` (write,
writelines, write_eof, close), through `LocalTransport`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from typing import Any

from .host import FlowHost

MAX_BUFFERED = 4 * 65537            # bytes of unfinished messages held per direction
_CONNECT_TIMEOUT = 5.0


def _messages(buf: bytearray) -> list[bytes]:
    """Take every complete length-prefixed message off the front of `buf`."""
    out = []
    while len(buf) >= 2:
        n = 2 + int.from_bytes(buf[:2], "big")
        if len(buf) < n:
            break
        out.append(bytes(buf[2:n]))
        del buf[:n]
    return out


def serve(flow_host: FlowHost, flow_id: int, guest: str, servers: list[tuple[str, int]]) -> None:
    """Serve DNS-over-TCP flow `flow_id` from `guest` here (registered as its host side)."""
    DnsTcpFlow(flow_host, flow_id, guest, servers).start()


class LocalTransport(asyncio.Transport):
    """What the runtime writes the guest's bytes to (the flow's `transport`)."""

    def __init__(self, flow: DnsTcpFlow) -> None:
        super().__init__()
        self._flow = flow

    def write(self, data: Any) -> None:
        self._flow.guest_data(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self._flow.guest_data(bytes(data))

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self._flow.guest_eof()

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return self._flow.closed


class _Upstream(asyncio.Protocol):
    def __init__(self, flow: DnsTcpFlow) -> None:
        self.flow = flow
        self.buf = bytearray()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) > MAX_BUFFERED:
            self.flow.fail()
            return
        for msg in _messages(self.buf):
            self.flow.to_guest(msg, True)

    def eof_received(self) -> bool:
        self.flow.upstream_eof()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.flow.upstream_eof()


class DnsTcpFlow:
    """One DNS-over-TCP flow's host side (see the module doc)."""

    def __init__(self, flow_host: FlowHost, flow_id: int, guest: str,
                 servers: list[tuple[str, int]]) -> None:
        self.flow_host = flow_host
        self.flow_id = flow_id
        self.querier = ipaddress.ip_address(guest).packed
        self.servers = servers
        self.transport: asyncio.Transport | None = LocalTransport(self)
        self.closed = False
        self._buf = bytearray()
        self._upstream: asyncio.Transport | None = None
        self._queue: list[bytes] = []           # queries waiting for the upstream connection
        self._connecting: asyncio.Task | None = None
        self._guest_eof = False
        self._waiting = 0                        # queries relayed and not answered yet

    def start(self) -> None:
        self.flow_host.register_tcp_flow(self.flow_id, self)
        self.flow_host.stack.tcp_host_connected(self.flow_id, time.monotonic())
        self.flow_host.request_flush()

    def guest_data(self, data: bytes) -> None:
        if self.closed:
            return
        self._buf += data
        if len(self._buf) > MAX_BUFFERED:
            self.fail()
            return
        stack = self.flow_host.stack
        for msg in _messages(self._buf):
            reply = stack.dns_answer(self.querier, msg)
            if reply is None:
                self._relay(msg)
            elif reply:
                self.to_guest(reply, False)

    def _relay(self, msg: bytes) -> None:
        framed = len(msg).to_bytes(2, "big") + msg
        self._waiting += 1
        if self._upstream is not None:
            self._upstream.write(framed)
            return
        self._queue.append(framed)
        if self._connecting is None:
            self._connecting = self.flow_host.loop.create_task(self._connect())

    async def _connect(self) -> None:
        loop = self.flow_host.loop
        for host, port in self.servers:
            try:
                local = self.flow_host.bind_address_for(host)
                transport, _ = await asyncio.wait_for(loop.create_connection(
                    lambda: _Upstream(self), host, port,
                    local_addr=None if local is None else (local, 0)), _CONNECT_TIMEOUT)
            except (OSError, asyncio.TimeoutError):
                self.flow_host.counters["dns.upstream.tcp.connect_failed"] += 1
                continue
            if self.closed:
                transport.close()
                return
            self._upstream = transport
            for framed in self._queue:
                transport.write(framed)
            self._queue.clear()
            if self._guest_eof:
                transport.write_eof()
            return
        self.fail()

    def to_guest(self, msg: bytes, relayed: bool) -> None:
        """One answer (local, or `relayed` from the upstream) to the guest, whole."""
        if self.closed:
            return
        if relayed:
            self._waiting = max(0, self._waiting - 1)
        self.flow_host.stack.tcp_host_data(self.flow_id, len(msg).to_bytes(2, "big") + msg,
                                           time.monotonic())
        self.flow_host.request_flush()
        self._maybe_finish()

    def guest_eof(self) -> None:
        self._guest_eof = True
        if self._upstream is not None and self._upstream.can_write_eof():
            self._upstream.write_eof()
        self._maybe_finish()

    def _maybe_finish(self) -> None:
        """The guest has finished and every relayed query was answered: end our side too."""
        if self._guest_eof and self._waiting == 0 and not self._queue and not self.closed:
            self.flow_host.stack.tcp_host_eof(self.flow_id, time.monotonic())
            self.flow_host.request_flush()

    def upstream_eof(self) -> None:
        if self._upstream is None or self.closed:
            return
        self._waiting = 0
        self._upstream = None
        self._connecting = None             # a later query connects again
        self._maybe_finish()

    def fail(self) -> None:
        """Too much buffered, or no upstream reachable: reset the guest's connection."""
        if self.closed:
            return
        self.flow_host.counters["dns.tcp.reset"] += 1
        self.close(True)
        self.flow_host.unregister_tcp_flow(self.flow_id)
        self.flow_host.stack.tcp_host_reset(self.flow_id, time.monotonic())
        self.flow_host.request_flush()

    def close(self, reset: bool) -> None:
        if self.closed:
            return
        self.closed = True
        if self._connecting is not None:
            self._connecting.cancel()
        if self._upstream is not None:
            if reset:
                self._upstream.abort()
            else:
                self._upstream.close()
            self._upstream = None
