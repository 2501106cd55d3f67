"""The commonest TCP frame over IPv6 from the TAP, its four headers read in one `struct` call.

Why a module: as wire/tcp4frame.py for IPv4 (DESIGN §4 keeps every parse in wire/), the shape
the receive fast path (iface/fastpath.py) takes over IPv6: a virtio header; Ethernet with
ethertype IPv6; IPv6 version 6 whose next header is TCP (no extension headers) and whose
payload, no longer than the frame holds, holds a TCP header; TCP with a 20-byte header, or a
32-byte one (timestamps, as over IPv4). `maybe`, then `FRAME.unpack_from` and `plain` tell
such a frame (three steps, for the compiled build); any other goes to the per-header parses,
which validate, count and drop as always. tests/unit/test_tcp_predict.py compares both paths over IPv6 too.
"""

from __future__ import annotations

import struct
from typing import Final

from .virtio import VNET_HDR_LEN

# virtio flags (11 bytes skipped); Ethernet: dst (skipped), src, type; IPv6: version/traffic
# class/flow label, payload length, next header, hop limit, addresses; TCP: ports, seq, ack,
# data offset, flags, window (checksum and urgent pointer skipped).
FRAME: Final = struct.Struct("!B11x6x6sHIHBB16s16sHHIIBBHxxxx")
Fields = tuple[int, bytes, int, int, int, int, int, bytes, bytes, int, int, int, int, int, int, int]
IP_OFF: Final = VNET_HDR_LEN + 14
TCP_OFF: Final = IP_OFF + 40
HEADERS_LEN: Final = TCP_OFF + 20


def maybe(frame: bytes | memoryview, n: int) -> bool:
    """Whether `frame` (`n` bytes) may have the shape above, from two bytes (ethertype's high
    byte, IPv6's next header)."""
    return n >= HEADERS_LEN and frame[IP_OFF - 2] == 0x86 and frame[IP_OFF + 6] == 6


def plain(f: Fields, n: int) -> bool:
    """Whether `f`, `FRAME.unpack_from` of an `n`-byte frame, has the shape above. The fields:
    (virtio flags, source MAC, ethertype, version/traffic class/flow label, payload length,
    next header, hop limit, source, destination, source port, destination port, seq, ack, data
    offset byte, TCP flags, window)."""
    plen = f[4]
    off = f[13]
    return (f[2] == 0x86DD and f[3] >> 28 == 6 and f[5] == 6 and (off == 0x50 or off == 0x80)
            and off >> 2 <= plen <= n - TCP_OFF)
