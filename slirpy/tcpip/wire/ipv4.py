"""IPv4 header (RFC 791), with header checksum (RFC 1071).

`Ipv4Header.parse` validates version, IHL, total length and (by default) the header checksum.
The payload is ``buf[h.header_len:h.total_length]``; bytes after `total_length` (Ethernet
minimum-frame padding) are allowed and ignored. Options are kept as raw bytes, not
interpreted. Fragments are parsed like any other packet: `is_fragment` tells the caller.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from ..checksum import sum16
from ..errors import MalformedPacket

# ver<<4|ihl, tos, total_length, ident, flags<<13|offset, ttl, proto, checksum, src, dst
IPV4_HDR: Final = struct.Struct("!BBHHHBBH4s4s")
IPV4_HLEN: Final = 20
IPV4_MAX_HLEN: Final = 60
IPV4_MAX_TOTAL_LENGTH: Final = 0xFFFF

PROTO_ICMP: Final = 1
PROTO_TCP: Final = 6
PROTO_UDP: Final = 17

FLAG_DF: Final = 0x4000
FLAG_MF: Final = 0x2000
OFFSET_MASK: Final = 0x1FFF


@dataclass(frozen=True, slots=True)
class Ipv4Header:
    header_len: int      # bytes (IHL * 4)
    tos: int             # DSCP << 2 | ECN
    total_length: int
    ident: int
    frag: int            # the raw 16-bit flags + fragment offset field
    ttl: int
    proto: int
    checksum: int
    src: bytes
    dst: bytes
    options: bytes = b""

    @property
    def is_fragment(self) -> bool:
        """MF set or a nonzero offset: one piece of a fragmented datagram."""
        return bool(self.frag & (FLAG_MF | OFFSET_MASK))

    @property
    def dont_fragment(self) -> bool:
        return bool(self.frag & FLAG_DF)

    @property
    def more_fragments(self) -> bool:
        return bool(self.frag & FLAG_MF)

    @property
    def fragment_offset(self) -> int:
        """Offset of this fragment's data in bytes (the field counts 8-byte units)."""
        return (self.frag & OFFSET_MASK) << 3

    @property
    def payload_len(self) -> int:
        return self.total_length - self.header_len

    @classmethod
    def parse(cls, buf: bytes | bytearray | memoryview, verify_checksum: bool = True) -> "Ipv4Header":
        hlen, tos, total, ident, frag, ttl, proto, csum, src, dst = parse_fields(buf, verify_checksum)
        options = bytes(buf[IPV4_HLEN:hlen]) if hlen > IPV4_HLEN else b""
        return cls(hlen, tos, total, ident, frag, ttl, proto, csum, src, dst, options)

    def pack(self) -> bytes:
        """The header exactly as described, including the stored `checksum` value."""
        if self.header_len != IPV4_HLEN + len(self.options) or len(self.options) & 3 \
                or self.header_len > IPV4_MAX_HLEN:
            raise ValueError("IPv4 header_len must be 20 + len(options), a multiple of 4, <= 60")
        return IPV4_HDR.pack(0x40 | self.header_len >> 2, self.tos, self.total_length, self.ident,
                             self.frag, self.ttl, self.proto, self.checksum,
                             self.src, self.dst) + self.options

    def with_checksum(self) -> "Ipv4Header":
        """A copy whose `checksum` field is correct for its other fields."""
        hdr = bytearray(self.pack())
        hdr[10:12] = b"\0\0"
        return Ipv4Header(self.header_len, self.tos, self.total_length, self.ident, self.frag,
                          self.ttl, self.proto, ~sum16(hdr) & 0xFFFF, self.src, self.dst,
                          self.options)


Fields = tuple[int, int, int, int, int, int, int, int, bytes, bytes]


def parse_fields(buf: bytes | bytearray | memoryview, verify_checksum: bool = True) -> Fields:
    """The validation of `Ipv4Header.parse`, without building the object: the stack's per-packet
    fast path. Returns (header_len, tos, total_length, ident, frag, ttl, proto, checksum, src,
    dst); raises MalformedPacket exactly as `parse` does."""
    n = len(buf)
    if n < IPV4_HLEN:
        raise MalformedPacket("ipv4.short")
    # Typed, so that the compiled build works on native ints, not on struct's objects.
    vihl: int
    tos: int
    total: int
    ident: int
    frag: int
    ttl: int
    proto: int
    csum: int
    src: bytes
    dst: bytes
    vihl, tos, total, ident, frag, ttl, proto, csum, src, dst = IPV4_HDR.unpack_from(buf, 0)
    if vihl >> 4 != 4:
        raise MalformedPacket("ipv4.bad_version")
    hlen = (vihl & 0x0F) << 2
    if hlen < IPV4_HLEN or hlen > n:
        raise MalformedPacket("ipv4.bad_ihl")
    if total < hlen or total > n:
        raise MalformedPacket("ipv4.bad_total_length")
    if verify_checksum:
        if hlen == IPV4_HLEN:       # no options: the words are the fields (the sum is > 0)
            a = int.from_bytes(src, "big")
            b = int.from_bytes(dst, "big")
            ok = (words_sum(vihl, tos, total, ident, frag, ttl, proto, csum)
                  + (a >> 16) + (a & 0xFFFF) + (b >> 16) + (b & 0xFFFF)) % 0xFFFF == 0
        else:
            ok = sum16(buf[:hlen]) == 0xFFFF
        if not ok:
            raise MalformedPacket("ipv4.bad_checksum")
    return hlen, tos, total, ident, frag, ttl, proto, csum, src, dst


def words_sum(vihl: int, tos: int, total: int, ident: int, frag: int, ttl: int, proto: int,
                csum: int) -> int:
    """The sum of an IPv4 header's words other than the two addresses', from its fields (add
    the addresses' words; the header is intact when the total is 0 modulo 0xFFFF, RFC 1071).
    `build_header` fills the checksum with it; the receive fast path (iface/fastpath.py) checks
    one with it, on fields it has unpacked already."""
    return (vihl << 8 | tos) + total + ident + frag + (ttl << 8 | proto) + csum


def build_header(
    src: bytes,
    dst: bytes,
    proto: int,
    payload_len: int,
    *,
    ident: int = 0,
    ttl: int = 64,
    tos: int = 0,
    df: bool = True,
) -> bytes:
    """A 20-byte IPv4 header without options, checksum filled in."""
    total = IPV4_HLEN + payload_len
    if total > IPV4_MAX_TOTAL_LENGTH or payload_len < 0:
        raise ValueError(f"IPv4 payload of {payload_len} bytes does not fit in a packet")
    if len(src) != 4 or len(dst) != 4:
        raise ValueError("IPv4 addresses must be 4 bytes")
    frag = FLAG_DF if df else 0
    # Sum the header words arithmetically (2**16 == 1 mod 0xFFFF), then pack once.
    s = (words_sum(0x45, tos, total, ident, frag, ttl, proto, 0)
         + int.from_bytes(src, "big") + int.from_bytes(dst, "big")) % 0xFFFF
    csum = ~(s or 0xFFFF) & 0xFFFF
    return IPV4_HDR.pack(0x45, tos, total, ident, frag, ttl, proto, csum, src, dst)
