"""IPv6 header (RFC 8200 §3) and the walk over its extension headers (RFC 8200 §4).

The fixed header is 40 bytes with no checksum; the upper-layer checksums cover the IPv6
pseudo-header instead (RFC 8200 §8.1, tcpip/checksum.py). Extension headers sit between the
fixed header and the upper-layer header, each naming the next (RFC 8200 §4.1).

`parse_fields` is what the stack calls per packet: it validates the fixed header, then walks
hop-by-hop options (§4.3), routing (§4.4) and destination options (§4.6) headers to the
upper-layer protocol, at most `EXT_HEADERS_MAX` of them so that a crafted chain costs a
bounded amount of work. Rules enforced on the way:

- hop-by-hop options may only follow the fixed header (§4.1);
- the options of hop-by-hop and destination-options headers are walked as TLVs (§4.2): an
  option running past its header, or an unrecognised option whose type's two high bits ask
  the receiver to discard the packet, drops it (only Pad1 and PadN are recognised; every
  option with the "skip" action, such as Router Alert, is skipped);
- a routing header with Segments Left != 0 asks us to forward the packet along a source
  route, which slirpy never does (§4.4): the packet is dropped;
- a fragment header (§4.5) ends the walk: slirpy reassembles no fragments, so the caller
  sees `PROTO_FRAGMENT` and drops the packet, as it drops IPv4 fragments.

A payload length of 0 (a jumbogram, RFC 2675) is refused: no link slirpy serves carries one.
Bytes past 40 + payload length are link padding and ignored, as for IPv4.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..errors import MalformedPacket

# version<<28 | traffic class<<20 | flow label, payload length, next header, hop limit, src, dst
IPV6_HDR = struct.Struct("!IHBB16s16s")
IPV6_HLEN = 40
IPV6_MIN_MTU = 1280                 # RFC 8200 §5
IPV6_MAX_PAYLOAD = 0xFFFF

PROTO_HOPOPTS = 0
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ROUTING = 43
PROTO_FRAGMENT = 44
PROTO_ICMPV6 = 58
PROTO_NONE = 59
PROTO_DSTOPTS = 60

EXT_HEADERS_MAX = 8

_VERSION_6 = 6 << 28
_OPT_PAD1 = 0
_OPT_PADN = 1


def _check_options(mv: memoryview | bytes | bytearray, start: int, stop: int) -> None:
    """Walk the TLV options of a hop-by-hop or destination-options header (RFC 8200 §4.2)."""
    i = start
    while i < stop:
        kind = mv[i]
        if kind == _OPT_PAD1:
            i += 1
            continue
        if i + 2 > stop:
            raise MalformedPacket("ipv6.ext_option")
        i += 2 + mv[i + 1]
        if i > stop or (kind != _OPT_PADN and kind & 0xC0):
            raise MalformedPacket("ipv6.ext_option")


def _walk(mv: memoryview | bytes | bytearray, nh: int, end: int) -> tuple[int, int]:
    """Follow the chain from the fixed header's next header `nh`; (proto, offset) of the first
    header that is not hop-by-hop, routing or destination options."""
    off = IPV6_HLEN
    count = 0
    while nh == PROTO_HOPOPTS or nh == PROTO_ROUTING or nh == PROTO_DSTOPTS:
        if count == EXT_HEADERS_MAX or (nh == PROTO_HOPOPTS and count):
            raise MalformedPacket("ipv6.ext_chain")
        count += 1
        if off + 8 > end:
            raise MalformedPacket("ipv6.ext_truncated")
        stop = off + ((mv[off + 1] + 1) << 3)
        if stop > end:
            raise MalformedPacket("ipv6.ext_truncated")
        if nh == PROTO_ROUTING:
            if mv[off + 3]:
                raise MalformedPacket("ipv6.routing")
        else:
            _check_options(mv, off + 2, stop)
        nh = mv[off]
        off = stop
    return nh, off


Fields = tuple[int, int, int, int, bytes, bytes]


def parse_fields(mv: memoryview | bytes | bytearray) -> Fields:
    """Validate the IPv6 packet at the start of `mv` and walk its extension headers.

    Returns (proto, l4_offset, end, hop_limit, src, dst): the upper-layer protocol and the
    offset of its header, both counted from the start of the IPv6 header, and `end`, the end
    of the packet (40 + payload length). See the module docstring for what is refused.
    """
    if len(mv) < IPV6_HLEN:
        raise MalformedPacket("ipv6.truncated")
    vtf, plen, nh, hop, src, dst = IPV6_HDR.unpack_from(mv, 0)
    if vtf >> 28 != 6:
        raise MalformedPacket("ipv6.bad_version")
    end = IPV6_HLEN + plen
    if plen == 0 or end > len(mv):
        raise MalformedPacket("ipv6.bad_length")
    if nh == PROTO_HOPOPTS or nh == PROTO_ROUTING or nh == PROTO_DSTOPTS:
        nh, off = _walk(mv, nh, end)
        return nh, off, end, hop, src, dst
    return nh, IPV6_HLEN, end, hop, src, dst


def build_header(src: bytes, dst: bytes, proto: int, payload_len: int, hop_limit: int = 64,
                 traffic_class: int = 0) -> bytes:
    """A 40-byte IPv6 header (flow label 0) for `payload_len` bytes of `proto`."""
    if len(src) != 16 or len(dst) != 16:
        raise ValueError("IPv6 addresses must be 16 bytes")
    if not 0 <= payload_len <= IPV6_MAX_PAYLOAD:
        raise ValueError(f"IPv6 payload of {payload_len} bytes does not fit in a packet")
    return IPV6_HDR.pack(_VERSION_6 | traffic_class << 20, payload_len, proto, hop_limit, src, dst)


@dataclass(frozen=True, slots=True)
class Ipv6Header:
    """A validated IPv6 header and the extension headers walked past.

    `next_header` is the upper-layer protocol found by the walk (or PROTO_FRAGMENT), whose
    header starts at `l4_offset`. `ext_types` and `ext_headers` keep the walked extension
    headers (their types in order, and their raw bytes, buf[40:l4_offset]) so that `pack`
    gives back exactly the bytes parsed.
    """

    traffic_class: int
    flow_label: int
    payload_length: int
    next_header: int
    hop_limit: int
    src: bytes
    dst: bytes
    l4_offset: int = IPV6_HLEN
    ext_types: tuple[int, ...] = ()
    ext_headers: bytes = b""

    @property
    def end(self) -> int:
        """Offset of the end of the packet: bytes after it are link padding."""
        return IPV6_HLEN + self.payload_length

    @classmethod
    def parse(cls, buf: bytes | bytearray | memoryview) -> "Ipv6Header":
        proto, l4, end, hop, src, dst = parse_fields(buf)
        vtf, plen, nh = IPV6_HDR.unpack_from(buf, 0)[:3]
        types = []
        off = IPV6_HLEN
        while off < l4:
            types.append(nh)
            nh = buf[off]
            off += (buf[off + 1] + 1) << 3
        return cls((vtf >> 20) & 0xFF, vtf & 0xFFFFF, plen, proto, hop, src, dst, l4,
                   tuple(types), bytes(buf[IPV6_HLEN:l4]))

    def pack(self) -> bytes:
        """The fixed header followed by `ext_headers`, exactly as described."""
        if self.l4_offset != IPV6_HLEN + len(self.ext_headers) or len(self.ext_headers) & 7 \
                or bool(self.ext_types) != bool(self.ext_headers):
            raise ValueError("Ipv6Header: l4_offset must be 40 + len(ext_headers), ext headers "
                             "a multiple of 8 bytes, with their types")
        first = self.ext_types[0] if self.ext_types else self.next_header
        return IPV6_HDR.pack(_VERSION_6 | self.traffic_class << 20 | self.flow_label,
                             self.payload_length, first, self.hop_limit,
                             self.src, self.dst) + self.ext_headers
