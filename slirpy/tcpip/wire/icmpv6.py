"""ICMPv6 (RFC 4443) and Neighbor Discovery (RFC 4861, RDNSS of RFC 8106): parsing, echo
replies, the error messages slirpy emits, and the NDP messages of its gateway.

IPv6 has no ARP and no broadcast: the gateway finds the guest's MAC, and the guest the
gateway's, with Neighbor Solicitations and Advertisements carried in ICMPv6, and a guest that
configures itself (RFC 4862) learns its prefix, MTU and DNS server from Router
Advertisements. Everything here is the ICMPv6 message only (what follows the IPv6 header and
its extension headers); the caller adds the IPv6 header with `ipv6.build_header(...,
PROTO_ICMPV6, len(message))`, hop limit 255 for NDP (RFC 4861 §6.1.2, §7.1.1).

Unlike ICMPv4, the checksum covers the IPv6 pseudo-header (RFC 4443 §2.3), so every parse and
build takes the source and destination addresses.

Errors quote as much of the offending packet as keeps the error within the IPv6 minimum MTU
(RFC 4443 §2.4 (c)): 1280 - 40 - 8 bytes. Whether one may be sent at all (never about an
error message, RFC 4443 §2.4 (e)) is the caller's policy; `is_error` helps.

The NDP parsers take `Icmpv6Header.body`, the bytes after the 8-byte ICMPv6 header, and check
what RFC 4861 §7.1.1, §7.1.2 and §6.1.1 ask of the message itself: its length, a target that
is not multicast, and options of nonzero length that stay inside the message. The checks that
need the IPv6 header (hop limit 255, code 0, the rules about an unspecified source or a
multicast destination) are the caller's.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from ..checksum import finish, pseudo_header_sum, sum16
from ..errors import MalformedPacket
from .ipv6 import IPV6_MIN_MTU

ICMPV6_HDR = struct.Struct("!BBHI")      # type, code, checksum, rest-of-header
ICMPV6_HLEN = 8
PROTO_ICMPV6 = 58

# RFC 4443 §2.1 (errors < 128), §4; RFC 4861 §4
DEST_UNREACH = 1
PACKET_TOO_BIG = 2
TIME_EXCEEDED = 3
PARAM_PROBLEM = 4
ECHO_REQUEST = 128
ECHO_REPLY = 129
ROUTER_SOLICIT = 133
ROUTER_ADVERT = 134
NEIGHBOR_SOLICIT = 135
NEIGHBOR_ADVERT = 136
REDIRECT = 137

# RFC 4443 §3.1
UNREACH_NO_ROUTE = 0
UNREACH_ADMIN = 1
UNREACH_BEYOND_SCOPE = 2
UNREACH_ADDR = 3
UNREACH_PORT = 4

# RFC 4443 §3.3, §3.4
HOP_LIMIT_EXCEEDED = 0
REASSEMBLY_TIME_EXCEEDED = 1
PARAM_BAD_HEADER = 0
PARAM_UNKNOWN_NEXT_HEADER = 1
PARAM_UNKNOWN_OPTION = 2

ERROR_QUOTE_MAX = 1280 - 40 - ICMPV6_HLEN       # 1232

# Neighbor Advertisement flags, as they sit in the "rest" word (RFC 4861 §4.4)
NA_ROUTER = 0x80000000
NA_SOLICITED = 0x40000000
NA_OVERRIDE = 0x20000000
NA_FLAGS = NA_ROUTER | NA_SOLICITED | NA_OVERRIDE

# NDP option types (RFC 4861 §4.6, RFC 8106 §5.1)
OPT_SOURCE_LLADDR = 1
OPT_TARGET_LLADDR = 2
OPT_PREFIX_INFO = 3
OPT_REDIRECTED_HEADER = 4
OPT_MTU = 5
OPT_RDNSS = 25

PREFIX_ON_LINK = 0x80          # L flag of the prefix information option
PREFIX_AUTONOMOUS = 0x40       # A flag

NDP_HOP_LIMIT = 255                               # RFC 4861 §6.1.1, §7.1.1: checked on receipt
ALL_NODES = bytes.fromhex("ff020000000000000000000000000001")     # RFC 4291 §2.7.1
ALL_ROUTERS = bytes.fromhex("ff020000000000000000000000000002")
UNSPECIFIED = bytes(16)

_U32 = struct.Struct("!I")
# A module-level name for memoryview: compiled by mypyc 2.4, a dataclass field annotated with
# a bare `memoryview` is looked up in the module globals, where it is not.
_View = memoryview
_PREFIX_OPT = struct.Struct("!BBBBIII16s")   # type, len, prefix len, flags, valid, preferred, 0, prefix
_MTU_OPT = struct.Struct("!BBHI")            # type, len, reserved, mtu
_RDNSS_HDR = struct.Struct("!BBHI")          # type, len, reserved, lifetime
_RA_FIXED = struct.Struct("!II")             # reachable time, retrans timer
_ZERO_REST = bytes(4)
_SOLICITED_NODE_PREFIX = bytes.fromhex("ff02" "0000" "0000" "0000" "0000" "0001" "ff")
_LINK_LOCAL_PREFIX = bytes.fromhex("fe80000000000000")

Buf = bytes | bytearray | memoryview


def is_error(icmp_type: int) -> bool:
    """True for ICMPv6 error messages (types below 128, RFC 4443 §2.1), about which no ICMPv6
    error may be sent (RFC 4443 §2.4 (e.1))."""
    return icmp_type < 128


@dataclass(frozen=True, slots=True)
class Icmpv6Header:
    """A checked ICMPv6 message: `rest` is the 32-bit word after the checksum, `body` the
    bytes after the 8-byte header (a view of the parsed buffer)."""

    type: int
    code: int
    rest: int
    body: _View

    @property
    def ident(self) -> int:
        """Echo identifier (ECHO_REQUEST/ECHO_REPLY, RFC 4443 §4.1)."""
        return self.rest >> 16

    @property
    def sequence(self) -> int:
        """Echo sequence number (ECHO_REQUEST/ECHO_REPLY)."""
        return self.rest & 0xFFFF

    @property
    def mtu(self) -> int:
        """The MTU of a PACKET_TOO_BIG message (RFC 4443 §3.2)."""
        return self.rest

    @property
    def pointer(self) -> int:
        """The offset of the offending octet of a PARAM_PROBLEM message (RFC 4443 §3.4)."""
        return self.rest

    @classmethod
    def parse(cls, msg: Buf, src: bytes, dst: bytes, verify: bool = True) -> "Icmpv6Header":
        """Parse `msg`, the whole ICMPv6 message from `src` to `dst` (16 bytes each)."""
        n = len(msg)
        if n < ICMPV6_HLEN:
            raise MalformedPacket("icmpv6.truncated")
        if verify and sum16(msg, pseudo_header_sum(src, dst, PROTO_ICMPV6, n)) != 0xFFFF:
            raise MalformedPacket("icmpv6.bad_checksum")
        icmp_type, code, _csum, rest = ICMPV6_HDR.unpack_from(msg, 0)
        mv = msg if type(msg) is memoryview else memoryview(msg)
        return cls(icmp_type, code, rest, mv[ICMPV6_HLEN:])

    def pack(self, src: bytes, dst: bytes) -> bytes:
        """The whole message from `src` to `dst`, checksum filled in."""
        return build_message(src, dst, self.type, self.code, _U32.pack(self.rest), self.body)


def build_message(src: bytes, dst: bytes, icmp_type: int, code: int, rest: bytes, data: Buf = b"") -> bytes:
    """ICMPv6 header + `data` from `src` to `dst`, checksum over the pseudo-header filled in."""
    if len(rest) != 4:
        raise ValueError("ICMPv6 rest-of-header must be 4 bytes")
    length = ICMPV6_HLEN + len(data)
    s = sum16(data, sum16(rest, pseudo_header_sum(src, dst, PROTO_ICMPV6, length)
                          + (icmp_type << 8 | code)))
    return ICMPV6_HDR.pack(icmp_type, code, finish(s), int.from_bytes(rest, "big")) + bytes(data)


def build_echo_reply(src: bytes, dst: bytes, request_msg: Buf) -> bytes:
    """The echo reply to `request_msg`, a whole echo request message (RFC 4443 §4.2: same
    identifier, sequence number and data), sent from `src` to `dst`."""
    if len(request_msg) < ICMPV6_HLEN:
        raise MalformedPacket("icmpv6.truncated")
    mv = memoryview(request_msg)
    return build_message(src, dst, ECHO_REPLY, 0, bytes(mv[4:8]), mv[8:])


def build_error(src: bytes, dst: bytes, icmp_type: int, code: int, info: int, quote: Buf) -> bytes:
    """An error message quoting `quote`, the offending packet from its IPv6 header on, cut to
    its payload length when that is sane (no link padding) and to ERROR_QUOTE_MAX bytes.

    `info` fills the 4 "rest" bytes: the MTU of PACKET_TOO_BIG, the pointer of PARAM_PROBLEM,
    0 for the others (RFC 4443 §3).
    """
    if not 0 <= info <= 0xFFFFFFFF:
        raise ValueError("ICMPv6 error info must fit in 32 bits")
    mv = memoryview(quote)
    if len(mv) >= 40 and mv[0] >> 4 == 6:
        end = 40 + (mv[4] << 8 | mv[5])
        if 40 < end < len(mv):
            mv = mv[:end]
    return build_message(src, dst, icmp_type, code, _U32.pack(info), mv[:ERROR_QUOTE_MAX])


# ------------------------------------------------------------------ Neighbor Discovery

def _lladdr_option(body: Buf, start: int, wanted: int) -> bytes | None:
    """Validate the options in body[start:] (RFC 4861 §4.6: nonzero length in units of 8
    bytes, inside the message) and return the MAC of the first option of type `wanted`."""
    found = None
    n = len(body)
    i = start
    while i < n:
        if i + 2 > n:
            raise MalformedPacket("ndp.bad_option")
        units = body[i + 1]
        if units == 0 or i + (units << 3) > n:
            raise MalformedPacket("ndp.bad_option")
        if body[i] == wanted and found is None:
            if units != 1:           # Ethernet: type, length, 6-byte MAC (RFC 2464 §6)
                raise MalformedPacket("ndp.bad_option")
            found = bytes(body[i + 2:i + 8])
        i += units << 3
    return found


def _target(body: Buf) -> bytes:
    if len(body) < 16:
        raise MalformedPacket("ndp.truncated")
    target = bytes(body[:16])
    if target[0] == 0xFF:
        raise MalformedPacket("ndp.bad_target")
    return target


def parse_ns(body: Buf) -> tuple[bytes, bytes | None]:
    """(target, source link-layer address or None) of a Neighbor Solicitation (RFC 4861 §4.3);
    `body` follows the 8-byte ICMPv6 header."""
    target = _target(body)
    return target, _lladdr_option(body, 16, OPT_SOURCE_LLADDR)


def parse_na(body: Buf, rest: int) -> tuple[int, bytes, bytes | None]:
    """(flags, target, target link-layer address or None) of a Neighbor Advertisement
    (RFC 4861 §4.4). The R, S and O flags sit in the header's `rest` word
    (`Icmpv6Header.rest`), not in `body`; `flags` is `rest & NA_FLAGS`."""
    target = _target(body)
    return rest & NA_FLAGS, target, _lladdr_option(body, 16, OPT_TARGET_LLADDR)


def parse_rs(body: Buf) -> bytes | None:
    """The source link-layer address of a Router Solicitation (RFC 4861 §4.1), or None; its
    body is options only (the reserved word is the header's `rest`)."""
    return _lladdr_option(body, 0, OPT_SOURCE_LLADDR)


def _check_mac(mac: bytes) -> None:
    if len(mac) != 6:
        raise ValueError("MAC addresses must be 6 bytes")


def build_na(src: bytes, dst: bytes, target: bytes, mac: bytes, *, router: bool, solicited: bool,
             override: bool = True) -> bytes:
    """A Neighbor Advertisement for `target` at `mac`, with the target link-layer address
    option (RFC 4861 §4.4, §7.2.4)."""
    _check_mac(mac)
    if len(target) != 16:
        raise ValueError("NDP target must be 16 bytes")
    flags = (router and NA_ROUTER) | (solicited and NA_SOLICITED) | (override and NA_OVERRIDE)
    body = target + bytes((OPT_TARGET_LLADDR, 1)) + mac
    return build_message(src, dst, NEIGHBOR_ADVERT, 0, _U32.pack(flags), body)


def build_ns(src: bytes, dst: bytes, target: bytes, mac: bytes) -> bytes:
    """A Neighbor Solicitation for `target` from `mac`. The source link-layer address option
    is left out when `src` is unspecified (duplicate address detection, RFC 4861 §4.3)."""
    _check_mac(mac)
    if len(target) != 16:
        raise ValueError("NDP target must be 16 bytes")
    body = target if src == UNSPECIFIED else target + bytes((OPT_SOURCE_LLADDR, 1)) + mac
    return build_message(src, dst, NEIGHBOR_SOLICIT, 0, _ZERO_REST, body)


def build_ra(src: bytes, dst: bytes, mac: bytes, *, prefix: bytes, prefix_len: int, mtu: int,
             rdnss: Sequence[bytes], router_lifetime: int, valid_lifetime: int,
             preferred_lifetime: int, rdnss_lifetime: int) -> bytes:
    """A Router Advertisement (RFC 4861 §4.2) from `src`, a link-local address (§6.1.2), with
    the options: source link-layer address `mac`; prefix information for `prefix`/`prefix_len`
    with the on-link (L) and autonomous (A) flags (§4.6.2, RFC 4862 §5.5.3), host bits
    cleared; MTU (§4.6.4); recursive DNS servers `rdnss` (RFC 8106 §5.1; left out when empty).
    Cur hop limit 0 (unspecified: the guest keeps its own), no M or O flag, reachable time
    and retrans timer 0 (unspecified). Lifetimes are in seconds."""
    _check_mac(mac)
    if len(src) != 16 or src[0] != 0xFE or src[1] & 0xC0 != 0x80:
        raise ValueError("a Router Advertisement is sent from a link-local address")
    if len(prefix) != 16 or not 0 <= prefix_len <= 128:
        raise ValueError("RA prefix must be 16 bytes with a length of 0..128")
    if not 0 <= router_lifetime <= 0xFFFF or not IPV6_MIN_MTU <= mtu <= 0xFFFFFFFF:
        raise ValueError("RA router lifetime must fit in 16 bits and the MTU be >= 1280")
    if not 0 <= preferred_lifetime <= valid_lifetime <= 0xFFFFFFFF \
            or not 0 <= rdnss_lifetime <= 0xFFFFFFFF:
        raise ValueError("RA lifetimes must fit in 32 bits, preferred <= valid")
    if any(len(a) != 16 for a in rdnss):
        raise ValueError("RDNSS addresses must be 16 bytes")
    mask = ((1 << 128) - 1) ^ ((1 << (128 - prefix_len)) - 1)
    net = (int.from_bytes(prefix, "big") & mask).to_bytes(16, "big")
    body = bytearray(_RA_FIXED.pack(0, 0))
    body += bytes((OPT_SOURCE_LLADDR, 1)) + mac
    body += _PREFIX_OPT.pack(OPT_PREFIX_INFO, 4, prefix_len, PREFIX_ON_LINK | PREFIX_AUTONOMOUS,
                             valid_lifetime, preferred_lifetime, 0, net)
    body += _MTU_OPT.pack(OPT_MTU, 1, 0, mtu)
    if rdnss:
        body += _RDNSS_HDR.pack(OPT_RDNSS, 1 + 2 * len(rdnss), 0, rdnss_lifetime)
        body += b"".join(rdnss)
    rest = _U32.pack(router_lifetime)        # cur hop limit 0, flags 0, router lifetime
    return build_message(src, dst, ROUTER_ADVERT, 0, rest, body)



def solicited_node(addr: bytes) -> bytes:
    """The solicited-node multicast address of `addr`: ff02::1:ff00:0/104 + its last 24 bits
    (RFC 4291 §2.7.1)."""
    if len(addr) != 16:
        raise ValueError("IPv6 addresses must be 16 bytes")
    return _SOLICITED_NODE_PREFIX + addr[13:]


def multicast_mac(addr: bytes) -> bytes:
    """The Ethernet address of IPv6 multicast `addr`: 33:33 + its last 32 bits (RFC 2464 §7)."""
    if len(addr) != 16 or addr[0] != 0xFF:
        raise ValueError("not a 16-byte IPv6 multicast address")
    return b"\x33\x33" + addr[12:]


def link_local_from_mac(mac: bytes) -> bytes:
    """fe80::/64 with the modified EUI-64 interface identifier of `mac` (RFC 4291 §2.5.1,
    Appendix A; RFC 2464 §4): the universal/local bit flipped, ff:fe in the middle."""
    _check_mac(mac)
    return _LINK_LOCAL_PREFIX + bytes((mac[0] ^ 0x02, mac[1], mac[2], 0xFF, 0xFE)) + mac[3:]
