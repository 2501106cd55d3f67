"""UDP header (RFC 768) with the IPv4 or IPv6 pseudo-header checksum (by address length).

A checksum field of 0 means the sender computed none: allowed over IPv4, invalid over IPv6
(RFC 8200 §8.1), where such a datagram is refused when checksums are verified. A computed
checksum of 0 is therefore sent as 0xFFFF.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from ..checksum import finish, pseudo_header_sum, sum16
from ..errors import MalformedPacket

UDP_HDR: Final = struct.Struct("!HHHH")    # src_port, dst_port, length, checksum
UDP_HLEN: Final = 8
UDP_MAX_LENGTH = 0xFFFF
PROTO_UDP = 17


@dataclass(slots=True, unsafe_hash=True)
class UdpHeader:
    """Not frozen (as TcpSegment): one is built per datagram received, and a frozen dataclass's
    __init__ costs several times as much compiled. Treat it as read-only."""

    src_port: int
    dst_port: int
    length: int          # header + payload, from the header; the payload is buf[8:length]
    checksum: int

    @classmethod
    def parse(
        cls,
        buf: bytes | bytearray | memoryview,
        src_ip: bytes = b"",
        dst_ip: bytes = b"",
        verify_checksum: bool = False,
    ) -> "UdpHeader":
        """Parse `buf`, the IP payload. Bytes after `length` are allowed and ignored.

        With `verify_checksum` (which needs `src_ip`/`dst_ip`, 4 or 16 bytes each), a nonzero
        checksum is checked over buf[:length]; a zero one is accepted only over IPv4.
        """
        n = len(buf)
        if n < UDP_HLEN:
            raise MalformedPacket("udp.short")
        sport, dport, length, csum = UDP_HDR.unpack_from(buf, 0)
        if length < UDP_HLEN or length > n:
            raise MalformedPacket("udp.bad_length")
        if verify_checksum:
            if csum == 0:
                if len(src_ip) == 16:
                    raise MalformedPacket("udp.zero_checksum_v6")
            elif sum16(buf[:length], pseudo_header_sum(src_ip, dst_ip, PROTO_UDP, length)) != 0xFFFF:
                raise MalformedPacket("udp.bad_checksum")
        return cls(sport, dport, length, csum)

    def pack(self) -> bytes:
        """The 8-byte header exactly as described, including the stored `checksum`."""
        return UDP_HDR.pack(self.src_port, self.dst_port, self.length, self.checksum)


def build_datagram(
    src_ip: bytes,
    dst_ip: bytes,
    src_port: int,
    dst_port: int,
    payload: bytes | bytearray | memoryview,
    checksum: bool = True,
) -> bytes:
    """UDP header + payload. With `checksum`, the pseudo-header checksum is filled in (over
    IPv6 it is mandatory: `checksum=False` with 16-byte addresses is a ValueError)."""
    length = UDP_HLEN + len(payload)
    if length > UDP_MAX_LENGTH:
        raise ValueError(f"UDP payload of {len(payload)} bytes does not fit in a datagram")
    csum = 0
    if not checksum and len(src_ip) == 16:
        raise ValueError("a UDP datagram over IPv6 must carry a checksum")
    if checksum:
        s = sum16(payload, pseudo_header_sum(src_ip, dst_ip, PROTO_UDP, length)
                  + (src_port + dst_port + length))
        csum = finish(s) or 0xFFFF
    return UDP_HDR.pack(src_port, dst_port, length, csum) + bytes(payload)
