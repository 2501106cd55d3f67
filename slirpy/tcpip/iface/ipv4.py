"""IPv4 input: validate the header (with the wire module's parser), drop what the stack does
not take (fragments, sources outside the sandbox network), learn the sender's MAC, and hand
the packet to its transport handler. UDP from 0.0.0.0 (a DHCP client without an address) goes
to `unconfigured` (the DHCP server) instead of being dropped as from outside the network.
A source in one of the routed prefixes (`routed`, routes.py: the subnets behind the guest) is
taken like the guest's own, without learning its MAC (it is behind the guest); that list is
only walked for a source outside the sandbox network.

Why a module: this is the only code that knows the packet is IPv4 on the way in; the handlers
below it get the packet, the header length and packed addresses. IPv6 adds `ipv6.py` beside it.
"""

from __future__ import annotations

from typing import Callable

from ..addr import Prefix
from ..routes import Pairs
from ..wire.ipv4 import PROTO_ICMP, PROTO_TCP, PROTO_UDP, parse_fields
from .link import Link
from .neighbours import Neighbours

# packet (IP header on), IP header length, src, dst, checksum to verify, now
L4Input = Callable[[memoryview, int, bytes, bytes, bool, float], None]
# packet, IP header length, src, dst, ttl, now
IcmpInput = Callable[[memoryview, int, bytes, bytes, int, float], None]
_UNSPECIFIED = bytes(4)


class Ipv4Input:
    """The IPv4 receive path; the transport inputs are wired by the Stack."""

    def __init__(self, link: Link, neighbours: Neighbours, net: Prefix, tcp: L4Input,
                 udp: L4Input, icmp: IcmpInput) -> None:
        self._counters = link.counters
        self._neighbours = neighbours.entries
        self._learn = neighbours.learn
        self._net_lo = net.lo
        self._net_mask = net.mask
        self._tcp = tcp
        self._udp = udp
        self._icmp = icmp
        self.unconfigured: L4Input = self._bad_src    # UDP from 0.0.0.0: DHCP (Stack wires it)
        self.routed: Pairs = ()          # routed prefixes: (mask, network values) (routes.py)

    def receive(self, mv: memoryview, src_mac: bytes, verify: bool, now: float) -> None:
        hlen, _tos, total, _ident, frag, ttl, proto, _csum, src, dst = parse_fields(mv)
        if frag & 0x3FFF:                      # MF or a fragment offset
            self._counters["ipv4.rx.drop.fragment"] += 1
            return
        n = int.from_bytes(src, "big")
        if (n & self._net_mask) != self._net_lo:
            for mask, values in self.routed:
                if n & mask in values:
                    break
            else:
                if proto == PROTO_UDP and src == _UNSPECIFIED:
                    self.unconfigured(mv[:total], hlen, src, dst, verify, now)
                else:
                    self._counters["ipv4.rx.drop.bad_src"] += 1
                return
        elif src_mac != self._neighbours.get(src):
            self._learn(src, src_mac)
        packet = mv[:total]
        if proto == PROTO_TCP:
            self._tcp(packet, hlen, src, dst, verify, now)
        elif proto == PROTO_UDP:
            self._udp(packet, hlen, src, dst, verify, now)
        elif proto == PROTO_ICMP:
            self._icmp(packet, hlen, src, dst, ttl, now)
        else:
            self._counters["ipv4.rx.drop.proto"] += 1

    def routed_source(self, src: bytes) -> bool:
        """Whether `src` is outside the sandbox network and inside a routed prefix (a member of
        a network behind the guest: taken as `receive` takes it, with no MAC learned)."""
        n = int.from_bytes(src, "big")
        if (n & self._net_mask) == self._net_lo:
            return False
        for mask, values in self.routed:
            if n & mask in values:
                return True
        return False

    def _bad_src(self, packet: memoryview, hlen: int, src: bytes, dst: bytes, verify: bool,
                 now: float) -> None:
        self._counters["ipv4.rx.drop.bad_src"] += 1
