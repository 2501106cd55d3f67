"""The IPv6 TCP framer: a connection's segments into IPv6 frames for the TAP.

Why a module: framer.py is the IPv4 one, and this per-segment loop is the hot path out, so each
family has its own instead of a per-segment test of the family; a flow keeps its family's
`emit` (flow.TcpFlow.emit) from the moment it is made. What differs from IPv4: the 40-byte
header has no checksum and carries the payload length (TCP header and data) instead of a
total length; a super-frame is GSO_TCPV6; the transport header starts at 14 + 40 = 54, which
is where the kernel's checksum (NEEDS_CSUM) starts. The TCP checksum is the same sum: the
pseudo-header of RFC 8200 §8.1 adds up, modulo 0xFFFF, to the IPv4 one (flow.pseudo_base).
"""

from __future__ import annotations

from typing import Sequence

from ..checksum import finish, sum16
from ..flow import TcpFlow
from ..sendbuf import Gather
from ..wire.ipv6 import IPV6_HDR, IPV6_HLEN, PROTO_TCP
from ..wire.tcp import TCP_HDR
from ..wire.virtio import F_NEEDS_CSUM, GSO_TCPV6, VNET_HDR
from .framer import Segment
from .link import ETH_IP6_HLEN, Link

# Payload bytes in one IPv6 super-frame with worst-case TCP options, so that header and payload
# stay within 65535 bytes as an IPv4 super-frame's do (the same frame sizes for the TAP).
GSO_MAX6 = 65535 - IPV6_HLEN - 60
HOP_LIMIT = 64
_VERSION = 6 << 28                      # traffic class and flow label 0


class Framer6:
    def __init__(self, link: Link) -> None:
        self._link = link
        self._counters = link.counters

    def emit(self, flow: TcpFlow, mss: int, segments: Sequence[Segment]) -> None:
        """Frame `segments` of `flow` (whose Ethernet prefix is known) onto the link's queue."""
        link = self._link
        frames = link.frames
        eth_prefix: bytes = flow.eth_prefix  # type: ignore[assignment]  # callers check None
        sport = flow.host_port
        dport = flow.guest_port
        pseudo_base = flow.pseudo_base
        offload = link.offload
        vnet_csum = link.v6.vnet_tcp_csum
        pack_tcp = TCP_HDR.pack
        pack_ip = IPV6_HDR.pack
        src_ip = flow.host_ip
        dst_ip = flow.guest_ip
        c = self._counters
        for seq, ack, flags, window, options, payload in segments:
            thlen = 20 + len(options)
            plen = len(payload)
            tcp_len = thlen + plen
            ip = pack_ip(_VERSION, tcp_len, PROTO_TCP, HOP_LIMIT, src_ip, dst_ip)
            p = pseudo_base + tcp_len
            if offload:
                partial = p % 0xFFFF or 0xFFFF
                tcp = pack_tcp(sport, dport, seq, ack, thlen << 2, flags, window, partial, 0) + options
                if plen > mss:
                    hdr = VNET_HDR.pack(F_NEEDS_CSUM, GSO_TCPV6, ETH_IP6_HLEN + thlen, mss,
                                        ETH_IP6_HLEN, 16, 0)
                    c["tcp.tx.gso_frames"] += 1
                else:
                    hdr = vnet_csum
            else:
                if type(payload) is Gather:
                    payload = bytes(payload)            # summed below: one contiguous buffer
                tcp = pack_tcp(sport, dport, seq, ack, thlen << 2, flags, window, 0, 0) + options
                csum = finish(sum16(payload, sum16(tcp, p))) if plen else finish(sum16(tcp, p))
                tcp = tcp[:16] + csum.to_bytes(2, "big") + tcp[18:]
                hdr = link.vnet_plain
            if type(payload) is Gather:
                frames.append((hdr + eth_prefix + ip + tcp, *payload.parts))
            elif plen:
                frames.append((hdr + eth_prefix + ip + tcp, payload))
            else:
                frames.append(hdr + eth_prefix + ip + tcp)
        c["tcp.tx.segments"] += len(segments)
