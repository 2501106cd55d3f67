"""One address representation for both IP families: packed `bytes`, 4 or 16 long.

Like passt's `inany.h`, the stack never asks "is this IPv4?" in its flow, forwarding or
transport code: an address is its packed bytes (hashable, comparable, the form headers carry),
and the few questions asked about one (text form, martian, inside a prefix, from a host
socket's address string) are answered here for either length. IPv6 then adds a wire module,
ICMPv6/NDP and a framer next to the IPv4 ones; the helpers below already take 16 bytes.
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


def is_martian(ip: Addr) -> bool:
    """Loopback, "this network", multicast or reserved: never a real peer of the guest."""
    if len(ip) == V4_LEN:
        first = ip[0]
        return first == 127 or first == 0 or first >= 224
    a = ipaddress.IPv6Address(ip)
    return a.is_loopback or a.is_unspecified or a.is_multicast


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
    """The packed address of a host socket's peer string ("1.2.3.4", "::ffff:1.2.3.4",
    "fe80::1%eth0"), IPv4-mapped addresses unmapped; None when unparsable or IPv6 (the stack
    has no IPv6 side yet: such a client appears as the gateway)."""
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped
        if mapped is None:
            return None
        return mapped.packed
    return ip.packed
