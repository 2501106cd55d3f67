"""ICMPv6: the echo responder of the virtual hosts, the echo proxy and the error channel of
IPv6 flows, and the door to neighbour discovery.

Why a module: ICMPv6 does for IPv6 what ICMP does for IPv4 (icmp.py), with its own types and
codes, a checksum over the pseudo-header, and errors that may quote up to 1232 bytes (an error
never makes a packet over the IPv6 minimum MTU, RFC 4443 §2.4 (c)); it also carries NDP, which
goes to ndp.py. Echo requests to the gateway, the DNS address or the gateway's link-local
address are answered here; to anything else they become echo flows exactly as IPv4's (the
same `proxy_echo`, the same events, the host as IPv6 text). Errors about IPv6 flows (a failed
connect, a refused datagram, what the host learned about a UDP or echo flow) are built here,
as `icmp.ErrorChannel` asks.
"""

from __future__ import annotations

import struct
from collections import deque
from typing import Any

from .. import fwd as _fwd
from ..addr import is_martian
from ..events import StackEvent
from ..flow import DatagramFlow, FlowTable
from ..wire import icmpv6 as _icmpv6
from ..wire.icmpv6 import UNSPECIFIED, Icmpv6Header
from ..wire.ipv4 import PROTO_ICMP
from ..wire.ipv6 import IPV6_HLEN, PROTO_ICMPV6
from .icmp import IcmpHandler
from .link import Link
from .ndp import Ndp

_ECHO_ID_SEQ = struct.Struct("!HH")
_NDP_TYPES = frozenset((_icmpv6.ROUTER_SOLICIT, _icmpv6.ROUTER_ADVERT, _icmpv6.NEIGHBOR_SOLICIT,
                        _icmpv6.NEIGHBOR_ADVERT, _icmpv6.REDIRECT))
# Errors a flow may be told about, and whether the 4 bytes after the header carry `info`.
_ERROR_INFO = {_icmpv6.DEST_UNREACH: False, _icmpv6.PACKET_TOO_BIG: True,
               _icmpv6.TIME_EXCEEDED: False, _icmpv6.PARAM_PROBLEM: True}


class Icmpv6Handler:
    def __init__(self, config: Any, link: Link, table: FlowTable, fwd: _fwd.Forwarder,
                 ndp: Ndp, icmp: IcmpHandler, events: deque[StackEvent]) -> None:
        self._link = link
        self._send = link.send_ip6
        self._counters = link.counters
        self._table = table
        self._fwd = fwd
        self._ndp = ndp
        self._proxy_echo = icmp.proxy_echo
        self._events = events
        self._mtu: int = config.mtu
        self.gateway_ip: bytes = config.gateway6.packed
        self._ours = frozenset((self.gateway_ip, config.dns6.packed, ndp.gateway_ll))
        self.unreach_type = _icmpv6.DEST_UNREACH

    # ------------------------------------------------------------------ guest side

    def receive(self, packet: memoryview, l4: int, src: bytes, dst: bytes, hop_limit: int,
                now: float) -> None:
        """ICMPv6 from a guest address on the sandbox network."""
        msg = packet[l4:]
        hdr = Icmpv6Header.parse(msg, src, dst, True)
        t = hdr.type
        if t in _NDP_TYPES:
            self._ndp.receive(hdr, src, dst, hop_limit, now)
        elif dst in self._ours:
            self._answer_echo(hdr, msg, src, dst)
        elif t != _icmpv6.ECHO_REQUEST or hdr.code != 0:
            self._counters["icmpv6.rx.drop.type"] += 1
        else:
            verdict = self._fwd.outbound(PROTO_ICMPV6, src, dst, 0)
            if verdict.host is None:
                self._counters["icmpv6.rx.drop." + verdict.why] += 1
                return
            self._proxy_echo(packet, msg, src, dst, hop_limit, verdict.host, now)

    def receive_link(self, packet: memoryview, l4: int, src: bytes, dst: bytes, hop_limit: int,
                     now: float) -> None:
        """ICMPv6 from a link-local or unspecified guest address: link business only (NDP,
        and echo to the gateway's link-local address)."""
        msg = packet[l4:]
        hdr = Icmpv6Header.parse(msg, src, dst, True)
        if hdr.type in _NDP_TYPES:
            self._ndp.receive(hdr, src, dst, hop_limit, now)
        elif dst == self._ndp.gateway_ll and src != UNSPECIFIED:
            self._answer_echo(hdr, msg, src, dst)
        else:
            self._counters["icmpv6.rx.drop.type"] += 1      # MLD reports, errors, ...

    def _answer_echo(self, hdr: Icmpv6Header, msg: memoryview, src: bytes, dst: bytes) -> None:
        if hdr.type != _icmpv6.ECHO_REQUEST:
            self._counters["icmpv6.rx.drop.type"] += 1
            return
        self._send(dst, src, PROTO_ICMPV6, _icmpv6.build_echo_reply(dst, src, msg))
        self._counters["icmpv6.tx.echo_reply"] += 1

    # ------------------------------------------------------------------ host side

    def host_echo_reply(self, flow_id: int, seq: int, data: bytes | memoryview, hop_limit: int,
                        now: float) -> None:
        """An echo reply came back on the IPv6 echo flow's socket: to the guest with its own
        identifier (the kernel rewrote it to the socket's)."""
        c = self._counters
        flow = self._table.dgram_by_id.get(flow_id)
        if flow is None or flow.proto != PROTO_ICMP:
            c["icmp.host.drop.no_flow"] += 1
            return
        src, dst = flow.host_ip, flow.guest_ip
        msg = _icmpv6.build_message(src, dst, _icmpv6.ECHO_REPLY, 0,
                                    _ECHO_ID_SEQ.pack(flow.guest_port, seq & 0xFFFF), data)
        if IPV6_HLEN + len(msg) > self._mtu:
            c["icmpv6.tx.drop.too_big"] += 1
            return
        self._table.dgram_replied(flow, len(data), now)
        self._send(src, dst, PROTO_ICMPV6, msg, max(1, min(255, hop_limit)))
        c["icmpv6.tx.echo_reply.proxied"] += 1

    # ------------------------------------------------------------------ errors to the guest

    def flow_error(self, flow: DatagramFlow, icmp_type: int, icmp_code: int,
                   offender: bytes | None, info: int) -> None:
        """An ICMPv6 error about a UDP or echo flow, quoting the guest's last packet on it."""
        c = self._counters
        head = flow.last_head
        if not head:
            c["icmpv6.tx.drop.nothing_to_quote"] += 1
            return
        with_info = _ERROR_INFO.get(icmp_type)
        if with_info is None:
            c["icmpv6.tx.drop.error_type"] += 1
            return
        # Port unreachable comes from the host itself; a router's error from that router,
        # unless it is one the guest cannot reach or tell from its own link (loopback,
        # link-local, IPv4-mapped, inside the sandbox network), in which case from the
        # gateway, the router the guest sent it to.
        if icmp_type == _icmpv6.DEST_UNREACH and icmp_code == _icmpv6.UNREACH_PORT:
            src = flow.host_ip
        elif offender and len(offender) == 16 and not is_martian(offender) \
                and not self._fwd.in_network(offender):
            src = offender
        else:
            src = self.gateway_ip
        msg = _icmpv6.build_error(src, flow.guest_ip, icmp_type, icmp_code,
                                  info & 0xFFFFFFFF if with_info else 0, head)
        self._send(src, flow.guest_ip, PROTO_ICMPV6, msg)
        c["icmpv6.tx.error"] += 1

    def port_unreachable(self, packet: memoryview, src: bytes, dst: bytes) -> None:
        msg = _icmpv6.build_error(dst, src, _icmpv6.DEST_UNREACH, _icmpv6.UNREACH_PORT, 0, packet)
        self._send(dst, src, PROTO_ICMPV6, msg)
        self._counters["icmpv6.tx.error"] += 1

    def unreachable_from_gateway(self, to_ip: bytes, code: int, quote: bytes) -> None:
        """Destination unreachable about a remote host, from the gateway, the router that
        "forwarded" the packet."""
        gw = self.gateway_ip
        self._send(gw, to_ip, PROTO_ICMPV6,
                   _icmpv6.build_error(gw, to_ip, _icmpv6.DEST_UNREACH, code, 0, quote))
        self._counters["icmpv6.tx.error"] += 1
