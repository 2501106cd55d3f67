"""NDP: the IPv6 half of the neighbour layer (RFC 4861), beside ARP in neighbours.py.

Why a module: on an IPv6 link the guest finds its router, its prefix, its MTU and its DNS
server, and the MAC of every address it talks to, through ICMPv6 messages that are link
business, not traffic to proxy. This is where the stack plays the router of the guest's link:

* Neighbor Solicitations for the gateway (network6+2), the DNS address (network6+3) and the
  gateway's link-local address (fe80:: + the modified EUI-64 of the gateway MAC) are answered
  with Neighbor Advertisements carrying the MAC of that virtual host; a duplicate-address probe
  (source ::) for one of them is answered to all nodes, so that the guest does not take it.
* A Router Solicitation is answered with a Router Advertisement from the gateway's link-local
  address: the prefix network6 (on-link, autonomous: SLAAC works), the link MTU, the DNS
  address (RDNSS, RFC 8106) unless DNS is off, router lifetime ROUTER_LIFETIME. Guest traffic
  arriving when no RA was sent for RA_INTERVAL brings an unsolicited one (`advertise_due`,
  checked by the IPv6 input: no timer needed).
* The guest's MAC is learned from the link-layer address options of its solicitations and
  advertisements and from its packets, into the one neighbour table shared with ARP (bounded
  by `limits.max_neighbours`, evictions counted as `ndp.neighbour.evicted`); a flood of
  solicitations from many addresses only churns that table.
* Router Advertisements and Redirects *from* the guest are ignored and counted: the guest is
  never our router. NDP messages whose hop limit is not 255 did not come from the link
  (RFC 4861 §6.1, §7.1) and are dropped.
* For an IPv6 flow waiting for the guest's MAC, `solicit_guest` sends a Neighbor Solicitation
  for the guest's address, at most every GUEST_ARP_INTERVAL.
"""

from __future__ import annotations

from typing import Any

from ..addr import Prefix, is_link_local6
from ..wire import icmpv6 as _icmpv6
from ..wire.icmpv6 import ALL_NODES, NDP_HOP_LIMIT, UNSPECIFIED, Icmpv6Header
from ..wire.ipv6 import PROTO_ICMPV6
from .link import Link
from .neighbours import GUEST_ARP_INTERVAL, Neighbours

RA_INTERVAL = 600.0             # seconds: guest traffic after this long without an RA brings one
ROUTER_LIFETIME = 1800          # seconds the guest keeps us as its default router (3 x interval)
VALID_LIFETIME = 2592000        # prefix lifetimes: RFC 4861 §6.2.1's defaults (30 and 7 days)
PREFERRED_LIFETIME = 604800
RDNSS_LIFETIME = 1800           # RFC 8106 §5.1: at least the interval, here like the router's


class Ndp:
    """Neighbour discovery and router advertisements for the guest's IPv6 link."""

    def __init__(self, config: Any, link: Link, neighbours: Neighbours) -> None:
        self._link = link
        self._neighbours = neighbours
        self._counters = link.counters
        net6 = config.network6
        self._net = Prefix(net6)
        self._prefix: bytes = net6.network_address.packed
        self._prefix_len: int = net6.prefixlen
        self._mtu: int = config.mtu
        self._rdnss = [config.dns6.packed] if config.dns_enabled else []
        self.gateway6: bytes = config.gateway6.packed
        self.guest6: bytes = config.guest6.packed
        self.gateway_ll: bytes = _icmpv6.link_local_from_mac(config.gateway_mac)
        # our addresses -> (MAC, whether that address is a router's)
        self._ours: dict[bytes, tuple[bytes, bool]] = {
            self.gateway6: (config.gateway_mac, True),
            self.gateway_ll: (config.gateway_mac, True),
            config.dns6.packed: (config.dns_mac, False),
        }
        for ip, (mac, _router) in self._ours.items():
            link.virtual_macs[ip] = mac
        self.advertise_due = float("-inf")    # when guest traffic next brings an unsolicited RA
        self._guest_ns_at: float | None = None

    # ------------------------------------------------------------------ guest messages

    def receive(self, hdr: Icmpv6Header, src: bytes, dst: bytes, hop_limit: int,
                now: float) -> None:
        """An NDP message (types 133..137) from the guest."""
        c = self._counters
        t = hdr.type
        if t == _icmpv6.ROUTER_ADVERT:
            c["icmpv6.rx.drop.ra_from_guest"] += 1
            return
        if t == _icmpv6.REDIRECT:
            c["icmpv6.rx.drop.redirect"] += 1
            return
        if hop_limit != NDP_HOP_LIMIT or hdr.code != 0:
            c["ndp.rx.drop.not_on_link"] += 1
            return
        if t == _icmpv6.NEIGHBOR_SOLICIT:
            self._solicitation(hdr, src, now)
        elif t == _icmpv6.NEIGHBOR_ADVERT:
            self._advertisement(hdr)
        else:                                   # ROUTER_SOLICIT: the only NDP type left
            self._router_solicitation(hdr, src, now)

    def _solicitation(self, hdr: Icmpv6Header, src: bytes, now: float) -> None:
        c = self._counters
        target, mac = _icmpv6.parse_ns(hdr.body)
        c["ndp.rx.ns"] += 1
        if src == UNSPECIFIED:
            if mac is not None:                 # RFC 4861 §7.1.1
                c["ndp.rx.drop.bad_ns"] += 1
                return
        elif mac is not None:
            self.learn(src, mac)
        ours = self._ours.get(target)
        if ours is None:
            c["ndp.rx.ns.ignored"] += 1
            return
        our_mac, router = ours
        if src == UNSPECIFIED:
            # The guest probes whether one of our addresses is free (RFC 4862 §5.4.3): it is
            # not. Answered to all nodes, not solicited (RFC 4861 §7.2.4).
            na = _icmpv6.build_na(target, ALL_NODES, target, our_mac, router=router,
                                  solicited=False)
            self._link.send_ip6(target, ALL_NODES, PROTO_ICMPV6, na, NDP_HOP_LIMIT)
        else:
            dst_mac = mac or self._neighbours.entries.get(src)
            if dst_mac is None:
                c["ndp.tx.drop.no_mac"] += 1
                return
            na = _icmpv6.build_na(target, src, target, our_mac, router=router, solicited=True)
            self._link.send_ip6(target, src, PROTO_ICMPV6, na, NDP_HOP_LIMIT, dst_mac)
        c["ndp.tx.na"] += 1

    def _advertisement(self, hdr: Icmpv6Header) -> None:
        c = self._counters
        _flags, target, mac = _icmpv6.parse_na(hdr.body, hdr.rest)
        c["ndp.rx.na"] += 1
        if target in self._ours:
            c["ndp.rx.drop.na_for_ours"] += 1   # the guest claims one of our addresses
            return
        if mac is not None:
            self.learn(target, mac)

    def _router_solicitation(self, hdr: Icmpv6Header, src: bytes, now: float) -> None:
        c = self._counters
        mac = _icmpv6.parse_rs(hdr.body)
        c["ndp.rx.rs"] += 1
        if src == UNSPECIFIED:
            if mac is not None:                 # RFC 4861 §6.1.1
                c["ndp.rx.drop.bad_rs"] += 1
                return
            self.advertise(now)
            return
        if mac is not None:
            self.learn(src, mac)
        dst_mac = mac or self._neighbours.entries.get(src)
        if dst_mac is None:
            self.advertise(now)
        else:
            self.advertise(now, src, dst_mac)   # answered to the solicitor (RFC 4861 §6.2.6)

    # ------------------------------------------------------------------ ours

    def learn(self, ip: bytes, mac: bytes) -> None:
        """An IPv6 neighbour: an address of the guest (every IPv6 neighbour on the link is the
        guest, whatever addresses it configured) on the sandbox network or link-local."""
        if mac[0] & 1 or not (ip in self._net or is_link_local6(ip)):
            return
        nb = self._neighbours
        nb.remember(ip, mac, "ndp.neighbour.evicted")
        nb.guest_mac_is(mac)

    def advertise(self, now: float, dst: bytes = ALL_NODES, dst_mac: bytes | None = None) -> None:
        """Send a Router Advertisement (to all nodes unless `dst` is given)."""
        link = self._link
        ra = _icmpv6.build_ra(self.gateway_ll, dst, link.gw_mac, prefix=self._prefix,
                              prefix_len=self._prefix_len, mtu=self._mtu, rdnss=self._rdnss,
                              router_lifetime=ROUTER_LIFETIME, valid_lifetime=VALID_LIFETIME,
                              preferred_lifetime=PREFERRED_LIFETIME,
                              rdnss_lifetime=RDNSS_LIFETIME)
        link.send_ip6(self.gateway_ll, dst, PROTO_ICMPV6, ra, NDP_HOP_LIMIT, dst_mac)
        self.advertise_due = now + RA_INTERVAL
        self._counters["ndp.tx.ra"] += 1

    def solicit_guest(self, now: float) -> None:
        """Ask for the MAC of the guest's IPv6 address (a flow waits for it), rate-limited."""
        last = self._guest_ns_at
        if last is not None and now - last < GUEST_ARP_INTERVAL:
            return
        self._guest_ns_at = now
        link = self._link
        dst = _icmpv6.solicited_node(self.guest6)
        ns = _icmpv6.build_ns(self.gateway_ll, dst, self.guest6, link.gw_mac)
        link.send_ip6(self.gateway_ll, dst, PROTO_ICMPV6, ns, NDP_HOP_LIMIT)
        self._counters["ndp.tx.ns"] += 1
