"""IPv6 input: validate the header and walk its extension headers (with the wire module's
parser), drop what the stack does not take (fragments, sources it cannot answer), learn the
sender's MAC, and hand the packet to its transport handler.

Why a module: this is the only code that knows the packet is IPv6 on the way in, as ipv4.py is
for IPv4; the transport handlers below get the same (packet, l4 offset, src, dst, verify, now)
from either. Sources inside network6 may open flows; link-local and unspecified sources are
link business only, so they reach ICMPv6 (neighbour discovery, echo to the gateway's
link-local address) and nothing else. Any accepted packet may bring an unsolicited Router
Advertisement (ndp.py) when none went out for a while. Sources in the routed prefixes
(`routed`, routes.py) may open flows too, as from network6 (their MAC is not learned: they are
behind the guest); that list is walked only for a source outside network6.
"""

from __future__ import annotations

from typing import Callable

from ..addr import Prefix, is_link_local6
from ..routes import Pairs
from ..wire.icmpv6 import UNSPECIFIED
from ..wire.ipv6 import PROTO_FRAGMENT, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, parse_fields
from .ipv4 import IcmpInput, L4Input
from .link import Link
from .ndp import Ndp
from .neighbours import Neighbours


class Ipv6Input:
    """The IPv6 receive path; the transport inputs are wired by the Stack."""

    def __init__(self, link: Link, neighbours: Neighbours, ndp: Ndp, net: Prefix,
                 tcp: L4Input, udp: L4Input, icmp: IcmpInput, icmp_link: IcmpInput) -> None:
        self._counters = link.counters
        self._neighbours = neighbours.entries
        self._ndp = ndp
        self._learn: Callable[[bytes, bytes], None] = ndp.learn
        self._net_lo = net.lo
        self._net_mask = net.mask
        self._tcp = tcp
        self._udp = udp
        self._icmp = icmp
        self._icmp_link = icmp_link
        self.routed: Pairs = ()          # routed prefixes: (mask, network values) (routes.py)

    def receive(self, mv: memoryview, src_mac: bytes, verify: bool, now: float) -> None:
        proto, l4, end, hop_limit, src, dst = parse_fields(mv)
        if proto == PROTO_FRAGMENT:
            self._counters["ipv6.rx.drop.fragment"] += 1
            return
        packet = mv[:end]
        n = int.from_bytes(src, "big")
        if (n & self._net_mask) == self._net_lo:
            if src_mac != self._neighbours.get(src):
                self._learn(src, src_mac)
        elif not self._routed(n):
            if proto == PROTO_ICMPV6 and (is_link_local6(src) or src == UNSPECIFIED):
                self._link_business(packet, l4, src, dst, hop_limit, src_mac, now)
            else:
                self._counters["ipv6.rx.drop.bad_src"] += 1
            return
        if proto == PROTO_TCP:
            self._tcp(packet, l4, src, dst, verify, now)
        elif proto == PROTO_UDP:
            self._udp(packet, l4, src, dst, verify, now)
        elif proto == PROTO_ICMPV6:
            self._icmp(packet, l4, src, dst, hop_limit, now)
        else:
            self._counters["ipv6.rx.drop.proto"] += 1
            return
        self.advertise_if_due(now)

    def advertise_if_due(self, now: float) -> None:
        """Send the periodic router advertisement when it is due (after each packet taken,
        here and on the fast path, iface/fastpath.py)."""
        ndp = self._ndp
        if now >= ndp.advertise_due:
            ndp.advertise(now)

    def on_network(self, src: bytes) -> bool:
        """Whether `src` is on the sandbox's IPv6 network (`receive` learns its MAC)."""
        return (int.from_bytes(src, "big") & self._net_mask) == self._net_lo

    def routed_source(self, src: bytes) -> bool:
        """Whether `src` is off the network and in a routed prefix (taken, no MAC learned)."""
        return self._routed(int.from_bytes(src, "big"))

    def _link_business(self, packet: memoryview, l4: int, src: bytes, dst: bytes,
                       hop_limit: int, src_mac: bytes, now: float) -> None:
        """ICMPv6 from a link-local or unspecified source (NDP, echo to the gateway's
        link-local address)."""
        if src != UNSPECIFIED and src_mac != self._neighbours.get(src):
            self._learn(src, src_mac)
        self._icmp_link(packet, l4, src, dst, hop_limit, now)
        self.advertise_if_due(now)

    def _routed(self, n: int) -> bool:
        for mask, values in self.routed:
            if n & mask in values:
                return True
        return False
