"""The commonest frame from the TAP, its four headers read in one `struct` call.

Why a module: DESIGN §4 keeps every parse in wire/; the receive fast path of an established
flow (iface/fastpath.py) reads frames of one shape only, and this is that shape's parse,
beside the per-header ones it must agree with: a virtio header; Ethernet with ethertype IPv4;
IPv4 with a 20-byte header, not a fragment, protocol TCP, a total length that fits the frame
and holds a TCP header; TCP with a 20-byte header, or a 32-byte one (whose options the
fast path checks are the timestamps, wire/tcp.py `ts_option_at`). `maybe` (two bytes), then
`FRAME.unpack_from` and `plain` tell such a frame; any other goes to the per-header parses
(which validate, count and drop as always). (Three steps rather than one function returning
the fields or None: compiled, such a return boxes and unboxes all twenty fields.) tests/unit/test_tcp_predict.py checks that the fast path and the
general path give the same results, mangled frames included.
"""

from __future__ import annotations

import struct
from typing import Final

from .virtio import VNET_HDR_LEN

# virtio flags (11 bytes skipped); Ethernet: dst (skipped), src, type; IPv4: every field;
# TCP: ports, seq, ack, data offset, flags, window (checksum and urgent pointer skipped).
FRAME: Final = struct.Struct("!B11x6x6sHBBHHHBBH4s4sHHIIBBHxxxx")
Fields = tuple[int, bytes, int, int, int, int, int, int, int, int, int, bytes, bytes, int, int,
               int, int, int, int, int]
IP_OFF: Final = VNET_HDR_LEN + 14
TCP_OFF: Final = IP_OFF + 20
HEADERS_LEN: Final = TCP_OFF + 20


def maybe(frame: bytes | memoryview, n: int) -> bool:
    """Whether `frame` (`n` bytes) may have the shape above, from two bytes (ethertype's high
    byte, IPv4's protocol): IPv6, ARP, UDP and ICMP do not pay for an unpack."""
    return n >= HEADERS_LEN and frame[IP_OFF - 2] == 0x08 and frame[IP_OFF + 9] == 6


def plain(f: Fields, n: int) -> bool:
    """Whether `f`, `FRAME.unpack_from` of an `n`-byte frame, has the shape above. The fields:
    (virtio flags, source MAC, ethertype, version/IHL, TOS, total length, id, flags/fragment
    offset, TTL, protocol, header checksum, source, destination, source port, destination port,
    seq, ack, data offset byte, TCP flags, window)."""
    total = f[5]
    off = f[17]
    return (f[2] == 0x0800 and f[3] == 0x45 and f[9] == 6 and not f[7] & 0x3FFF
            and (off == 0x50 or off == 0x80) and 20 + (off >> 2) <= total <= n - IP_OFF)

