"""The TCP framer: a connection's segments into IPv4 frames for the TAP.

Why a module: this is the per-segment hot path out, and the one place that knows how a TCP
segment becomes a frame: with offloads, segments of up to `TcpParams.gso_max` bytes leave as
one GSO super-frame marked NEEDS_CSUM with only the pseudo-header sum in the checksum field
(the guest's kernel cuts and finishes them); without, every segment fits the guest's MSS and
carries a full checksum. Per flow the constant parts (Ethernet prefix, IPv4 and pseudo-header
sums) are prebuilt on the flow record; per segment only lengths are added. framer6.py is the
IPv6 one (GSO_TCPV6, no header checksum); a flow keeps its family's `emit`.
"""

from __future__ import annotations

from typing import Any, Final, Sequence

from ..checksum import finish, sum16
from ..wire.ethernet import ETH_HLEN
from ..flow import TcpFlow
from ..wire.ipv4 import IPV4_HDR, IPV4_HLEN, PROTO_TCP
from ..sendbuf import Gather
from ..wire.tcp import TCP_HDR
from ..wire.virtio import F_NEEDS_CSUM, GSO_TCPV4, VNET_HDR
from .link import ETH_IP_HLEN, Link

GSO_MAX: Final = 65535 - IPV4_HLEN - 60         # payload bytes in one IPv4 super-frame, worst-case options

# (seq, ack, flags, window, options, payload) as TcpConnection.segments_to_send gives them
Segment = tuple[int, int, int, int, bytes, Any]


class Framer:
    def __init__(self, link: Link) -> None:
        self._link = link
        self._counters = link.counters

    def emit(self, flow: TcpFlow, mss: int, segments: Sequence[Segment]) -> None:  # noqa: C901
        """Frame `segments` of `flow` (whose Ethernet prefix is known) onto the link's queue."""
        link = self._link
        frames = link.frames
        eth_prefix: bytes = flow.eth_prefix  # type: ignore[assignment]  # callers check None
        sport = flow.host_port
        dport = flow.guest_port
        ip_base = flow.ip_base_sum
        pseudo_base = flow.pseudo_base
        offload = link.offload
        pack_tcp = TCP_HDR.pack
        pack_ip = IPV4_HDR.pack
        src_ip = flow.host_ip
        dst_ip = flow.guest_ip
        c = self._counters
        for seq, ack, flags, window, options, payload in segments:
            thlen = 20 + len(options)
            plen = len(payload)
            tcp_len = thlen + plen
            total = IPV4_HLEN + tcp_len
            # IPv4 header checksum: constant part + total length (ident 0, DF set). Both sums
            # here are folded by checksum.fold, written inline (two calls per segment cost more).
            ip_sum = (ip_base + total) % 0xFFFF or 0xFFFF
            ip = pack_ip(0x45, 0, total, 0, 0x4000, 64, PROTO_TCP, ~ip_sum & 0xFFFF, src_ip, dst_ip)
            p = pseudo_base + tcp_len
            if offload:
                partial = p % 0xFFFF or 0xFFFF
                tcp = pack_tcp(sport, dport, seq, ack, thlen << 2, flags, window, partial, 0) + options
                if plen > mss:
                    hdr = VNET_HDR.pack(F_NEEDS_CSUM, GSO_TCPV4, ETH_HLEN + IPV4_HLEN + thlen, mss,
                                        ETH_IP_HLEN, 16, 0)
                    c["tcp.tx.gso_frames"] += 1
                else:
                    hdr = link.vnet_csum
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
