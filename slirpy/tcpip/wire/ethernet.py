"""Ethernet II header (IEEE 802.3 with an EtherType; no 802.1Q tags are parsed)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from ..errors import MalformedPacket

ETH_HDR: Final = struct.Struct("!6s6sH")   # dst, src, ethertype
ETH_HLEN: Final = 14

ETHERTYPE_IPV4: Final = 0x0800
ETHERTYPE_ARP: Final = 0x0806
ETHERTYPE_IPV6: Final = 0x86DD

BROADCAST_MAC: Final = b"\xff" * 6

_HEX: Final = frozenset("0123456789abcdefABCDEF")


@dataclass(frozen=True, slots=True)
class EthernetHeader:
    dst: bytes
    src: bytes
    ethertype: int

    @classmethod
    def parse(cls, buf: bytes | bytearray | memoryview) -> "EthernetHeader":
        """Parse the first 14 bytes of `buf`; the payload is buf[ETH_HLEN:]."""
        return cls(*parse_fields(buf))

    def pack(self) -> bytes:
        if len(self.dst) != 6 or len(self.src) != 6:
            raise ValueError("MAC addresses must be 6 bytes")
        return ETH_HDR.pack(self.dst, self.src, self.ethertype)

    @property
    def is_broadcast(self) -> bool:
        return self.dst == BROADCAST_MAC

    @property
    def is_multicast(self) -> bool:
        """Group address (I/G bit set); includes broadcast."""
        return bool(self.dst[0] & 1)


def parse_fields(buf: bytes | bytearray | memoryview) -> tuple[bytes, bytes, int]:
    """(dst, src, ethertype) of the frame in `buf`: the parse itself, without building an
    EthernetHeader (the link layer calls this once per frame)."""
    if len(buf) < ETH_HLEN:
        raise MalformedPacket("eth.short")
    fields: tuple[bytes, bytes, int] = ETH_HDR.unpack_from(buf, 0)
    return fields


def mac_to_str(mac: bytes | bytearray | memoryview) -> str:
    """b'\\x02\\x00...' -> '02:00:...' (lower case)."""
    return ":".join(f"{b:02x}" for b in bytes(mac))


def mac_from_str(text: object) -> bytes:
    """'aa:bb:cc:dd:ee:ff' (or '-' separated) -> 6 bytes; ValueError on anything else."""
    if not isinstance(text, str):
        raise ValueError(f"invalid MAC address {text!r}")
    parts = text.split("-" if "-" in text else ":")
    if len(parts) != 6 or any(len(p) != 2 or not set(p) <= _HEX for p in parts):
        raise ValueError(f"invalid MAC address {text!r}")
    return bytes(int(p, 16) for p in parts)
