"""Host side of UDP flows: one connected, non-blocking UDP socket per flow.

Not an asyncio `DatagramProtocol`: the runtime watches the socket with `loop.add_reader` and
reads it itself, because the transport would hide what we need from the kernel — the error
queue (`IP_RECVERR`, or `IPV6_RECVERR` for an IPv6 socket, read with `MSG_ERRQUEUE`), which
tells us the ICMP (ICMPv6) type, code and sender behind an error, so the guest gets the same
error (port unreachable, TTL exceeded, ...) instead of a guess from the errno. The ICMP details
are passed on only when the host socket's family is the guest flow's (a DNS flow may reach an
upstream of the other family: then the guest hears the errno alone, in its own ICMP flavour). Opening is synchronous (a UDP connect only picks a route),
so no datagram has to wait in a queue for the socket.

Each readable event reads up to `_READ_BATCH` datagrams, hands them to `Stack`, and asks the
runtime for one coalesced flush.

The other way, the runtime hands a flow the guest's consecutive datagrams of one TAP batch
together (`send_many`): a run of equal-sized ones (the last may be shorter) leaves in one
`sendmsg` with UDP_SEGMENT (UDP GSO, Linux 4.18): the kernel cuts it back into the same
datagrams, and one system call, route lookup and socket lock serve up to `GSO_MAX_SEGMENTS` of
them. Where the kernel refuses (a segment larger than the route's MTU, no checksum offload on
the way out, an old kernel) the flow falls back to one send per datagram for good.
"""

from __future__ import annotations

from typing import Final

import errno
import socket
import struct
import time

from .host import FlowHost, remove_reader

_now: Final = time.monotonic

IP_RECVERR = 11
IPV6_RECVERR = 25
SO_EE_ORIGIN_LOCAL = 1
SO_EE_ORIGIN_ICMP = 2
SO_EE_ORIGIN_ICMP6 = 3
_SOCK_EXTENDED_ERR = struct.Struct("=IBBBBII")   # ee_errno, origin, type, code, pad, info, data
_SOCKADDR_FAMILY = struct.Struct("=H")
# Where the offender's address sits in the sockaddr after it: (offset, length) per family.
_OFFENDER_AT = {socket.AF_INET: (4, 4), socket.AF_INET6: (8, 16)}   # sin_addr; sin6_addr
ICMP_ORIGINS = frozenset((SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6))
_READ_BATCH: Final = 64
_RECV_SIZE: Final = 65536
_ERRQUEUE_MAX = 16
SOL_UDP: Final = 17
UDP_SEGMENT: Final = 103                  # linux/udp.h; socket.UDP_SEGMENT is not in every Python
GSO_MAX_SEGMENTS: Final = 64              # UDP_MAX_SEGMENTS of older kernels (128 since 5.x)
GSO_MAX_BYTES: Final = 65000              # one IPv4/IPv6 packet's worth of payload, with room to spare
_GSO_SIZE: Final = struct.Struct("=H")
# What a kernel answers when it cannot segment this flow's datagrams (the send did nothing).
_GSO_REFUSED: Final = frozenset((errno.EINVAL, errno.EIO, errno.EMSGSIZE, errno.ENOPROTOOPT,
                          errno.EOPNOTSUPP))


def gso_run(parts: list[bytes | memoryview], i: int) -> int:
    """The end of the run that starts at parts[i] and can leave as one UDP GSO send: datagrams
    of parts[i]'s size (not empty), then at most one shorter non-empty one; at most
    GSO_MAX_SEGMENTS datagrams and GSO_MAX_BYTES bytes."""
    n = len(parts)
    seg = len(parts[i])
    if seg == 0:
        return i + 1
    j = i + 1
    total = seg
    while j < n and j - i < GSO_MAX_SEGMENTS:
        size = len(parts[j])
        if size == 0 or size > seg or total + size > GSO_MAX_BYTES:
            break
        total += size
        j += 1
        if size < seg:
            break
    return j


class HostError:
    """One entry of a socket's error queue."""
    __slots__ = ("errno", "origin", "icmp_type", "icmp_code", "info", "offender")

    def __init__(self, err: int, origin: int, icmp_type: int, icmp_code: int, info: int,
                 offender: bytes | None) -> None:
        self.errno = err
        self.origin = origin
        self.icmp_type = icmp_type
        self.icmp_code = icmp_code
        self.info = info
        self.offender = offender          # sender of the ICMP error: 4 or 16 bytes, or None


def parse_extended_err(cdata: bytes) -> HostError | None:
    """A `struct sock_extended_err` (+ the offender's sockaddr_in or sockaddr_in6) from an
    IP_RECVERR or IPV6_RECVERR control message."""
    if len(cdata) < _SOCK_EXTENDED_ERR.size:
        return None
    err, origin, etype, code, _pad, info, _data = _SOCK_EXTENDED_ERR.unpack_from(cdata)
    offender = None
    off = _SOCK_EXTENDED_ERR.size
    if len(cdata) >= off + 2:
        at = _OFFENDER_AT.get(_SOCKADDR_FAMILY.unpack_from(cdata, off)[0])
        if at is not None and len(cdata) >= off + at[0] + at[1]:
            offender = bytes(cdata[off + at[0]:off + at[0] + at[1]])
    return HostError(err, origin, etype, code, info, offender)


def drain_error_queue(sock: socket.socket) -> list[HostError]:
    """Read (and so clear) the socket's error queue."""
    errors = []
    for _ in range(_ERRQUEUE_MAX):
        try:
            _, ancdata, _, _ = sock.recvmsg(512, 512, socket.MSG_ERRQUEUE)
        except OSError:
            break
        for level, kind, cdata in ancdata:
            if (level, kind) in ((socket.IPPROTO_IP, IP_RECVERR), (socket.IPPROTO_IPV6, IPV6_RECVERR)):
                e = parse_extended_err(cdata)
                if e is not None:
                    errors.append(e)
    return errors


class WatchedSocket:
    """A non-blocking socket the loop watches with add_reader; closing it stops the watch."""
    __slots__ = ("flow_host", "sock", "fd", "closed")

    def __init__(self, flow_host: FlowHost, sock: socket.socket):
        self.flow_host = flow_host
        self.sock = sock
        self.fd = sock.fileno()
        self.closed = False

    def on_readable(self) -> None:
        raise NotImplementedError

    def rearm(self) -> None:
        """Watch the socket again after it reported an error. uvloop (libuv) stops polling a
        descriptor once its poll saw POLLERR, so without this a flow whose socket got one ICMP
        error (port unreachable, TTL exceeded) never reads another datagram; the plain asyncio
        loop keeps watching, and re-adding is harmless there."""
        if self.closed:
            return
        loop = self.flow_host.loop
        remove_reader(loop, self.fd)
        loop.add_reader(self.fd, self.on_readable)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            remove_reader(self.flow_host.loop, self.fd)
        except (ValueError, OSError, RuntimeError):
            pass
        self.sock.close()


class HostUdpFlow(WatchedSocket):
    __slots__ = ("stack", "flow_id", "relay_icmp", "gso")

    def __init__(self, flow_host: FlowHost, flow_id: int, sock: socket.socket,
                 relay_icmp: bool = True):
        super().__init__(flow_host, sock)
        self.stack = flow_host.stack
        self.flow_id = flow_id
        self.relay_icmp = relay_icmp      # the socket's ICMP flavour is the guest flow's
        self.gso = True                   # until the kernel refuses UDP_SEGMENT for this flow

    def on_readable(self) -> None:
        recv = self.sock.recv
        deliver = self.stack.udp_host_datagram
        fid = self.flow_id
        now = _now()
        got = 0
        for _ in range(_READ_BATCH):
            try:
                data = recv(_RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                if got == 0:
                    self._report_errors(0, now)     # woken by EPOLLERR: the error queue
                break
            except OSError as e:
                self._report_errors(e.errno or 0, now)
                break
            got += 1
            deliver(fid, data, now)
        self.flow_host.request_flush()

    def send(self, data: bytes | bytearray | memoryview) -> None:
        try:
            self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            self.flow_host.counters["udp.host.tx.drop.full"] += 1
        except OSError as e:
            # A pending error (e.g. an earlier port unreachable) is reported on the next call.
            self.flow_host.counters["udp.host.tx.error"] += 1
            self._report_errors(e.errno or 0, _now())
            self.flow_host.request_flush()

    def send_many(self, parts: list[bytes | memoryview]) -> None:
        """Send `parts` as that many datagrams, in order: runs of equal-sized ones as one UDP
        GSO send each (module docstring), the others one by one. What the guest sees of an
        error is what one send per datagram gives: a pending error (an earlier ICMP) fails
        the run's first datagram, and the rest go."""
        i = 0
        n = len(parts)
        counters = self.flow_host.counters
        while i < n:
            j = gso_run(parts, i) if self.gso else i + 1
            if j - i < 2:
                self.send(parts[i])
                i += 1
                continue
            try:
                self.sock.sendmsg(parts[i:j], [(SOL_UDP, UDP_SEGMENT, _GSO_SIZE.pack(len(parts[i])))])
                counters["udp.host.tx.gso"] += 1
            except (BlockingIOError, InterruptedError):
                counters["udp.host.tx.drop.full"] += j - i
            except OSError as e:
                if e.errno in _GSO_REFUSED:
                    self.gso = False
                    counters["udp.host.tx.gso_refused"] += 1
                    continue                        # the same run again, one send each
                counters["udp.host.tx.error"] += 1
                self._report_errors(e.errno or 0, _now())
                self.flow_host.request_flush()
                i += 1                              # that datagram took the error; the rest go
                continue
            i = j

    def _report_errors(self, err: int, now: float) -> None:
        reported = False
        for e in drain_error_queue(self.sock):
            if e.origin in ICMP_ORIGINS and self.relay_icmp:
                self.stack.udp_host_error(self.flow_id, e.errno, now, e.icmp_type, e.icmp_code,
                                          e.offender, e.info)
            else:
                self.stack.udp_host_error(self.flow_id, e.errno, now)
            reported = True
        if not reported and err:
            self.stack.udp_host_error(self.flow_id, err, now)
        self.rearm()


def host_socket(flow_host: FlowHost, host: str) -> socket.socket:
    """A non-blocking UDP socket of `host`'s family with the error queue on (IP_RECVERR or
    IPV6_RECVERR), bound to the outbound address for `host` if there is one. Not connected."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    try:
        if family == socket.AF_INET:
            sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
        local = flow_host.bind_address_for(host)
        if local is not None:
            sock.bind((local, 0))
    except OSError:
        sock.close()
        raise
    return sock


def open_flow(flow_host: FlowHost, flow_id: int, host: str, port: int,
              guest: str | None = None) -> HostUdpFlow:
    """A connected UDP socket to host:port watched by the loop (`guest`: the guest side's
    address, whose family says which ICMP flavour the guest speaks; None: host's). Raises
    OSError when it cannot be opened or routed (EAFNOSUPPORT on a host without IPv6,
    ENETUNREACH, ...); the runtime reports that per guest datagram."""
    sock = host_socket(flow_host, host)
    try:
        sock.connect((host, port))
    except OSError:
        sock.close()
        raise
    relay = guest is None or (":" in guest) == (sock.family == socket.AF_INET6)
    flow = HostUdpFlow(flow_host, flow_id, sock, relay)
    flow_host.loop.add_reader(flow.fd, flow.on_readable)
    return flow
