"""Host side of ICMP echo flows: one unprivileged ICMP socket per (guest ident, destination).

`socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)` ("ping socket") needs the user's group inside
`net.ipv4.ping_group_range`; otherwise socket() fails with EACCES and the runtime says so once.
The kernel replaces the echo identifier with the socket's own and fills in the checksum; it
delivers only replies that match that identifier, so the identifier we hand back to the guest
is simply the guest's own (the Stack keeps it per flow). The reply's TTL comes from
`IP_RECVTTL`; ICMP errors about our echoes (unreachable, TTL exceeded) from the error queue
(`IP_RECVERR`). The guest's TTL is applied with `IP_TTL` whenever it changes.
"""

from __future__ import annotations

import socket
import struct
import time

from .host import FlowHost
from .udp import SO_EE_ORIGIN_ICMP, WatchedSocket, drain_error_queue

_now = time.monotonic

IP_TTL = 2
IP_RECVERR = 11
IP_RECVTTL = 12
_ECHO_HDR = struct.Struct("!BBHHH")      # type, code, checksum, ident, seq
_ECHO_REQUEST = 8
_ECHO_REPLY = 0
_INT = struct.Struct("=i")
_READ_BATCH = 64
_CMSG_SPACE = socket.CMSG_SPACE(4)


class HostEchoFlow(WatchedSocket):
    __slots__ = ("stack", "flow_id", "ttl")

    def __init__(self, flow_host: FlowHost, flow_id: int, sock: socket.socket):
        super().__init__(flow_host, sock)
        self.stack = flow_host.stack
        self.flow_id = flow_id
        self.ttl = 64

    def send(self, seq: int, ttl: int, data: bytes | bytearray | memoryview) -> None:
        if ttl != self.ttl:
            try:
                self.sock.setsockopt(socket.IPPROTO_IP, IP_TTL, max(1, min(255, ttl)))
                self.ttl = ttl
            except OSError:
                pass
        try:
            self.sock.send(_ECHO_HDR.pack(_ECHO_REQUEST, 0, 0, 0, seq) + bytes(data))
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
            if len(data) < 8 or data[0] != _ECHO_REPLY:
                self.flow_host.counters["icmp.host.rx.drop.type"] += 1
                continue
            ttl = 64
            for level, kind, cdata in ancdata:
                if level == socket.IPPROTO_IP and kind == IP_TTL and len(cdata) >= 4:
                    ttl = _INT.unpack_from(cdata)[0]
            seq = data[6] << 8 | data[7]
            stack.icmp_host_echo_reply(fid, seq, memoryview(data)[8:], ttl, now)
        self.flow_host.request_flush()

    def _report_errors(self, err: int, now: float) -> None:
        reported = False
        for e in drain_error_queue(self.sock):
            if e.origin == SO_EE_ORIGIN_ICMP:
                self.stack.icmp_host_error(self.flow_id, e.icmp_type, e.icmp_code, now,
                                           e.offender, e.info)
                reported = True
        if not reported and err:
            self.flow_host.counters["icmp.host.error.errno"] += 1


def open_flow(flow_host: FlowHost, flow_id: int, host: str) -> HostEchoFlow:
    """An ICMP socket connected to `host`, watched by the loop. Raises OSError (EACCES when
    ping_group_range excludes us)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
                         socket.IPPROTO_ICMP)
    try:
        sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
        sock.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
        local = flow_host.bind_address_for(host)
        if local is not None:
            sock.bind((local, 0))
        sock.connect((host, 0))
    except OSError:
        sock.close()
        raise
    flow = HostEchoFlow(flow_host, flow_id, sock)
    flow_host.loop.add_reader(flow.fd, flow.on_readable)
    return flow
