"""Published ports: host listeners whose clients become inward flows through the Stack.

One `Forward` per published port (`-p`, or `add_hostfwd` on the API socket):

* TCP: an ordinary listening socket served by the loop (`create_server`). Each accepted
  client becomes `Stack.tcp_inbound_open(client_ip, client_port, guest_port, guest_ip=...)`:
  the guest sees a SYN from the client's own address and port. The client's address goes to
  the Stack as the socket gives it (an IPv4 client of a dual-stack `[::]` listener as
  `::ffff:a.b.c.d`): the Stack picks the family from it, unless the forward names the guest
  address (the API's guest_addr, passed packed as `guest_ip`). The client's socket is then driven by
  `InboundTcpProtocol`, the same protocol and the same Stack events as an outbound flow.
  The guest refusing (RST) or never answering resets the client at once.
* UDP: one socket, read with `add_reader`. Each client address:port is one Stack flow
  (`udp_inbound_open`); the guest's replies leave through the listening socket to that
  client (`InboundUdpFlow.send`); the Stack expires idle flows as it does outbound ones.

A `[::]` listener is dual-stack (IPv4 clients too), except when the same port is also
published on an IPv4 address: then it takes IPv6 clients only (IPV6_V6ONLY), as docker's
`[::]` and `0.0.0.0` pair does, so that both can be bound.

Listening sockets are ordinary sockets of the user who runs slirpy, so the host firewall
applies to them. They are bound synchronously (`bind_listener`), so that every error — port
in use, privileged port, address not on this host — is reported at once with the address and
port it concerns. Removing a forward closes its listener; TCP connections already accepted
go on until they finish. (A UDP forward's flows go with its socket.)

`PortManager` implements the API's `Controller` protocol (add / list / remove); api.py knows
nothing else about it.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
import struct
import time
from collections.abc import Iterable
from typing import Final, TypeAlias, cast

from .config import PortSpec
from .proxy.host import FlowHost
from .proxy.tcp import HostTcpProtocol, tune_transport
from .proxy.udp import WatchedSocket

_now: Final = time.monotonic

# A client's address as recvmsg gives it: (host, port) for IPv4, + (flowinfo, scope) for IPv6.
SockAddr: TypeAlias = tuple[str, int] | tuple[str, int, int, int]
# Control messages as sendmsg takes them and recvmsg returns them: (level, type, data).
Ancillary: TypeAlias = list[tuple[int, int, bytes]]

UNPRIVILEGED_PORT_SYSCTL = "/proc/sys/net/ipv4/ip_unprivileged_port_start"
_BACKLOG: Final = 1024
_UDP_READ_BATCH: Final = 64
_UDP_RECV_SIZE: Final = 65536
_LINGER_RESET: Final = struct.pack("ii", 1, 0)
IP_PKTINFO: Final = 8
_PKTINFO_SPACE: Final = socket.CMSG_SPACE(20)


class PortError(Exception):
    """A published port cannot be opened; the message names the address, port and cause.
    `code` is the errno behind it (EADDRINUSE also for "already published"), 0 if none."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


def host_port_text(addr: str, port: int, proto: str | None = None) -> str:
    a = f"[{addr}]" if ":" in addr else addr
    return f"{a}:{port}" + (f"/{proto}" if proto else "")


def unprivileged_port_start(path: str = UNPRIVILEGED_PORT_SYSCTL) -> int:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return 1024


def describe_bind_error(spec: PortSpec, err: OSError, port_start: int | None = None) -> str:
    """One line: which address and port, and what is wrong (with the fix where there is one)."""
    where = host_port_text(spec.host_addr, spec.host_port, spec.proto)
    code = err.errno
    if code == errno.EADDRINUSE:
        return f"cannot publish {where}: address already in use (another program listens there)"
    if code in (errno.EACCES, errno.EPERM):
        start = unprivileged_port_start() if port_start is None else port_start
        if 0 < spec.host_port < start:
            return (f"cannot publish {where}: port {spec.host_port} is privileged: this host's "
                    f"sysctl net.ipv4.ip_unprivileged_port_start is {start}, so unprivileged users "
                    f"may bind ports from {start} up. Publish a higher host port (e.g. "
                    f"-p {max(start, 8000)}:{spec.guest_port}/{spec.proto}), or lower the sysctl as root: "
                    f"sysctl -w net.ipv4.ip_unprivileged_port_start={spec.host_port}")
        return f"cannot publish {where}: permission denied"
    if code == errno.EADDRNOTAVAIL:
        return f"cannot publish {where}: address {spec.host_addr} is not an address of this host"
    if code == errno.EAFNOSUPPORT:
        return f"cannot publish {where}: IPv6 is not available on this host"
    return f"cannot publish {where}: {err.strerror or err}"


def v6only_beside(spec: PortSpec, others: Iterable[PortSpec]) -> bool:
    """Whether `spec`'s listener must take IPv6 clients only: it is `[::]` and the same port
    is published on an IPv4 address too (a dual-stack `[::]` would hold that port's IPv4 side)."""
    return spec.host_addr == "::" and spec.host_port != 0 and any(
        o.proto == spec.proto and o.host_port == spec.host_port and ":" not in o.host_addr
        for o in others)


def guest_ip_of(spec: PortSpec) -> bytes | None:
    """The forward's guest address, packed (4 or 16 bytes), or None: the client's family decides."""
    return None if spec.guest_addr is None else ipaddress.ip_address(spec.guest_addr).packed


def bind_listener(spec: PortSpec, v6only: bool = False) -> tuple[PortSpec, socket.socket]:
    """Bind (and for TCP, listen on) the host socket of `spec` (an IPv6 one dual-stack unless
    `v6only`). Returns the spec with its actual host port (a free one when it asked for 0)
    and the non-blocking socket. Raises PortError."""
    family = socket.AF_INET6 if ":" in spec.host_addr else socket.AF_INET
    kind = socket.SOCK_STREAM if spec.proto == "tcp" else socket.SOCK_DGRAM
    try:
        sock = socket.socket(family, kind | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    except OSError as e:
        raise PortError(describe_bind_error(spec, e), e.errno or 0) from None
    try:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:      # explicit: whatever net.ipv6.bindv6only says
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
        sock.bind((spec.host_addr, spec.host_port))
        if kind == socket.SOCK_STREAM:
            sock.listen(_BACKLOG)
    except OSError as e:
        sock.close()
        raise PortError(describe_bind_error(spec, e), e.errno or 0) from None
    port = sock.getsockname()[1]
    if port != spec.host_port:
        spec = spec.replace(host_port=port)
    return spec, sock


def bind_all(specs: Iterable[PortSpec]) -> list[tuple[PortSpec, socket.socket]]:
    """Bind every spec; on the first error close what was bound and raise PortError."""
    bound: list[tuple[PortSpec, socket.socket]] = []
    seen: dict[tuple[str, str, int], PortSpec] = {}
    specs = list(specs)
    try:
        for spec in specs:
            key = (spec.proto, spec.host_addr, spec.host_port)
            if spec.host_port and key in seen:
                raise PortError(f"cannot publish {host_port_text(spec.host_addr, spec.host_port, spec.proto)}"
                                f" twice (to container ports {seen[key].guest_port} and {spec.guest_port})")
            seen[key] = spec
            bound.append(bind_listener(spec, v6only_beside(spec, specs)))
    except PortError:
        for _, s in bound:
            s.close()
        raise
    return bound


# ------------------------------------------------------------------ TCP


class InboundTcpProtocol(HostTcpProtocol):
    """An accepted client of a published TCP port; its flow is opened towards the guest."""

    __slots__ = ("guest_port", "guest_ip")

    def __init__(self, flow_host: FlowHost, guest_port: int, guest_ip: bytes | None = None):
        # No looks for the host's FIN after its first reads (proxy/tcp.py): the host side is
        # the client here, and a client's close after its request leaves the guest (the
        # server) no TIME-WAIT to spare; each look would be one more system call a connection.
        super().__init__(flow_host, 0, eof_looks=0)
        self.guest_port = guest_port
        self.guest_ip = guest_ip

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = self.transport = cast(asyncio.Transport, transport)    # a TCP stream's
        flow_host = self.flow_host
        flow_host.tcp_socket_opened()
        peer = transport.get_extra_info("peername")
        fid = None
        if peer:
            fid = self.stack.tcp_inbound_open(peer[0], peer[1], self.guest_port, _now(),
                                              guest_ip=self.guest_ip)
        if fid is None:
            self.closed = True
            flow_host.counters["ports.tcp.refused"] += 1
            transport.abort()
            return
        tune_transport(transport)
        self.flow_id = fid
        flow_host.register_tcp_flow(fid, self)
        flow_host.counters["ports.tcp.accepted"] += 1
        flow_host.request_flush()

    def close(self, reset: bool) -> None:
        # The guest refused or reset the connection: the client gets a real RST
        # (SO_LINGER 0), not a FIN that looks like an empty answer.
        if reset and not self.closed and self.transport is not None:
            sock = self.transport.get_extra_info("socket")
            if sock is not None:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
                except OSError:
                    pass
        super().close(reset)


# ------------------------------------------------------------------ UDP


class InboundUdpFlow:
    """One client of a published UDP port, as the runtime's UDP flow object for the Stack's
    events: `send` answers the client through the listening socket, from the address the
    client sent to (IP_PKTINFO: a wildcard listener would otherwise pick any local address)."""

    __slots__ = ("listener", "flow_id", "addr", "closed", "ancdata")

    def __init__(self, listener: UdpListener, flow_id: int, addr: SockAddr,
                 ancdata: Ancillary) -> None:
        self.listener = listener
        self.flow_id = flow_id
        self.addr = addr
        self.closed = False
        self.ancdata = ancdata

    def send(self, data: bytes | bytearray | memoryview) -> None:
        listener = self.listener
        if listener.closed:
            listener.flow_host.counters["ports.udp.tx.drop.closed"] += 1
            return
        try:
            listener.sock.sendmsg([data], self.ancdata, 0, self.addr)
        except (BlockingIOError, InterruptedError):
            listener.flow_host.counters["ports.udp.tx.drop.full"] += 1
        except OSError:
            listener.flow_host.counters["ports.udp.tx.error"] += 1

    def send_many(self, parts: list[bytes | memoryview]) -> None:
        for data in parts:
            self.send(data)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.listener.clients.pop(self.addr, None)


class UdpListener(WatchedSocket):
    __slots__ = ("guest_port", "guest_ip", "clients", "v6")

    def __init__(self, flow_host: FlowHost, sock: socket.socket, guest_port: int,
                 guest_ip: bytes | None = None):
        super().__init__(flow_host, sock)
        self.guest_port = guest_port
        self.guest_ip = guest_ip
        self.clients: dict[SockAddr, InboundUdpFlow] = {}
        self.v6 = sock.family == socket.AF_INET6
        if self.v6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        flow_host.loop.add_reader(self.fd, self.on_readable)

    def _reply_ancdata(self, ancdata: Ancillary) -> Ancillary:
        """Control data that makes replies leave from the address the client sent to."""
        for level, kind, cdata in ancdata:
            if not self.v6 and level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(cdata) >= 12:
                # struct in_pktinfo {int ifindex; in_addr spec_dst; in_addr addr}: addr = header dst
                return [(socket.IPPROTO_IP, IP_PKTINFO, bytes(4) + cdata[8:12] + bytes(4))]
            if self.v6 and level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO and len(cdata) >= 20:
                # struct in6_pktinfo {in6_addr addr; unsigned ifindex}
                return [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, cdata[:16] + cdata[16:20])]
        return []

    def on_readable(self) -> None:
        flow_host = self.flow_host
        stack = flow_host.stack
        recvmsg = self.sock.recvmsg
        clients = self.clients
        now = _now()
        for _ in range(_UDP_READ_BATCH):
            try:
                data, ancdata, _flags, addr = recvmsg(_UDP_RECV_SIZE, _PKTINFO_SPACE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                flow_host.counters["ports.udp.rx.error"] += 1
                break
            flow = clients.get(addr)
            if flow is None:
                fid = stack.udp_inbound_open(addr[0], addr[1], self.guest_port, now,
                                             guest_ip=self.guest_ip)
                if fid is None:
                    flow_host.counters["ports.udp.refused"] += 1
                    continue
                flow = InboundUdpFlow(self, fid, addr, self._reply_ancdata(ancdata))
                clients[addr] = flow
                flow_host.register_udp_flow(fid, flow)
            stack.udp_host_datagram(flow.flow_id, data, now)
        flow_host.request_flush()


# ------------------------------------------------------------------ the forwards


class Forward:
    __slots__ = ("id", "spec", "server", "udp", "dual_stack", "auto")

    def __init__(self, fid: int, spec: PortSpec, dual_stack: bool = False):
        self.id = fid
        self.spec = spec
        self.server: asyncio.AbstractServer | None = None
        self.udp: UdpListener | None = None
        self.dual_stack = dual_stack       # a `[::]` listener that takes IPv4 clients too
        self.auto = False                  # published by -p auto (autoports.py)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()          # listening socket only; accepted clients go on
            self.server = None
        if self.udp is not None:
            self.udp.close()
            self.udp = None


class PortManager:
    """The runtime's published ports; the API's Controller."""

    def __init__(self, flow_host: FlowHost, guest_addr: str, guest_addr6: str | None = None):
        self.flow_host = flow_host
        self.guest_addr = guest_addr       # the sandbox's addresses, as the API reports them
        self.guest_addr6 = guest_addr6     # (None: IPv6 off)
        self.forwards: dict[int, Forward] = {}
        self._next_id = 1

    async def adopt(self, spec: PortSpec, sock: socket.socket) -> Forward:
        """Serve an already bound listener (from `bind_listener`)."""
        flow_host = self.flow_host
        dual = (spec.host_addr == "::" and
                not sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY))
        fwd = Forward(self._next_id, spec, dual)
        guest_ip = guest_ip_of(spec)
        try:
            if spec.proto == "tcp":
                guest_port = spec.guest_port
                fwd.server = await flow_host.loop.create_server(
                    lambda: InboundTcpProtocol(flow_host, guest_port, guest_ip), sock=sock,
                    backlog=_BACKLOG)
            else:
                fwd.udp = UdpListener(flow_host, sock, spec.guest_port, guest_ip)
        except OSError as e:
            sock.close()
            raise PortError(describe_bind_error(spec, e)) from None
        self._next_id += 1
        self.forwards[fwd.id] = fwd
        return fwd

    # Controller protocol (api.py)

    async def add_forward(self, spec: PortSpec, *, auto: bool = False) -> int:
        where = host_port_text(spec.host_addr, spec.host_port, spec.proto)
        for f in self.forwards.values():
            s = f.spec
            if (s.proto, s.host_addr, s.host_port) == (spec.proto, spec.host_addr, spec.host_port):
                raise PortError(f"cannot publish {where}: already published (id {f.id})",
                                errno.EADDRINUSE)
            if (":" not in spec.host_addr and f.dual_stack and
                    (s.proto, s.host_port) == (spec.proto, spec.host_port)):
                raise PortError(f"cannot publish {where}: {host_port_text(s.host_addr, s.host_port, s.proto)} "
                                f"(id {f.id}) takes its IPv4 clients too", errno.EADDRINUSE)
        spec, sock = bind_listener(spec, v6only_beside(spec, [f.spec for f in self.forwards.values()]))
        fwd = await self.adopt(spec, sock)
        fwd.auto = auto
        return fwd.id

    def list_forwards(self) -> list[tuple[int, PortSpec]]:
        return [(f.id, f.spec) for f in self.forwards.values()]

    def auto_forward_ids(self) -> set[int]:
        """The ids of the forwards -p auto made (list_hostfwd marks them)."""
        return {f.id for f in self.forwards.values() if f.auto}

    def remove_forward(self, forward_id: int) -> bool:
        fwd = self.forwards.pop(forward_id, None)
        if fwd is None:
            return False
        fwd.close()
        return True

    def close_all(self) -> None:
        for fwd in self.forwards.values():
            fwd.close()
        self.forwards.clear()
