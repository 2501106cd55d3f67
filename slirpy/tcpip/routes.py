"""Routed prefixes: the subnets behind the guest that the Stack serves as their router.

Why a module: a sandbox network (issue 15) is a bridge in the holder's namespace whose members
reach the outside through the holder's tap0, i.e. through this Stack, with their own source
addresses. The Stack then takes a frame whose source is in one of these prefixes as it takes
the guest's own (flows, echo, DNS, counters) and sends the answers to the guest's MAC (the
holder's tap0), whose kernel routes them on. Everything else about them is decided here once:
which prefixes are acceptable (never the sandbox network, never a martian range, bounded in
number) and the (mask, values) pairs the per-packet source check walks: one per distinct
prefix length, so many networks of one size cost one set lookup. The guest's own network
is always checked first by the IP inputs, so the guest's packets never reach this code.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Union

from .addr import is_martian

MAX_ROUTED = 256            # prefixes per family; one /24 or /64 per network in practice

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
Pairs = tuple[tuple[int, frozenset[int]], ...]     # (mask, network values of that length)


def parse_prefixes(items: Iterable[object], own: Iterable[Network],
                   ipv6: bool = True) -> tuple[Network, ...]:
    """Validated prefixes from strings ("10.89.0.0/24", "fd89:0:0:1::/64") or networks.
    Raises ValueError naming the bad value and what is allowed: not a prefix (host bits set
    included), overlapping the sandbox's own network(s), a martian range (loopback,
    multicast, link-local...), IPv6 while the stack has none, or more than MAX_ROUTED a family."""
    out: list[Network] = []
    own_nets = list(own)
    for item in items:
        if isinstance(item, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
            net: Network = item
        elif isinstance(item, str):
            try:
                net = ipaddress.ip_network(item, strict=True)
            except ValueError:
                raise ValueError(f"{item!r} is not an address prefix such as 10.89.0.0/24 "
                                 f"(no host bits set)") from None
        else:
            raise ValueError(f"{item!r} is not an address prefix string")
        if net.version == 6 and not ipv6:
            raise ValueError(f"{net}: IPv6 is off in this sandbox network")
        if is_martian(net.network_address.packed) or net.is_link_local:
            raise ValueError(f"{net}: loopback, multicast, link-local and reserved ranges "
                             f"cannot be routed")
        for o in own_nets:
            if o.version == net.version and o.overlaps(net):
                raise ValueError(f"{net}: overlaps the sandbox network {o}")
        if net not in out:
            out.append(net)
    for version in (4, 6):
        if sum(1 for n in out if n.version == version) > MAX_ROUTED:
            raise ValueError(f"more than {MAX_ROUTED} IPv{version} prefixes")
    return tuple(out)


def pairs(networks: Iterable[Network], version: int) -> Pairs:
    """One family's prefixes grouped by length: (mask, the set of network values), longest
    first. The per-packet test is `int.from_bytes(ip) & mask in values` for one pair per
    distinct length (networks are usually all /24 or /64: one set lookup however many)."""
    by_mask: dict[int, set[int]] = {}
    for n in networks:
        if n.version == version:
            by_mask.setdefault(int(n.netmask), set()).add(int(n.network_address))
    return tuple((mask, frozenset(values))
                 for mask, values in sorted(by_mask.items(), reverse=True))


def contains(routed: Pairs, ip: bytes) -> bool:
    """Whether packed `ip` (of the pairs' family) is in one of the prefixes."""
    n = int.from_bytes(ip, "big")
    for mask, values in routed:
        if n & mask in values:
            return True
    return False
