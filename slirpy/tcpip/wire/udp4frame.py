"""A guest's UDP datagram over IPv4 as the TAP hands it over, its four headers read in one
`struct` call.

Why a module: DESIGN §4 keeps every parse in wire/; the receive fast path of an existing UDP
flow (iface/fastpath.py) reads frames of one shape only, and this is that shape's parse, beside
the per-header ones it must agree with: a virtio header; Ethernet with ethertype IPv4; IPv4 with
a 20-byte header, not a fragment, protocol UDP, a total length that fits the frame and holds a
UDP header; UDP whose length field fits the IP payload. `maybe`, then `FRAME.unpack_from` and
`plain` tell such a frame (three steps, as wire/tcp4frame.py, for the compiled build); any
other goes to the per-header parses, which validate, count and drop as always.
tests/unit/test_udp_fastpath.py checks that both paths give the same results.
"""

from __future__ import annotations

import struct
from typing import Final

from .virtio import VNET_HDR_LEN

# virtio flags (11 bytes skipped); Ethernet: dst (skipped), src, type; IPv4: every field;
# UDP: ports and length (the checksum skipped: the fast path takes only frames whose virtio
# header vouches for it).
FRAME: Final = struct.Struct("!B11x6x6sHBBHHHBBH4s4sHHHxx")
Fields = tuple[int, bytes, int, int, int, int, int, int, int, int, int, bytes, bytes, int, int,
               int]
IP_OFF: Final = VNET_HDR_LEN + 14
UDP_OFF: Final = IP_OFF + 20
HEADERS_LEN: Final = UDP_OFF + 8


def maybe(frame: bytes | memoryview, n: int) -> bool:
    """Whether `frame` (`n` bytes) may have the shape above, from two bytes (ethertype's high
    byte, IPv4's protocol)."""
    return n >= HEADERS_LEN and frame[IP_OFF - 2] == 0x08 and frame[IP_OFF + 9] == 17


def plain(f: Fields, n: int) -> bool:
    """Whether `f`, `FRAME.unpack_from` of an `n`-byte frame, has the shape above. The fields:
    (virtio flags, source MAC, ethertype, version/IHL, TOS, total length, id, flags/fragment
    offset, TTL, protocol, header checksum, source, destination, source port, destination port,
    UDP length)."""
    total = f[5]
    return (f[2] == 0x0800 and f[3] == 0x45 and f[9] == 17 and not f[7] & 0x3FFF
            and 28 <= total <= n - IP_OFF and 8 <= f[15] <= total - 20)

