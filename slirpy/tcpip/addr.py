"""One address representation for both IP families: packed `bytes`, 4 or 16 long.

Like passt's `inany.h`, the stack never asks "is this IPv4?" in its flow, forwarding or
transport code: an address is its packed bytes (hashable, comparable, the form headers carry),
and the few questions asked about one (text form, martian, inside a prefix, from a host
socket's address string) are answered here for either length. IPv6 then adds a wire module,
ICMPv6/NDP and a framer next to the IPv4 ones; the helpers below take either length.
"""

from __future__ import annotations

import ipaddress

Addr = bytes                    # packed, len 4 (IPv4) or 16 (IPv6)
V4_LEN = 4
V6_LEN = 16


def ntoa(ip: Addr) -> str:
    """Text form of a packed address (for 4 bytes what str(IPv4Address(ip)) gives, faster)."""
    if len(ip) == V4_LEN:
        return "%d.%d.%d.%d" % (ip[0], ip[1], ip[2], ip[3])
    return str(ipaddress.IPv6Address(ip))


# IPv6 prefixes that are never a real peer of the guest, as (value, mask) of the 128-bit
# integer: multicast ff00::/8, link-local fe80::/10 (only meaningful on one link: the guest's
# link-local peers are on tap0, not behind the gateway), the deprecated site-local fec0::/10,
# IPv4-mapped ::ffff:0:0/96 (an IPv4 address in IPv6 clothes: the guest uses IPv4 for those),
# and ::/96, which holds the unspecified address, loopback ::1 and the deprecated
# IPv4-compatible addresses.
_V6_MARTIANS = tuple(
    (int(ipaddress.IPv6Address(a)), ((1 << 128) - 1) ^ ((1 << (128 - n)) - 1))
    for a, n in (("ff00::", 8), ("fe80::", 10), ("fec0::", 10), ("::ffff:0:0", 96), ("::", 96))
)


def is_martian(ip: Addr) -> bool:
    """Loopback, "this network"/unspecified, multicast, link-local (IPv6), IPv4-mapped
    (IPv6) or reserved: never a real peer of the guest through the gateway."""
    if len(ip) == V4_LEN:
        first = ip[0]
        return first == 127 or first == 0 or first >= 224
    n = int.from_bytes(ip, "big")
    for value, mask in _V6_MARTIANS:
        if n & mask == value:
            return True
    return False


def is_link_local6(ip: Addr) -> bool:
    """fe80::/10: an IPv6 address valid on one link only (NDP and RAs use them)."""
    return len(ip) == V6_LEN and ip[0] == 0xFE and ip[1] & 0xC0 == 0x80


class Prefix:
    """An address prefix (the sandbox network): `lo`/`mask` as integers of the family's width,
    so the per-packet test is one `int.from_bytes(ip) & mask == lo` the caller may inline."""

    __slots__ = ("lo", "mask", "length")

    def __init__(self, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> None:
        self.lo = int(network.network_address)
        self.mask = int(network.netmask)
        self.length = network.max_prefixlen // 8

    def __contains__(self, ip: object) -> bool:
        return (isinstance(ip, bytes) and len(ip) == self.length
                and (int.from_bytes(ip, "big") & self.mask) == self.lo)


def parse_client_address(text: str) -> Addr | None:
    """The packed address of a host socket's peer string ("1.2.3.4", "2001:db8::1",
    "::ffff:1.2.3.4", "fe80::1%eth0"): 4 bytes for IPv4 and IPv4-mapped addresses (unmapped),
    16 for other IPv6 addresses (a zone index dropped), None when unparsable."""
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped
        if mapped is not None:
            return mapped.packed
    return ip.packed
