"""The TCP framer: a connection's segments into IPv4 frames for the TAP.

Why a module: this is the per-segment hot path out, and the one place that knows how a TCP
segment becomes a frame: with offloads, segments of up to `TcpParams.gso_max` bytes leave as
one GSO super-frame marked NEEDS_CSUM with only the pseudo-header sum in the checksum field
(the guest's kernel cuts and finishes them); without, every segment fits the guest's MSS and
carries a full checksum. Per flow the constant parts (Ethernet prefix, IPv4 and pseudo-header
sums) are prebuilt on the flow record; per segment only lengths are added, and the whole
header (virtio, Ethernet, IPv4, TCP) is one `struct` pack. framer6.py is the
IPv6 one (GSO_TCPV6, no header checksum); a flow keeps its family's `emit`.
"""

from __future__ import annotations

import struct
from typing import Any, Final, Sequence

from ..checksum import finish, sum16
from ..wire.ethernet import ETH_HLEN
from ..flow import TcpFlow
from ..wire.ipv4 import IPV4_HLEN, PROTO_TCP
from ..sendbuf import Gather
from ..wire.virtio import F_NEEDS_CSUM, GSO_TCPV4, VNET_HDR
from .link import ETH_IP_HLEN, Link

GSO_MAX: Final = 65535 - IPV4_HLEN - 60         # payload bytes in one IPv4 super-frame, worst-case options

_IP_VER_TOS: Final = bytes((0x45, 0))                   # version 4, IHL 5, TOS 0
_IP_MID: Final = bytes((0, 0, 0x40, 0, 64, PROTO_TCP))  # ident 0, DF, TTL 64, TCP

# (seq, ack, flags, window, options, payload) as TcpConnection.segments_to_send gives them
Segment = tuple[int, int, int, int, bytes, Any]


class Framer:
    def __init__(self, link: Link) -> None:
        self._link = link
        self._counters = link.counters
        # The whole header of a frame in one pack: the virtio header, Ethernet prefix and
        # IPv4's version/IHL and TOS as one bytes value (its length fixed per link), IPv4's
        # total length, ident/flags/TTL/protocol (_IP_MID), checksum and addresses; TCP
        # without options (the urgent pointer is the pad).
        self._pack_headers = struct.Struct(
            "!%dsH6sH4s4sHHIIHHH2x" % (len(link.vnet_plain) + ETH_HLEN + 2)).pack

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
        pack = self._pack_headers
        src_ip = flow.host_ip
        dst_ip = flow.guest_ip
        c = self._counters
        plain = (link.vnet_csum if offload else link.vnet_plain) + eth_prefix + _IP_VER_TOS
        gso = b""
        gso_thlen = 0
        for seq, ack, flags, window, options, payload in segments:
            thlen = 20 + len(options)
            plen = len(payload)
            tcp_len = thlen + plen
            total = IPV4_HLEN + tcp_len
            # IPv4 header checksum: constant part + total length (ident 0, DF set). Both sums
            # here are folded by checksum.fold, written inline (two calls per segment cost more).
            ip_csum = ~((ip_base + total) % 0xFFFF or 0xFFFF) & 0xFFFF
            p = pseudo_base + tcp_len
            if offload:
                csum = p % 0xFFFF or 0xFFFF             # the pseudo-header sum: NEEDS_CSUM
                if plen > mss:
                    if gso_thlen != thlen:
                        gso_thlen = thlen
                        gso = VNET_HDR.pack(F_NEEDS_CSUM, GSO_TCPV4, ETH_HLEN + IPV4_HLEN + thlen,
                                            mss, ETH_IP_HLEN, 16, 0) + eth_prefix + _IP_VER_TOS
                    prefix = gso
                    c["tcp.tx.gso_frames"] += 1
                else:
                    prefix = plain
            else:
                if type(payload) is Gather:
                    payload = bytes(payload)            # summed below: one contiguous buffer
                # The TCP header's words summed from its fields (a 32-bit field is congruent
                # to the sum of its two halves modulo 0xFFFF), then the payload's.
                p += sport + dport + seq + ack + (thlen << 10 | flags) + window
                if options:
                    p += sum16(options)
                csum = finish(sum16(payload, p)) if plen else finish(p % 0xFFFF or 0xFFFF)
                prefix = plain
            head = pack(prefix, total, _IP_MID, ip_csum, src_ip, dst_ip, sport, dport, seq, ack,
                        thlen << 10 | flags, window, csum)
            if options:
                head += options
            if type(payload) is Gather:
                frames.append((head, *payload.parts))
            elif plen:
                frames.append((head, payload))
            else:
                frames.append(head)
        c["tcp.tx.segments"] += len(segments)
