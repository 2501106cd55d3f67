"""ICMPv4 messages (RFC 792): parsing, echo replies, and the error messages slirpy emits.

Everything here is the ICMP message only (what follows the IPv4 header); the caller adds the
IPv4 header with `ipv4.build_header(..., PROTO_ICMP, len(message))`.

Error messages quote the offending datagram as RFC 1812 §4.3.2.3 asks: its IP header and as
much of its data as keeps the whole error packet within 576 bytes (20-byte IP header + 8-byte
ICMP header + at most 548 quoted bytes). Whether an error may be sent at all (never about an
ICMP error, a non-first fragment, a broadcast; RFC 1812 §4.3.2.7) is the caller's policy;
`is_error` helps with the first rule.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..checksum import finish, sum16
from ..errors import MalformedPacket

ICMP_HDR = struct.Struct("!BBH4s")   # type, code, checksum, rest-of-header
ICMP_HLEN = 8

ECHO_REPLY = 0
DEST_UNREACH = 3
SOURCE_QUENCH = 4
REDIRECT = 5
ECHO_REQUEST = 8
TIME_EXCEEDED = 11
PARAMETER_PROBLEM = 12

UNREACH_NET = 0
UNREACH_HOST = 1
UNREACH_PROTO = 2
UNREACH_PORT = 3
UNREACH_FRAG_NEEDED = 4
UNREACH_NET_PROHIB = 9
UNREACH_HOST_PROHIB = 10
UNREACH_ADMIN = 13

TTL_EXCEEDED_IN_TRANSIT = 0
FRAG_REASSEMBLY_TIME_EXCEEDED = 1

ERROR_PACKET_MAX = 576                       # RFC 1812 §4.3.2.3, including the IP header
ERROR_QUOTE_MAX = ERROR_PACKET_MAX - 20 - ICMP_HLEN   # 548

_ERROR_TYPES = frozenset((DEST_UNREACH, SOURCE_QUENCH, REDIRECT, TIME_EXCEEDED, PARAMETER_PROBLEM))
_ECHO_ID_SEQ = struct.Struct("!HH")
_FRAG_NEEDED_REST = struct.Struct("!xxH")
_ZERO_REST = bytes(4)


def is_error(icmp_type: int) -> bool:
    """True for ICMP error types, about which no ICMP error may be sent (RFC 1122 §3.2.2)."""
    return icmp_type in _ERROR_TYPES


@dataclass(frozen=True, slots=True)
class IcmpHeader:
    type: int
    code: int
    checksum: int
    rest: bytes          # the 4 type-specific bytes after the checksum

    @property
    def ident(self) -> int:
        """Echo identifier (meaningful for ECHO_REQUEST/ECHO_REPLY)."""
        ident: int = _ECHO_ID_SEQ.unpack(self.rest)[0]
        return ident

    @property
    def sequence(self) -> int:
        """Echo sequence number (meaningful for ECHO_REQUEST/ECHO_REPLY)."""
        sequence: int = _ECHO_ID_SEQ.unpack(self.rest)[1]
        return sequence

    @property
    def next_hop_mtu(self) -> int:
        """Next-hop MTU of a DEST_UNREACH/UNREACH_FRAG_NEEDED message (RFC 1191)."""
        mtu: int = _FRAG_NEEDED_REST.unpack(self.rest)[0]
        return mtu

    @classmethod
    def parse(cls, buf: bytes | bytearray | memoryview, verify_checksum: bool = True) -> "IcmpHeader":
        """Parse `buf`, the whole ICMP message (the checksum covers all of it)."""
        if len(buf) < ICMP_HLEN:
            raise MalformedPacket("icmp.short")
        if verify_checksum and sum16(buf) != 0xFFFF:
            raise MalformedPacket("icmp.bad_checksum")
        return cls(*ICMP_HDR.unpack_from(buf, 0))

    def pack(self) -> bytes:
        """The 8-byte header exactly as described, including the stored `checksum`."""
        if len(self.rest) != 4:
            raise ValueError("ICMP rest-of-header must be 4 bytes")
        return ICMP_HDR.pack(self.type, self.code, self.checksum, self.rest)


def build_message(icmp_type: int, code: int, rest: bytes, payload: bytes | bytearray | memoryview = b"") -> bytes:
    """ICMP header + payload, checksum filled in."""
    if len(rest) != 4:
        raise ValueError("ICMP rest-of-header must be 4 bytes")
    s = sum16(payload, sum16(rest, icmp_type << 8 | code))
    return ICMP_HDR.pack(icmp_type, code, finish(s), rest) + bytes(payload)


def build_echo_reply(request: bytes | bytearray | memoryview) -> bytes:
    """The echo reply to `request`, a whole ICMP echo request message (RFC 792: same
    identifier, sequence number and data; type 0)."""
    if len(request) < ICMP_HLEN:
        raise MalformedPacket("icmp.short")
    mv = memoryview(request)
    return build_message(ECHO_REPLY, 0, bytes(mv[4:8]), mv[8:])


def _quote(original_ip_packet: bytes | bytearray | memoryview) -> bytes:
    mv = memoryview(original_ip_packet)
    # Quote the datagram, not any link padding after it, when its length field is sane.
    if len(mv) >= 4 and mv[0] >> 4 == 4:
        total = mv[2] << 8 | mv[3]
        if 20 <= total < len(mv):
            mv = mv[:total]
    return bytes(mv[:ERROR_QUOTE_MAX])


def build_dest_unreachable(code: int, original_ip_packet: bytes | bytearray | memoryview, next_hop_mtu: int = 0) -> bytes:
    """DEST_UNREACH quoting `original_ip_packet`; `next_hop_mtu` goes into the header for
    UNREACH_FRAG_NEEDED (RFC 1191 §4), zero otherwise."""
    rest = _FRAG_NEEDED_REST.pack(next_hop_mtu) if code == UNREACH_FRAG_NEEDED else _ZERO_REST
    return build_message(DEST_UNREACH, code, rest, _quote(original_ip_packet))


def build_time_exceeded(code: int, original_ip_packet: bytes | bytearray | memoryview) -> bytes:
    """TIME_EXCEEDED quoting `original_ip_packet` (RFC 792, RFC 1812 §4.3.2.3)."""
    return build_message(TIME_EXCEEDED, code, _ZERO_REST, _quote(original_ip_packet))
