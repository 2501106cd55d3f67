"""Stack as a router for subnets behind the guest (issue 15): routed prefixes. Explicit `now`,
no sockets; frames built with scapy, as the guest's kernel (the holder's tap0) forwards them."""

from __future__ import annotations

import ipaddress
import random

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import Ether

from slirpy.config import NetConfig
from slirpy.tcpip import stack as st
from slirpy.tcpip.routes import MAX_ROUTED, parse_prefixes

from tests.unit.test_stack import GUEST_MAC, GW_MAC, events, out_frames, wire

MEMBER = "10.89.5.2"
MEMBER6 = "fd89:0:0:5::2"
REMOTE = "203.0.113.1"
REMOTE6 = "2001:db8::1"


def make_stack(**cfg) -> st.Stack:
    cfg.setdefault("guest_mac", bytes.fromhex(GUEST_MAC.replace(":", "")))
    return st.Stack(NetConfig(**cfg), vnet_hdr=True, offload=True, rng=random.Random(1))


def routed_stack() -> st.Stack:
    s = make_stack()
    s.set_routed(["10.89.5.0/24", "fd89:0:0:5::/64"])
    return s


def tcp_syn(src=MEMBER, dst=REMOTE, sport=40000, dport=80):
    return Ether(src=GUEST_MAC, dst=GW_MAC) / IP(src=src, dst=dst, ttl=63) / TCP(
        sport=sport, dport=dport, flags="S", seq=1000)


def test_a_routed_source_opens_flows_like_the_guests_own():
    s = routed_stack()
    s.receive_frame(wire(s, tcp_syn()), 0.0)
    (ev,) = [e for e in events(s) if isinstance(e, st.TcpConnectRequested)]
    assert (ev.guest, ev.guest_port, ev.host, ev.port) == (MEMBER, 40000, REMOTE, 80)
    s.tcp_host_connected(ev.flow_id, 0.0)
    (_, synack), = out_frames(s)
    assert synack[IP].dst == MEMBER and synack[IP].src == REMOTE
    assert synack[Ether].dst == GUEST_MAC          # to the router behind tap0
    assert synack[TCP].flags == "SA"
    assert s.counters["ipv4.rx.drop.bad_src"] == 0


def test_outside_the_network_and_the_routes_stays_a_bad_source():
    s = routed_stack()
    for src in ("10.89.6.2", "192.0.2.9"):
        s.receive_frame(wire(s, tcp_syn(src=src)), 0.0)
    assert s.counters["ipv4.rx.drop.bad_src"] == 2
    assert events(s) == [] and out_frames(s) == []


def test_without_routes_a_member_source_is_dropped_and_set_routed_replaces_the_list():
    s = make_stack()
    s.receive_frame(wire(s, tcp_syn()), 0.0)
    assert s.counters["ipv4.rx.drop.bad_src"] == 1
    s.set_routed(["10.89.5.0/24"])
    s.set_routed(["10.89.7.0/24"])                # replaces: .5 is gone again
    s.receive_frame(wire(s, tcp_syn()), 0.0)
    assert s.counters["ipv4.rx.drop.bad_src"] == 2
    s.set_routed([])
    assert s.routed == ()


def test_config_routed_is_taken_at_start():
    s = make_stack(routed=(ipaddress.ip_network("10.89.5.0/24"),))
    s.receive_frame(wire(s, tcp_syn()), 0.0)
    assert [type(e) for e in events(s)] == [st.TcpConnectRequested]


def test_udp_dns_and_ping_from_a_routed_source():
    s = routed_stack()
    udp = Ether(src=GUEST_MAC, dst=GW_MAC) / IP(src=MEMBER, dst=REMOTE) / UDP(sport=5000, dport=7) / b"x"
    s.receive_frame(wire(s, udp), 0.0)
    dns = (Ether(src=GUEST_MAC, dst=GW_MAC) / IP(src=MEMBER, dst="10.0.2.3") / UDP(sport=5001, dport=53)
           / (b"\x12\x34\x01\x00\x00\x01" + bytes(6) + b"\x07example\x00\x00\x01\x00\x01"))
    s.receive_frame(wire(s, dns), 0.0)
    ping = Ether(src=GUEST_MAC, dst=GW_MAC) / IP(src=MEMBER, dst=REMOTE) / ICMP(id=7, seq=1) / b"p"
    s.receive_frame(wire(s, ping), 0.0)
    opened = [e for e in events(s) if isinstance(e, (st.UdpFlowOpened, st.IcmpEchoFlowOpened))]
    assert [(type(e).__name__, e.guest) for e in opened] == [
        ("UdpFlowOpened", MEMBER), ("UdpFlowOpened", MEMBER), ("IcmpEchoFlowOpened", MEMBER)]
    assert opened[1].dns and s.counters["dns.flows.opened"] == 1
    # The host's answer and errors go back to the member, through the guest's MAC.
    s.udp_host_datagram(opened[0].flow_id, b"reply", 0.1)
    s.udp_host_error(opened[0].flow_id, 111, 0.2)           # ECONNREFUSED -> port unreachable
    frames = [f for _, f in out_frames(s)]
    assert [(f[IP].src, f[IP].dst, f[Ether].dst) for f in frames] == [
        (REMOTE, MEMBER, GUEST_MAC), (REMOTE, MEMBER, GUEST_MAC)]
    assert bytes(frames[0][UDP].payload) == b"reply"
    assert frames[1][ICMP].type == 3 and frames[1][ICMP].code == 3
    assert frames[1][IPerror].src == MEMBER


def test_ipv6_routed_source_and_ipv6_prefixes_need_ipv6():
    s = routed_stack()
    ping6 = (Ether(src=GUEST_MAC, dst=GW_MAC) / IPv6(src=MEMBER6, dst=REMOTE6)
             / ICMPv6EchoRequest(id=9, seq=1, data=b"p"))
    s.receive_frame(wire(s, ping6), 0.0)
    other = (Ether(src=GUEST_MAC, dst=GW_MAC) / IPv6(src="fd89:0:0:6::2", dst=REMOTE6)
             / ICMPv6EchoRequest(id=9, seq=1))
    s.receive_frame(wire(s, other), 0.0)
    assert [(type(e).__name__, e.guest) for e in events(s) if isinstance(e, st.IcmpEchoFlowOpened)] == [
        ("IcmpEchoFlowOpened", MEMBER6)]
    assert s.counters["ipv6.rx.drop.bad_src"] == 1
    with pytest.raises(ValueError, match="IPv6 is off"):
        make_stack(network6=None).set_routed(["fd89:0:0:5::/64"])


def test_flows_to_a_routed_prefix_are_refused():
    s = routed_stack()
    s.receive_frame(wire(s, tcp_syn(src="10.0.2.100", dst="10.89.5.3")), 0.0)
    assert s.counters["tcp.rx.drop.routed_dst"] == 1
    (_, rst), = out_frames(s)
    assert rst[TCP].flags == "RA"


def test_an_inbound_flow_may_target_a_member_and_keeps_the_clients_address():
    s = routed_stack()
    fid = s.tcp_inbound_open("203.0.113.7", 5555, 8080, 0.0,
                             guest_ip=ipaddress.ip_address(MEMBER).packed)
    assert fid is not None
    s.handle_timer(0.0)
    (_, syn), = out_frames(s)
    assert (syn[IP].src, syn[IP].dst, syn[TCP].sport, syn[TCP].dport) == ("203.0.113.7", MEMBER, 5555, 8080)
    assert syn[Ether].dst == GUEST_MAC
    ufid = s.udp_inbound_open("203.0.113.7", 5556, 53, 0.0, guest_ip=ipaddress.ip_address(MEMBER).packed)
    s.udp_host_datagram(ufid, b"q", 0.0)
    (_, dgram), = out_frames(s)
    assert (dgram[IP].src, dgram[IP].dst) == ("203.0.113.7", MEMBER)
    # A client inside a routed prefix appears as the gateway (it could not be answered).
    assert s.inbound_source("10.89.5.9") == ipaddress.ip_address("10.0.2.2").packed
    assert s.routes_to(ipaddress.ip_address(MEMBER).packed)
    assert not s.routes_to(ipaddress.ip_address("10.0.2.100").packed)
    # Once its prefix is gone, a forward to the member finds nothing to reach: refused, counted.
    s.set_routed([])
    member = ipaddress.ip_address(MEMBER).packed
    assert s.tcp_inbound_open("203.0.113.7", 5557, 8080, 1.0, guest_ip=member) is None
    assert s.udp_inbound_open("203.0.113.7", 5558, 53, 1.0, guest_ip=member) is None
    assert s.counters["tcp.inbound.drop.not_routed"] == s.counters["udp.inbound.drop.not_routed"] == 1


@pytest.mark.parametrize("bad, says", [
    ("10.89.5.1/24", "not an address prefix"),
    ("nonsense", "not an address prefix"),
    (24, "not an address prefix string"),
    ("10.0.0.0/8", "overlaps the sandbox network 10.0.2.0/24"),
    ("fd00::/48", "overlaps the sandbox network fd00::/64"),
    ("127.0.0.0/8", "cannot be routed"),
    ("224.0.0.0/4", "cannot be routed"),
    ("fe80::/64", "cannot be routed"),
])
def test_bad_prefixes_are_refused_and_change_nothing(bad, says):
    s = routed_stack()
    with pytest.raises(ValueError, match=says):
        s.set_routed(["10.89.9.0/24", bad])
    assert [str(n) for n in s.routed] == ["10.89.5.0/24", "fd89:0:0:5::/64"]


def test_the_number_of_prefixes_is_bounded():
    own = [ipaddress.ip_network("10.0.2.0/24")]
    many = [f"10.{i // 256}.{i % 256}.0/24" for i in range(256, 256 + MAX_ROUTED + 1)]
    assert len(parse_prefixes(many[:-1], own)) == MAX_ROUTED
    with pytest.raises(ValueError, match=f"more than {MAX_ROUTED} IPv4 prefixes"):
        parse_prefixes(many, own)


# ------------------------------------------------------------------ names (DNS views)

def dns_frame(name, qtype="A", src=MEMBER, sport=5300, dst="10.0.2.3", qid=0x4242):
    from scapy.layers.dns import DNS, DNSQR
    ip = IPv6(src=src, dst=dst) if ":" in src else IP(src=src, dst=dst)
    return Ether(src=GUEST_MAC, dst=GW_MAC) / ip / UDP(sport=sport, dport=53) / DNS(
        id=qid, rd=1, qd=DNSQR(qname=name, qtype=qtype))


def named_stack() -> st.Stack:
    s = routed_stack()
    s.set_names({MEMBER: {"db": ["10.89.5.3", "fd89:0:0:5::3"], "db.back": ["10.89.5.3"]},
                 MEMBER6: {"db": ["fd89:0:0:5::3"]}}, ["back", "front"])
    return s


def test_dns_names_are_answered_locally_per_querier_over_udp():
    from scapy.layers.dns import DNS
    s = named_stack()
    s.receive_frame(wire(s, dns_frame("db.back")), 0.0)
    s.receive_frame(wire(s, dns_frame("db", "AAAA", sport=5301)), 0.0)
    s.receive_frame(wire(s, dns_frame("db", src=MEMBER6, dst="fd00::3", sport=5302)), 0.0)
    assert events(s) == []                                   # no flow, nothing upstream
    frames = [f for _, f in out_frames(s) if UDP in f]      # (and a router advertisement)
    assert [(f[UDP].sport, f[UDP].dport, f[Ether].dst) for f in frames] == [
        (53, 5300, GUEST_MAC), (53, 5301, GUEST_MAC), (53, 5302, GUEST_MAC)]
    assert (frames[0][IP].src, frames[0][IP].dst) == ("10.0.2.3", MEMBER)
    assert [r.rdata for r in DNS(bytes(frames[0][UDP].payload)).an] == ["10.89.5.3"]
    assert [r.rdata for r in DNS(bytes(frames[1][UDP].payload)).an] == ["fd89:0:0:5::3"]
    assert (frames[2][IPv6].src, frames[2][IPv6].dst) == ("fd00::3", MEMBER6)
    assert DNS(bytes(frames[2][UDP].payload)).ancount == 0      # MEMBER6's db: no IPv4 address
    assert s.counters["dns.names.tx"] == 3 and s.counters["dns.flows.opened"] == 0


def test_foreign_network_names_get_nxdomain_and_other_names_go_upstream():
    from scapy.layers.dns import DNS
    s = named_stack()
    s.receive_frame(wire(s, dns_frame("web.front")), 0.0)
    (_, nx), = out_frames(s)
    assert DNS(bytes(nx[UDP].payload)).rcode == 3 and events(s) == []
    s.receive_frame(wire(s, dns_frame("example.test", sport=5400)), 0.0)
    (opened,) = events(s)[:1]
    assert isinstance(opened, st.UdpFlowOpened) and opened.dns
    # The same flow's next query for a local name is still answered here, not upstream.
    s.receive_frame(wire(s, dns_frame("db", sport=5400, qid=2)), 0.0)
    assert [type(e) for e in events(s)] == []
    (_, local), = out_frames(s)
    assert DNS(bytes(local[UDP].payload)).id == 2
    # The guest's own address has no view: its foreign names are NXDOMAIN too.
    s.receive_frame(wire(s, dns_frame("db.back", src="10.0.2.100", sport=5500)), 0.0)
    (_, own), = out_frames(s)
    assert DNS(bytes(own[UDP].payload)).rcode == 3
    assert s.counters["dns.names.nxdomain"] == 2


def test_without_names_dns_is_forwarded_as_before_and_set_names_validates():
    s = routed_stack()
    s.receive_frame(wire(s, dns_frame("db.back")), 0.0)
    assert [type(e) for e in events(s)] == [st.UdpFlowOpened, st.UdpDatagramReceived]
    with pytest.raises(ValueError, match="is not an IP address"):
        s.set_names({"10.89.5.2": {"db": ["nope"]}}, [])
    assert s.dns_answer(b"\x0a\x59\x05\x02", b"") is None    # still no views: forward
    s.set_names({}, ["back"])
    assert s.dns_answer(b"\x0a\x59\x05\x02", b"\x00") == b""  # malformed: drop


def test_prefixes_of_several_lengths_are_each_checked():
    from slirpy.tcpip.routes import contains, pairs
    nets = parse_prefixes(["10.89.0.0/16", "10.90.5.0/24", "10.90.7.0/24", "192.0.2.128/25"],
                          [ipaddress.ip_network("10.0.2.0/24")])
    routed = pairs(nets, 4)
    assert [bin(mask).count("1") for mask, _ in routed] == [25, 24, 16]     # one per length
    inside = ["10.89.200.1", "10.90.5.9", "10.90.7.255", "192.0.2.200"]
    outside = ["10.90.6.1", "10.91.0.1", "192.0.2.1", "11.89.0.1"]
    assert [contains(routed, ipaddress.ip_address(a).packed) for a in inside + outside] == [
        True] * 4 + [False] * 4
