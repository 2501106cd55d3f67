"""Stack over IPv6: the link (NDP, router advertisements, echo to the virtual hosts), the IPv6
input (extension headers, fragments, sources) and IPv6 off. Frames in, frames and exact
counters out, explicit `now`, a fresh Stack each."""

from __future__ import annotations

import random
from socket import AF_INET6, inet_ntop, inet_pton

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import (
    ICMPv6EchoReply, ICMPv6EchoRequest, ICMPv6MLReport2, ICMPv6ND_NA, ICMPv6ND_NS,
    ICMPv6ND_RA, ICMPv6ND_Redirect, ICMPv6ND_RS, ICMPv6NDOptDstLLAddr, ICMPv6NDOptMTU,
    ICMPv6NDOptPrefixInfo, ICMPv6NDOptRDNSS, ICMPv6NDOptSrcLLAddr, IPv6, IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting, RouterAlert,
)
from scapy.layers.l2 import ARP, Ether
from scapy.utils6 import in6_getnsma, in6_getnsmac

from slirpy.config import Limits, NetConfig, build_net_config
from slirpy.tcpip import stack as st
from slirpy.tcpip.checksum import pseudo_header_sum, sum16
from slirpy.tcpip.wire.virtio import VNET_HDR, VNET_HDR_LEN

GUEST_MAC = "02:00:00:00:00:64"
GW_MAC = "52:55:0a:00:02:02"
DNS_MAC = "52:55:0a:00:02:03"
GUEST6 = "fd00::100"
GW6 = "fd00::2"
DNS6 = "fd00::3"
GW_LL = "fe80::5055:aff:fe00:202"          # fe80:: + modified EUI-64 of GW_MAC
GUEST_LL = "fe80::ff:fe00:64"              # the guest's own, from GUEST_MAC
REMOTE6 = "2001:db8::1"
ALL_NODES = "ff02::1"
ALL_NODES_MAC = "33:33:00:00:00:01"
MAC = bytes.fromhex(GUEST_MAC.replace(":", ""))


def make_stack(vnet=True, offload=True, **cfg) -> st.Stack:
    return st.Stack(NetConfig(**cfg), vnet_hdr=vnet, offload=offload, rng=random.Random(1))


def wire(s: st.Stack, pkt, vnet_flags: int = 0) -> bytes:
    raw = bytes(pkt)
    return VNET_HDR.pack(vnet_flags, 0, 0, 0, 0, 0, 0) + raw if s.vnet_hdr else raw


def flat(frame) -> bytes:
    return frame if isinstance(frame, bytes) else b"".join(bytes(p) for p in frame)


def out(s: st.Stack, now: float = 0.0) -> list[tuple[tuple | None, Ether]]:
    """Frames the stack emits, as (virtio header fields or None, scapy packet)."""
    res = []
    for f in s.frames_to_send(now):
        raw = flat(f)
        if s.vnet_hdr:
            res.append((VNET_HDR.unpack_from(raw, 0), Ether(raw[VNET_HDR_LEN:])))
        else:
            res.append((None, Ether(raw)))
    return res


def delta(s: st.Stack, before: dict[str, int]) -> dict[str, int]:
    """The counters that changed since `before` (a copy of s.counters), by how much."""
    return {k: v - before.get(k, 0) for k, v in s.counters.items() if v != before.get(k, 0)}


def events(s: st.Stack) -> list:
    evs = []
    while (ev := s.next_event()) is not None:
        evs.append(ev)
    return evs


def from_guest(dst=REMOTE6, src=GUEST6, hlim=64, eth_dst=GW_MAC):
    return Ether(src=GUEST_MAC, dst=eth_dst) / IPv6(src=src, dst=dst, hlim=hlim)


def l4_checksum_ok(ip6: bytes) -> bool:
    """The upper-layer checksum of an IPv6 packet without extension headers is right."""
    payload = ip6[40:]
    return sum16(payload, pseudo_header_sum(ip6[8:24], ip6[24:40], ip6[6], len(payload))) == 0xFFFF


def rs(src=GUEST_LL, mac=GUEST_MAC):
    pkt = from_guest(dst="ff02::2", src=src, hlim=255, eth_dst="33:33:00:00:00:02") / ICMPv6ND_RS()
    return pkt / ICMPv6NDOptSrcLLAddr(lladdr=mac) if mac else pkt


def ready(s: st.Stack, now: float = 0.0) -> None:
    """The guest solicited a router (as it does when its link comes up): the first-traffic RA
    is out of the way and the guest's MAC known."""
    s.receive_frame(wire(s, rs()), now)
    out(s, now)


def packed(addr: str) -> bytes:
    return inet_pton(AF_INET6, addr)


def ns(target, src=GUEST6, mac=GUEST_MAC, hlim=255):
    """A Neighbor Solicitation to the target's solicited-node address."""
    group = in6_getnsma(packed(target))
    pkt = (from_guest(dst=inet_ntop(AF_INET6, group), src=src, hlim=hlim,
                      eth_dst=in6_getnsmac(group)) / ICMPv6ND_NS(tgt=target))
    return pkt / ICMPv6NDOptSrcLLAddr(lladdr=mac) if mac else pkt


# ------------------------------------------------------------------ neighbour discovery

@pytest.mark.parametrize("target, mac, router", [
    (GW6, GW_MAC, 1), (DNS6, DNS_MAC, 0), (GW_LL, GW_MAC, 1),
])
@pytest.mark.parametrize("src", [GUEST6, GUEST_LL])
def test_neighbor_solicitation_for_our_addresses_is_answered(target, mac, router, src):
    s = make_stack()
    ready(s)
    s.receive_frame(wire(s, ns(target, src=src)), 1.0)
    [(vh, na)] = out(s, 1.0)
    assert vh == (0, 0, 0, 0, 0, 0, 0)
    assert na[Ether].src == mac and na[Ether].dst == GUEST_MAC and na[Ether].type == 0x86DD
    assert na[IPv6].src == target and na[IPv6].dst == src and na[IPv6].hlim == 255
    adv = na[ICMPv6ND_NA]
    assert adv.tgt == target and (adv.R, adv.S, adv.O) == (router, 1, 1)
    assert na[ICMPv6NDOptDstLLAddr].lladdr == mac
    assert l4_checksum_ok(bytes(na[IPv6]))
    assert s.counters["ndp.rx.ns"] == 1 and s.counters["ndp.tx.na"] == 1
    assert s.neighbours.entries[packed(src)] == MAC


def test_unicast_solicitation_without_link_layer_option_is_answered_to_the_frames_sender():
    """Neighbour unreachability detection: a unicast NS may leave out its source link-layer
    address (RFC 4861 §7.2.4); the answer goes to the MAC the frame came from."""
    s = make_stack()
    ready(s)
    probe = (Ether(src="02:00:00:00:00:65", dst=GW_MAC) / IPv6(src=GUEST6, dst=GW6, hlim=255)
             / ICMPv6ND_NS(tgt=GW6))
    s.receive_frame(wire(s, probe), 1.0)
    [(_, na)] = out(s, 1.0)
    assert na[Ether].dst == "02:00:00:00:00:65" and na[IPv6].dst == GUEST6
    assert na[ICMPv6ND_NA].S == 1 and s.link.guest_mac == bytes.fromhex("020000000065")


def test_solicitation_for_another_address_is_ignored_and_counted():
    s = make_stack()
    ready(s)
    s.receive_frame(wire(s, ns("fd00::77")), 1.0)
    s.receive_frame(wire(s, ns(GUEST6, src="::", mac=None)), 1.0)     # the guest's own DAD
    assert out(s, 1.0) == []
    assert s.counters["ndp.rx.ns.ignored"] == 2 and s.counters["ndp.tx.na"] == 0


def test_duplicate_address_probe_for_the_gateway_is_defended_to_all_nodes():
    s = make_stack()
    ready(s)
    s.receive_frame(wire(s, ns(GW6, src="::", mac=None)), 1.0)
    [(_, na)] = out(s, 1.0)
    assert na[Ether].dst == ALL_NODES_MAC and na[IPv6].dst == ALL_NODES and na[IPv6].src == GW6
    assert (na[ICMPv6ND_NA].S, na[ICMPv6ND_NA].R) == (0, 1)
    assert na[ICMPv6NDOptDstLLAddr].lladdr == GW_MAC
    # a probe may not carry a source link-layer address (RFC 4861 §7.1.1)
    s.receive_frame(wire(s, ns(GW6, src="::")), 1.0)
    assert out(s, 1.0) == [] and s.counters["ndp.rx.drop.bad_ns"] == 1


@pytest.mark.parametrize("hlim", [64, 254])
def test_ndp_from_off_the_link_is_dropped(hlim):
    s = make_stack()
    ready(s)
    s.receive_frame(wire(s, ns(GW6, hlim=hlim)), 1.0)
    solicit = rs()
    solicit[IPv6].hlim = hlim
    s.receive_frame(wire(s, solicit), 1.0)
    assert out(s, 1.0) == []
    assert s.counters["ndp.rx.drop.not_on_link"] == 2
    assert s.counters["ndp.tx.na"] == 0 and s.counters["ndp.tx.ra"] == 1     # ready()'s


def _ra_options(ra):
    return (ra[ICMPv6NDOptSrcLLAddr], ra[ICMPv6NDOptPrefixInfo], ra[ICMPv6NDOptMTU])


@pytest.mark.parametrize("mtu", [1500, 65520])
def test_router_solicitation_gets_an_advertisement_with_prefix_mtu_and_dns(mtu):
    s = make_stack(mtu=mtu)
    s.receive_frame(wire(s, rs()), 0.0)
    [(vh, ra)] = out(s)
    assert vh == (0, 0, 0, 0, 0, 0, 0)
    assert ra[Ether].src == GW_MAC and ra[Ether].dst == GUEST_MAC
    assert ra[IPv6].src == GW_LL and ra[IPv6].dst == GUEST_LL and ra[IPv6].hlim == 255
    adv = ra[ICMPv6ND_RA]
    assert adv.routerlifetime == 1800 and (adv.M, adv.O) == (0, 0)
    lla, prefix, mtu_opt = _ra_options(ra)
    assert lla.lladdr == GW_MAC
    assert (prefix.prefix, prefix.prefixlen, prefix.L, prefix.A) == ("fd00::", 64, 1, 1)
    assert prefix.validlifetime == 2592000 and prefix.preferredlifetime == 604800
    assert mtu_opt.mtu == mtu
    rdnss = ra[ICMPv6NDOptRDNSS]
    assert rdnss.dns == [DNS6] and rdnss.lifetime == 1800
    assert l4_checksum_ok(bytes(ra[IPv6]))
    assert s.counters["ndp.rx.rs"] == 1 and s.counters["ndp.tx.ra"] == 1
    assert s.link.guest_mac == MAC              # learned from the source link-layer option


def test_advertisement_follows_the_configured_prefix_and_dns():
    s = st.Stack(build_net_config(cidr6="fd12:3456:789a:1::/64", dns_enabled=False),
                 vnet_hdr=False, offload=False, rng=random.Random(1))
    s.receive_frame(wire(s, rs(src="::", mac=None)), 0.0)
    [(_, ra)] = out(s)
    assert ra[Ether].dst == ALL_NODES_MAC and ra[IPv6].dst == ALL_NODES  # no address to answer
    assert ra[ICMPv6NDOptPrefixInfo].prefix == "fd12:3456:789a:1::"
    assert ICMPv6NDOptRDNSS not in ra                                     # DNS is off


def test_guest_traffic_brings_an_unsolicited_advertisement_every_600_s():
    s = make_stack(guest_mac=MAC)
    ping = from_guest(dst=GW6) / ICMPv6EchoRequest(id=1, seq=1)
    s.receive_frame(wire(s, ping), 10.0)
    frames = [p for _, p in out(s, 10.0)]
    assert [ICMPv6EchoReply in p for p in frames] == [True, False]
    ra = frames[1]
    assert ra[Ether].dst == ALL_NODES_MAC and ra[IPv6].dst == ALL_NODES and ICMPv6ND_RA in ra
    s.receive_frame(wire(s, ping), 609.0)
    assert len(out(s, 609.0)) == 1                       # the reply only
    s.receive_frame(wire(s, ping), 610.0)
    assert len(out(s, 610.0)) == 2
    assert s.counters["ndp.tx.ra"] == 2


@pytest.mark.parametrize("pkt, counter", [
    (ICMPv6ND_RA(routerlifetime=9000) / ICMPv6NDOptPrefixInfo(prefix="2001:db8:bad::", prefixlen=64),
     "icmpv6.rx.drop.ra_from_guest"),
    (ICMPv6ND_Redirect(tgt=GUEST_LL, dst=REMOTE6), "icmpv6.rx.drop.redirect"),
])
@pytest.mark.parametrize("src", [GUEST_LL, GUEST6])
def test_advertisements_and_redirects_from_the_guest_are_ignored_and_counted(pkt, counter, src):
    s = make_stack()
    ready(s)
    macs = dict(s.link.virtual_macs)
    before = dict(s.counters)
    s.receive_frame(wire(s, from_guest(dst=ALL_NODES, src=src, hlim=255) / pkt), 1.0)
    assert out(s, 1.0) == [] and events(s) == []
    assert delta(s, before) == {"rx.frames": 1, counter: 1}
    assert s.link.virtual_macs == macs and s.link.guest_mac == MAC
    # the stack's own routing is untouched: a flow to REMOTE6 still goes out as before
    s.receive_frame(wire(s, _syn()), 1.0)
    assert [e.host for e in events(s)] == [REMOTE6]


def test_a_solicitation_flood_stays_within_the_neighbour_bound_shared_with_arp():
    s = make_stack(limits=Limits(max_neighbours=8))
    s.receive_frame(wire(s, Ether(src=GUEST_MAC, dst="ff:ff:ff:ff:ff:ff") /
                         ARP(op=1, hwsrc=GUEST_MAC, psrc="10.0.2.100", pdst="10.0.2.2")), 0.0)
    out(s)
    for i in range(200):
        src = f"fd00::{i + 0x1000:x}" if i % 2 else f"fe80::{i + 1:x}"
        s.receive_frame(wire(s, ns(GW6, src=src, mac=f"02:00:00:00:{i >> 8:02x}:{i & 255:02x}")), 1.0)
    assert len(s.neighbours.entries) == 8
    assert s.counters["ndp.tx.na"] == 200 and len(out(s, 1.0)) == 200 + 1   # + the first RA
    assert s.counters["ndp.neighbour.evicted"] == 200 + 1 - 8     # the ARP entry went too
    assert s.counters["arp.neighbour.evicted"] == 0


def test_neighbor_advertisement_teaches_the_guest_mac_but_not_for_our_addresses():
    s = make_stack()
    other = "02:00:00:00:00:99"
    na = from_guest(dst=GW_LL, src=GUEST_LL, hlim=255) / ICMPv6ND_NA(tgt=GUEST6, S=1) / \
        ICMPv6NDOptDstLLAddr(lladdr=other)
    s.receive_frame(wire(s, na), 0.0)
    assert s.link.guest_mac == bytes.fromhex("020000000099")
    s.receive_frame(wire(s, from_guest(dst=ALL_NODES, src=GUEST_LL, hlim=255) /
                         ICMPv6ND_NA(tgt=GW6, O=1) / ICMPv6NDOptDstLLAddr(lladdr=other)), 0.0)
    assert s.counters["ndp.rx.na"] == 2 and s.counters["ndp.rx.drop.na_for_ours"] == 1
    assert s.link.virtual_macs[packed(GW6)] == bytes.fromhex("52550a000202")


# ------------------------------------------------------------------ echo to the virtual hosts

@pytest.mark.parametrize("vnet", [True, False])
@pytest.mark.parametrize("dst, src, mac", [
    (GW6, GUEST6, GW_MAC), (DNS6, GUEST6, DNS_MAC), (GW_LL, GUEST_LL, GW_MAC),
])
def test_echo_to_the_virtual_hosts_is_answered(vnet, dst, src, mac):
    s = make_stack(vnet=vnet, offload=vnet)
    ready(s)
    req = from_guest(dst=dst, src=src) / ICMPv6EchoRequest(id=0x1234, seq=7, data=b"x" * 56)
    s.receive_frame(wire(s, req), 1.0)
    [(_, reply)] = out(s, 1.0)
    assert reply[Ether].src == mac and reply[Ether].dst == GUEST_MAC
    assert reply[IPv6].src == dst and reply[IPv6].dst == src
    echo = reply[ICMPv6EchoReply]
    assert (echo.id, echo.seq, echo.data) == (0x1234, 7, b"x" * 56)
    assert l4_checksum_ok(bytes(reply[IPv6]))
    assert s.counters["icmpv6.tx.echo_reply"] == 1 and events(s) == []


def test_bad_icmpv6_checksum_and_other_types_are_dropped():
    s = make_stack()
    ready(s)
    bad = bytearray(bytes(from_guest(dst=GW6) / ICMPv6EchoRequest(id=1, seq=1)))
    bad[-1] ^= 0xFF
    s.receive_frame(wire(s, bytes(bad)), 1.0)
    s.receive_frame(wire(s, from_guest(dst=GW6) / ICMPv6EchoReply(id=1, seq=1)), 1.0)
    mld = (from_guest(dst="ff02::16", src="::", hlim=1) / IPv6ExtHdrHopByHop(options=[RouterAlert()])
           / ICMPv6MLReport2())
    s.receive_frame(wire(s, mld), 1.0)
    assert out(s, 1.0) == []
    assert s.counters["rx.drop.icmpv6.bad_checksum"] == 1
    assert s.counters["icmpv6.rx.drop.type"] == 2


# ------------------------------------------------------------------ the IPv6 input

def _syn(dst=REMOTE6, src=GUEST6, **kw):
    return from_guest(dst=dst, src=src) / TCP(sport=40000, dport=80, flags="S", seq=1000, **kw)


def test_extension_headers_are_walked_to_the_transport():
    s = make_stack()
    ready(s)
    pkt = (from_guest() / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() /
           IPv6ExtHdrRouting(segleft=0) / TCP(sport=40000, dport=80, flags="S", seq=1000))
    s.receive_frame(wire(s, pkt), 1.0)
    [ev] = events(s)
    assert isinstance(ev, st.TcpConnectRequested) and (ev.host, ev.port) == (REMOTE6, 80)


@pytest.mark.parametrize("pkt, counter", [
    (from_guest() / IPv6ExtHdrFragment(m=1, id=7) / TCP(flags="S"), "ipv6.rx.drop.fragment"),
    (from_guest() / IPv6ExtHdrFragment(m=0, offset=0) / TCP(flags="S"), "ipv6.rx.drop.fragment"),
    (from_guest() / IPv6ExtHdrDestOpt() / IPv6ExtHdrFragment(m=1) / TCP(), "ipv6.rx.drop.fragment"),
    (from_guest() / IPv6ExtHdrRouting(addresses=[REMOTE6], segleft=1) / TCP(flags="S"),
     "rx.drop.ipv6.routing"),
    (from_guest() / IPv6ExtHdrDestOpt() / IPv6ExtHdrHopByHop() / TCP(), "rx.drop.ipv6.ext_chain"),
    (from_guest(src="2001:db8::5") / TCP(flags="S"), "ipv6.rx.drop.bad_src"),
    (from_guest(src=GUEST_LL) / TCP(flags="S"), "ipv6.rx.drop.bad_src"),
    (from_guest(src="::") / TCP(flags="S"), "ipv6.rx.drop.bad_src"),
    (from_guest(dst=GW6, src="2001:db8::5") / ICMPv6EchoRequest(), "ipv6.rx.drop.bad_src"),
    (from_guest(dst="ff02::1:ff00:2", src="2001:db8::5", hlim=255) / ICMPv6ND_NS(tgt=GW6),
     "ipv6.rx.drop.bad_src"),
    (Ether(src=GUEST_MAC, dst=GW_MAC) / IPv6(src=GUEST6, dst=REMOTE6, nh=132) / (b"\x00" * 12),
     "ipv6.rx.drop.proto"),
    (from_guest(dst=REMOTE6, src=GUEST_LL) / ICMPv6EchoRequest(), "icmpv6.rx.drop.type"),
    (Ether(src=GUEST_MAC, dst=GW_MAC, type=0x86DD) / (b"\x60" + b"\x00" * 20),
     "rx.drop.ipv6.truncated"),
    (Ether(src=GUEST_MAC, dst=GW_MAC) / IPv6(src=GUEST6, dst=REMOTE6, plen=200) / TCP(),
     "rx.drop.ipv6.bad_length"),
])
def test_what_the_ipv6_input_does_not_take_is_counted_and_dropped(pkt, counter):
    s = make_stack(vnet=False, offload=False)
    ready(s)
    before = dict(s.counters)
    s.receive_frame(bytes(pkt), 1.0)
    assert delta(s, before) == {"rx.frames": 1, counter: 1}
    assert out(s, 1.0) == [] and events(s) == []


def test_a_tcp_checksum_is_verified_over_the_ipv6_pseudo_header():
    s = make_stack(vnet=False, offload=False)
    ready(s)
    s.receive_frame(bytes(_syn(chksum=0x1234)), 1.0)
    assert s.counters["rx.drop.tcp.bad_checksum"] == 1 and events(s) == []
    s.receive_frame(bytes(_syn()), 1.0)
    assert [type(e) for e in events(s)] == [st.TcpConnectRequested]


# ------------------------------------------------------------------ IPv6 off

def test_with_ipv6_off_every_ipv6_frame_is_dropped_and_counted_and_ipv4_works():
    s = make_stack(network6=None)
    frames = [rs(), ns(GW6), _syn(), from_guest(dst=GW6) / ICMPv6EchoRequest(),
              from_guest() / IPv6ExtHdrFragment(m=1) / TCP()]
    for f in frames:
        s.receive_frame(wire(s, f), 0.0)
    assert s.counters["ipv6.rx.drop.off"] == len(frames)
    assert out(s) == [] and events(s) == []
    assert s.ndp is None and s.link.guest_mac is None
    s.receive_frame(wire(s, Ether(src=GUEST_MAC, dst=GW_MAC) / IP(src="10.0.2.100", dst="203.0.113.1")
                         / TCP(sport=40000, dport=80, flags="S", seq=1)), 0.0)
    [ev] = events(s)
    assert ev.host == "203.0.113.1"
    assert s.counters["ipv6.rx.drop.off"] == len(frames) and s.counters["rx.frames"] == len(frames) + 1


def test_a_link_below_the_ipv6_minimum_mtu_has_no_ipv6_even_if_the_config_names_a_network():
    s = make_stack(mtu=1279)
    assert s.config.network6 is None and s.ndp is None
    s.receive_frame(wire(s, rs()), 0.0)
    assert out(s) == [] and s.counters["ipv6.rx.drop.off"] == 1
    assert s.tcp_inbound_open(REMOTE6, 5555, 80, 0.0, guest_ip=packed(GUEST6)) is None
    assert s.counters["tcp.inbound.drop.family_off"] == 1
