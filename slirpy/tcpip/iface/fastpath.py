"""The receive fast path of an established TCP flow over IPv4: one frame from the TAP to its
connection without the general layers' parsing objects and calls.

Why a module: in a request/response exchange, or a bulk upload, nearly every frame the guest
sends is the next in-order segment of a flow that exists, with a plain 20-byte IPv4 header and
a 20-byte TCP header carrying only ACK (and PSH). For such a frame this module unpacks the
virtio, Ethernet, IPv4 and TCP headers with one precompiled `struct` call, looks the flow up
once, and lets `tcp.predict.receive_predicted` (header prediction) update the connection. What
it does not take, it hands, untouched, to `Link.receive_frame`, the general path, whose
checks, counters and results are the reference: every condition below is a case the general
path treats the same way for this frame (tests/unit/test_tcp_predict.py compares both). A
frame is taken only when:

* it has the virtio header (the TAP was opened with IFF_VNET_HDR) and is long enough for all
  four headers; ethertype IPv4, version 4 and IHL 5, not a fragment, protocol TCP, a total
  length that fits the frame and holds the TCP header, data offset 5 (no TCP options);
* the source's MAC is the one already learned for it (so the source is on the sandbox
  network; the general path learns a new one, or drops a source from elsewhere);
* flags are ACK or ACK|PSH, nothing else;
* the checksums are vouched for by the virtio header, or verified here (a bad one goes to
  the general path, which drops and counts it);
* its flow exists, and the connection predicts it (`receive_predicted`).
"""

from __future__ import annotations

import struct
from typing import Callable, Final

from ..checksum import sum16
from ..tcp.predict import receive_predicted
from ..wire.virtio import F_DATA_VALID, F_NEEDS_CSUM, VNET_HDR_LEN
from .link import Link
from .neighbours import Neighbours
from .tcp import TcpHandler

# virtio flags (11 bytes skipped); Ethernet: dst (skipped), src, type; IPv4: every field;
# TCP: ports, seq, ack, data offset, flags, window (checksum and urgent pointer skipped).
_HEADERS: Final = struct.Struct("!B11x6x6sHBBHHHBBH4s4sHHIIBBHxxxx")
_Headers = tuple[int, bytes, int, int, int, int, int, int, int, int, int, bytes, bytes, int, int,
                 int, int, int, int, int]
_IP_OFF: Final = VNET_HDR_LEN + 14
_TCP_OFF: Final = _IP_OFF + 20
_MIN_LEN: Final = _TCP_OFF + 20
_TRUSTED: Final = F_NEEDS_CSUM | F_DATA_VALID
# What TcpFlow.ip_base_sum adds to the sum of the addresses: the header words of our frames
# that hold version/IHL, DF, TTL and protocol (flow.py).
_IP_BASE: Final = 0x4500 + 0x4000 + ((64 << 8) | 6)
_ACK: Final = 0x10
_ACK_PSH: Final = 0x18


class FastPath:
    """`receive_frame` for the Stack: the fast path, else the link's general path."""

    def __init__(self, link: Link, neighbours: Neighbours, tcp: TcpHandler) -> None:
        self._general: Callable[[bytes | memoryview, float], None] = link.receive_frame
        self._counters = link.counters
        self._enabled = link.vnet_hdr
        self._macs = neighbours.entries
        self._by_key = tcp._by_key
        self._budgets = tcp._budgets
        self._dirty = tcp.dirty          # the Stack's set of flows to service (wired before us)

    def receive_frame(self, frame: bytes | memoryview, now: float) -> None:
        """Take one frame read from the TAP (see the module docstring for which)."""
        n = len(frame)
        # Two bytes first (ethertype's high byte, IPv4's protocol), so that IPv6, ARP, UDP and
        # ICMP do not pay for the unpack of headers they do not have.
        if (n < _MIN_LEN or not self._enabled or frame[_IP_OFF - 2] != 0x08
                or frame[_IP_OFF + 9] != 6):
            self._general(frame, now)
            return
        fields: _Headers = _HEADERS.unpack_from(frame, 0)
        (vflags, src_mac, ethertype, vihl, tos, total, ident, frag, ttl, proto, csum, src, dst,
         sport, dport, seq, ack, off, flags, window) = fields
        if (ethertype != 0x0800 or vihl != 0x45 or proto != 6 or frag & 0x3FFF or off != 0x50
                or (flags != _ACK and flags != _ACK_PSH) or total < 40 or total > n - _IP_OFF
                or self._macs.get(src) != src_mac):
            self._general(frame, now)
            return
        # (The neighbour table holds IPv4 addresses of the sandbox network only, learned the
        # way the general path learns them: a source with its MAC there is on the network.)
        flow = self._by_key.get((src, sport, dst, dport))
        if flow is None:
            self._general(frame, now)
            return
        # The IPv4 header checksum, always verified (wire/ipv4.py): its words summed modulo
        # 0xFFFF (2**16 == 1), the addresses' part taken from the flow (they are its key).
        if ((vihl << 8 | tos) + total + ident + frag + (ttl << 8 | proto) + csum
                + flow.ip_base_sum - _IP_BASE) % 0xFFFF:
            self._general(frame, now)
            return
        mv = memoryview(frame)
        if not vflags & _TRUSTED and sum16(mv[_TCP_OFF:_IP_OFF + total],
                                           flow.pseudo_base + total - 20) != 0xFFFF:
            self._general(frame, now)
            return
        plen = total - 40
        if not receive_predicted(flow.conn, seq, ack, window, mv[_MIN_LEN:_IP_OFF + total], plen,
                                 now):
            self._general(frame, now)
            return
        self._counters["rx.frames"] += 1
        if plen:
            flow.bytes_in += plen
            budgets = self._budgets
            budgets.rcv_seen[flow.flow_id] = flow
            if now >= budgets.rcv_epoch_end:
                budgets.rcv_epoch(now)
        self._dirty[flow.flow_id] = flow
