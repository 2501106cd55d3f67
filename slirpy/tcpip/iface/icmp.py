"""ICMP: the echo responder of the virtual hosts, the echo proxy, and every ICMP error the
guest is sent over IPv4.

Why a module: ICMP is both a transport of its own (echo flows, one per guest identifier and
destination, sent by the runtime from an unprivileged ICMP socket; nothing here forges a
reply) and the error channel of the others: a refused UDP datagram, a failed TCP connect, an
error the host learned about a UDP or echo flow all become an ICMP error built here, quoting
the guest's packet. ICMPv6 (icmpv6.py) is the same for IPv6 flows: both offer the
`ErrorChannel` interface, which the TCP and UDP handlers pick by the flow's address length,
and share the echo-flow bookkeeping (`proxy_echo`).
"""

from __future__ import annotations

import struct
from collections import deque
from typing import Any, Protocol

from .. import fwd as _fwd
from ..wire import icmp as _icmp
from ..addr import ntoa
from ..events import IcmpEchoFlowOpened, IcmpEchoRequested, StackEvent
from ..flow import DatagramFlow, FlowTable
from ..wire.ipv4 import IPV4_HLEN, PROTO_ICMP
from .link import Link

QUOTE_MAX = _icmp.ERROR_QUOTE_MAX       # head of a guest packet kept for ICMP errors
_ECHO_ID_SEQ = struct.Struct("!HH")


class ErrorChannel(Protocol):
    """What the TCP and UDP handlers ask of an ICMP flavour (ICMPv4 or ICMPv6)."""

    unreach_type: int               # the flavour's destination-unreachable type

    def flow_error(self, flow: DatagramFlow, icmp_type: int, icmp_code: int,
                   offender: bytes | None, info: int) -> None: ...

    def port_unreachable(self, packet: memoryview, src: bytes, dst: bytes) -> None: ...

    def unreachable_from_gateway(self, to_ip: bytes, code: int, quote: bytes) -> None: ...


class IcmpHandler:
    def __init__(self, config: Any, link: Link, table: FlowTable, fwd: _fwd.Forwarder,
                 events: deque[StackEvent]) -> None:
        self._link = link
        self._send_ip = link.send_ip
        self._counters = link.counters
        self._table = table
        self._fwd = fwd
        self._events = events
        self._mtu: int = config.mtu
        self.gateway_ip = fwd.gateway_ip
        # The ICMP flavour of each family's flows, by address length; the Stack adds IPv6's.
        self.errors: dict[int, ErrorChannel] = {4: self}
        self.unreach_type = _icmp.DEST_UNREACH

    # ------------------------------------------------------------------ guest side

    def receive(self, packet: memoryview, hlen: int, src: bytes, dst: bytes, ttl: int,
                now: float) -> None:
        msg = packet[hlen:]
        if dst not in self._link.virtual_macs:
            self._receive_echo_remote(packet, msg, src, dst, ttl, now)
            return
        hdr = _icmp.IcmpHeader.parse(msg, verify_checksum=True)
        if hdr.type != _icmp.ECHO_REQUEST:
            self._counters["icmp.rx.drop.type"] += 1
            return
        self._send_ip(dst, src, PROTO_ICMP, _icmp.build_echo_reply(msg))
        self._counters["icmp.tx.echo_reply"] += 1

    def _receive_echo_remote(self, packet: memoryview, msg: memoryview, src: bytes, dst: bytes,
                             ttl: int, now: float) -> None:
        c = self._counters
        hdr = _icmp.IcmpHeader.parse(msg, verify_checksum=True)
        if hdr.type != _icmp.ECHO_REQUEST or hdr.code != 0:
            c["icmp.rx.drop.type"] += 1
            return
        verdict = self._fwd.outbound(PROTO_ICMP, src, dst, 0)
        if verdict.host is None:
            c["icmp.rx.drop." + verdict.why] += 1
            return
        self.proxy_echo(packet, msg, src, dst, ttl, verdict.host, now)

    def proxy_echo(self, packet: memoryview, msg: memoryview, src: bytes, dst: bytes, ttl: int,
                   host: str, now: float) -> None:
        """An echo request (`msg`, the ICMP or ICMPv6 message of `packet`) the forwarder let
        through to `host`: into its echo flow (opened here), and to the runtime to send. Both
        flavours' echo messages keep identifier and sequence at the same place."""
        ident, seq = _ECHO_ID_SEQ.unpack_from(msg, 4)
        key = (src, ident, dst)
        table = self._table.echo
        flow = table.get(key)
        if flow is None:
            flow = self._table.new_dgram(key, PROTO_ICMP, src, ident, dst, 0, now, False,
                                         host, self._link.family(src))
            self._events.append(IcmpEchoFlowOpened(flow.flow_id, host, ntoa(src), ident))
        else:
            table.move_to_end(key)
        flow.last_head = bytes(packet[:flow.fam.quote_max])
        flow.last_active = now
        flow.datagrams_in += 1
        flow.bytes_in += len(msg) - _icmp.ICMP_HLEN
        self._counters["icmp.rx.echo_request.proxied"] += 1
        self._events.append(IcmpEchoRequested(flow.flow_id, seq, ttl, msg[_icmp.ICMP_HLEN:]))

    # ------------------------------------------------------------------ host side

    def host_echo_reply(self, flow_id: int, seq: int, data: bytes | memoryview, ttl: int,
                        now: float) -> None:
        """An echo reply came back on the flow's ICMP socket: hand it to the guest with its
        own identifier (the kernel rewrote it to the socket's)."""
        c = self._counters
        flow = self._table.dgram_by_id.get(flow_id)
        if flow is None or flow.proto != PROTO_ICMP:
            c["icmp.host.drop.no_flow"] += 1
            return
        msg = _icmp.build_message(_icmp.ECHO_REPLY, 0,
                                  _ECHO_ID_SEQ.pack(flow.guest_port, seq & 0xFFFF), data)
        if IPV4_HLEN + len(msg) > self._mtu:
            c["icmp.tx.drop.too_big"] += 1
            return
        self._table.dgram_replied(flow, len(data), now)
        self._send_ip(flow.host_ip, flow.guest_ip, PROTO_ICMP, msg, ttl=max(1, min(255, ttl)),
                      df=False)
        c["icmp.tx.echo_reply.proxied"] += 1

    def host_error(self, flow_id: int, icmp_type: int, icmp_code: int, now: float,
                   offender: bytes | None = None, info: int = 0) -> None:
        """The echo flow's socket received an ICMP error (unreachable, TTL exceeded): its
        types and codes are those of the flow's family, whose error channel (`errors`, by
        address length: this handler for IPv4, the ICMPv6 one when IPv6 is on) builds it."""
        flow = self._table.dgram_by_id.get(flow_id)
        if flow is None or flow.proto != PROTO_ICMP:
            return
        channel = self.errors.get(len(flow.guest_ip))
        if channel is None:
            return
        self._counters["icmp.host.error"] += 1
        channel.flow_error(flow, icmp_type, icmp_code, offender, info)

    def echo_dropped(self, flow_id: int, reason: str, now: float) -> None:
        """The runtime could not send an echo (e.g. ping sockets not permitted): count it."""
        self._counters["icmp.echo.drop." + reason] += 1

    # ------------------------------------------------------------------ errors to the guest

    def flow_error(self, flow: DatagramFlow, icmp_type: int, icmp_code: int,
                   offender: bytes | None, info: int) -> None:
        """An ICMP error about a UDP or echo flow, quoting the guest's last packet on it."""
        c = self._counters
        head = flow.last_head
        if not head:
            c["icmp.tx.drop.nothing_to_quote"] += 1
            return
        if icmp_type == _icmp.DEST_UNREACH:
            msg = _icmp.build_dest_unreachable(icmp_code, head, info)
        elif icmp_type == _icmp.TIME_EXCEEDED:
            msg = _icmp.build_time_exceeded(icmp_code, head)
        else:
            c["icmp.tx.drop.error_type"] += 1
            return
        # Port unreachable comes from the host itself; a router's error from that router,
        # unless it is one the guest cannot know (host loopback, "this network"), in which
        # case from the gateway, the router the guest sent it to.
        if icmp_type == _icmp.DEST_UNREACH and icmp_code == _icmp.UNREACH_PORT:
            src = flow.host_ip
        elif offender and len(offender) == 4 and offender[0] not in (0, 127):
            src = offender
        else:
            src = self.gateway_ip
        self._send_ip(src, flow.guest_ip, PROTO_ICMP, msg)
        c["icmp.tx.error"] += 1

    def port_unreachable(self, packet: memoryview, src: bytes, dst: bytes) -> None:
        self._send_ip(dst, src, PROTO_ICMP, _icmp.build_dest_unreachable(_icmp.UNREACH_PORT, packet))
        self._counters["icmp.tx.error"] += 1

    def unreachable_from_gateway(self, to_ip: bytes, code: int, quote: bytes) -> None:
        """ICMP unreachable about a remote host: it comes from the gateway, the router that
        "forwarded" the packet."""
        self._send_ip(self.gateway_ip, to_ip, PROTO_ICMP, _icmp.build_dest_unreachable(code, quote))
        self._counters["icmp.tx.error"] += 1
