"""Host side of ICMP echo flows: one unprivileged ping socket per (guest ident, destination).

`socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)` ("ping socket"), or for an IPv6 destination
`socket(AF_INET6, SOCK_DGRAM, IPPROTO_ICMPV6)`, needs the user's group inside
`net.ipv4.ping_group_range` (one sysctl for both families); otherwise socket() fails with
EACCES and the runtime says so once. The kernel replaces the echo identifier with the
socket's own and fills in the checksum; it delivers only replies that match that identifier,
so the identifier we hand back to the guest is simply the guest's own (the Stack keeps it per
flow). The reply's TTL (hop limit) comes from `IP_RECVTTL` (`IPV6_RECVHOPLIMIT`); ICMP errors
about our echoes (unreachable, TTL exceeded, packet too big) from the error queue
(`IP_RECVERR`, `IPV6_RECVERR`), in the flow's own ICMP flavour. The guest's TTL is applied
with `IP_TTL` (`IPV6_UNICAST_HOPS`) whenever it changes.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass
from typing import Final

from ..tcpip.fwd import echo_unreach_code
from ..tcpip.wire.icmp import DEST_UNREACH as ICMP_DEST_UNREACH
from ..tcpip.wire.icmpv6 import DEST_UNREACH as ICMPV6_DEST_UNREACH
from .host import FlowHost
from .udp import SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6, WatchedSocket, drain_error_queue

_now: Final = time.monotonic

IP_TTL = 2
IP_RECVERR = 11
IP_RECVTTL = 12
IPV6_UNICAST_HOPS = 16
IPV6_RECVERR = 25
IPV6_RECVHOPLIMIT = 51
IPV6_HOPLIMIT = 52
_ECHO_HDR = struct.Struct("!BBHHH")      # type, code, checksum, ident, seq
_INT = struct.Struct("=i")
_READ_BATCH: Final = 64
_CMSG_SPACE = socket.CMSG_SPACE(4)


@dataclass(frozen=True, slots=True)
class EchoFamily:
    """What differs between an IPv4 and an IPv6 echo flow's ping socket."""
    af: int
    proto: int
    level: int              # setsockopt level of the options below
    hops_opt: int           # the guest's TTL / hop limit for what we send
    recverr: int
    recvhops: int           # ask for the reply's TTL / hop limit ...
    hops_cmsg: int          # ... which arrives in this control message
    request: int            # echo request type
    reply: int              # echo reply type
    origin: int             # sock_extended_err origin of ICMP errors


V4 = EchoFamily(socket.AF_INET, socket.IPPROTO_ICMP, socket.IPPROTO_IP, IP_TTL, IP_RECVERR,
                IP_RECVTTL, IP_TTL, 8, 0, SO_EE_ORIGIN_ICMP)
V6 = EchoFamily(socket.AF_INET6, socket.IPPROTO_ICMPV6, socket.IPPROTO_IPV6, IPV6_UNICAST_HOPS,
                IPV6_RECVERR, IPV6_RECVHOPLIMIT, IPV6_HOPLIMIT, 128, 129, SO_EE_ORIGIN_ICMP6)


def family_for(host: str) -> EchoFamily:
    return V6 if ":" in host else V4


def parse_reply(fam: EchoFamily, data: bytes,
                ancdata: list[tuple[int, int, bytes]]) -> tuple[int, memoryview, int] | None:
    """(seq, payload, TTL or hop limit) of an echo reply read from a ping socket; None when
    it is not an echo reply of this family."""
    if len(data) < 8 or data[0] != fam.reply:
        return None
    hops = 64
    for level, kind, cdata in ancdata:
        if level == fam.level and kind == fam.hops_cmsg and len(cdata) >= 4:
            hops = _INT.unpack_from(cdata)[0]
    return data[6] << 8 | data[7], memoryview(data)[8:], hops


def open_error(host: str, err: int) -> tuple[int, int] | None:
    """The ICMP (type, code), in the flavour of `host`'s family, for each echo request the
    guest sends on a flow whose socket could not be opened with `err`; None: the requests are
    only dropped and counted (EACCES: ping_group_range; a shortage of our own). The codes
    come from the stack's one errno table (fwd.py)."""
    v6 = ":" in host
    code = echo_unreach_code(err, v6)
    if code is None:
        return None
    return (ICMPV6_DEST_UNREACH if v6 else ICMP_DEST_UNREACH), code


class HostEchoFlow(WatchedSocket):
    __slots__ = ("stack", "flow_id", "ttl", "fam")

    def __init__(self, flow_host: FlowHost, flow_id: int, sock: socket.socket,
                 fam: EchoFamily = V4):
        super().__init__(flow_host, sock)
        self.stack = flow_host.stack
        self.flow_id = flow_id
        self.ttl = 64
        self.fam = fam

    def send(self, seq: int, ttl: int, data: bytes | bytearray | memoryview) -> None:
        fam = self.fam
        if ttl != self.ttl:
            try:
                self.sock.setsockopt(fam.level, fam.hops_opt, max(1, min(255, ttl)))
                self.ttl = ttl
            except OSError:
                pass
        try:
            self.sock.send(_ECHO_HDR.pack(fam.request, 0, 0, 0, seq) + bytes(data))
        except (BlockingIOError, InterruptedError):
            self.stack.icmp_echo_dropped(self.flow_id, "socket_full", _now())
        except OSError as e:
            self.flow_host.counters["icmp.host.tx.error"] += 1
            self._report_errors(e.errno or 0, _now())
            self.flow_host.request_flush()

    def on_readable(self) -> None:
        sock = self.sock
        stack = self.stack
        fid = self.flow_id
        fam = self.fam
        now = _now()
        got = 0
        for _ in range(_READ_BATCH):
            try:
                data, ancdata, _, _ = sock.recvmsg(65536, _CMSG_SPACE)
            except (BlockingIOError, InterruptedError):
                if got == 0:
                    self._report_errors(0, now)
                break
            except OSError as e:
                self._report_errors(e.errno or 0, now)
                break
            got += 1
            reply = parse_reply(fam, data, ancdata)
            if reply is None:
                self.flow_host.counters["icmp.host.rx.drop.type"] += 1
                continue
            seq, payload, hops = reply
            stack.icmp_host_echo_reply(fid, seq, payload, hops, now)
        self.flow_host.request_flush()

    def _report_errors(self, err: int, now: float) -> None:
        reported = False
        for e in drain_error_queue(self.sock):
            if e.origin == self.fam.origin:
                self.stack.icmp_host_error(self.flow_id, e.icmp_type, e.icmp_code, now,
                                           e.offender, e.info)
                reported = True
        if not reported and err:
            self.flow_host.counters["icmp.host.error.errno"] += 1
        self.rearm()


def open_flow(flow_host: FlowHost, flow_id: int, host: str) -> HostEchoFlow:
    """A ping socket connected to `host` (its family), watched by the loop. Raises OSError
    (EACCES when ping_group_range excludes us; EAFNOSUPPORT on a host without IPv6)."""
    fam = family_for(host)
    sock = socket.socket(fam.af, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
                         fam.proto)
    try:
        sock.setsockopt(fam.level, fam.recverr, 1)
        sock.setsockopt(fam.level, fam.recvhops, 1)
        local = flow_host.bind_address_for(host)
        if local is not None:
            sock.bind((local, 0))
        sock.connect((host, 0))
    except OSError:
        sock.close()
        raise
    flow = HostEchoFlow(flow_host, flow_id, sock, fam)
    flow_host.loop.add_reader(flow.fd, flow.on_readable)
    return flow
