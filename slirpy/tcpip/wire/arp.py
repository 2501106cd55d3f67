"""ARP for IPv4 over Ethernet (RFC 826): the only hardware/protocol pair slirpy speaks."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..errors import MalformedPacket

ARP_HDR = struct.Struct("!HHBBH6s4s6s4s")  # htype ptype hlen plen op sha spa tha tpa
ARP_LEN = 28

HTYPE_ETHERNET = 1
PTYPE_IPV4 = 0x0800
OP_REQUEST = 1
OP_REPLY = 2

_PREFIX = (HTYPE_ETHERNET, PTYPE_IPV4, 6, 4)


@dataclass(frozen=True, slots=True)
class ArpPacket:
    op: int
    sender_mac: bytes
    sender_ip: bytes
    target_mac: bytes
    target_ip: bytes

    @classmethod
    def parse(cls, buf: bytes | bytearray | memoryview) -> "ArpPacket":
        """Parse the ARP packet at the start of `buf` (the Ethernet payload; padding allowed)."""
        if len(buf) < ARP_LEN:
            raise MalformedPacket("arp.short")
        htype, ptype, hlen, plen, op, sha, spa, tha, tpa = ARP_HDR.unpack_from(buf, 0)
        if (htype, ptype, hlen, plen) != _PREFIX:
            raise MalformedPacket("arp.unsupported")
        if op != OP_REQUEST and op != OP_REPLY:
            raise MalformedPacket("arp.bad_op")
        return cls(op, sha, spa, tha, tpa)

    def pack(self) -> bytes:
        if (len(self.sender_mac), len(self.sender_ip), len(self.target_mac), len(self.target_ip)) != (6, 4, 6, 4):
            raise ValueError("ARP: MACs must be 6 bytes and IPs 4 bytes")
        return ARP_HDR.pack(HTYPE_ETHERNET, PTYPE_IPV4, 6, 4, self.op,
                            self.sender_mac, self.sender_ip, self.target_mac, self.target_ip)

    @property
    def is_gratuitous(self) -> bool:
        """Sender and target protocol addresses are the same (RFC 5227 §3 announcement)."""
        return self.sender_ip == self.target_ip
