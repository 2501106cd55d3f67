"""Stack over IPv6: UDP flows and DNS at the IPv6 DNS address, echo flows, ICMPv6 errors about
UDP and echo flows (what the host learned, packet too big), and published ports reached from
IPv6 clients (or reaching the guest's IPv6 address)."""

from __future__ import annotations

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6DestUnreach, ICMPv6EchoReply, ICMPv6EchoRequest, ICMPv6ND_NA, ICMPv6ND_NS,
    ICMPv6NDOptDstLLAddr, ICMPv6PacketTooBig, ICMPv6TimeExceeded, IPerror6, IPv6, UDPerror,
)
from scapy.layers.l2 import ARP, Ether

from slirpy.tcpip import fwd
from slirpy.tcpip import stack as st
from slirpy.tcpip.checksum import pseudo_header_sum
from slirpy.tcpip.wire.virtio import F_NEEDS_CSUM, VNET_HDR

from tests.unit.test_stack_ipv6 import (
    DNS6, DNS_MAC, GUEST6, GUEST_LL, GUEST_MAC, GW6, GW_MAC, MAC, REMOTE6, events, from_guest,
    l4_checksum_ok, make_stack, out, packed, ready, wire,
)

ROUTER6 = "2001:db8:ffff::1"
CLIENT6 = "2001:db8::7"


def guest_udp(payload=b"hello", dst=REMOTE6, sport=5000, dport=7, **kw):
    return from_guest(dst=dst) / UDP(sport=sport, dport=dport, **kw) / payload


def dns_query(qid=0x1234) -> bytes:
    return qid.to_bytes(2, "big") + b"\x01\x00" + b"\x00\x01" + b"\x00" * 6 + b"\x01a\x00\x00\x1c\x00\x01"


def open_udp(s, now=1.0, **kw):
    s.receive_frame(wire(s, guest_udp(**kw)), now)
    opened, _ = events(s)
    return opened.flow_id


# ------------------------------------------------------------------ UDP and DNS

def test_first_datagram_opens_an_ipv6_flow_and_is_passed_on():
    s = make_stack()
    ready(s)
    s.receive_frame(wire(s, guest_udp()), 1.0)
    opened, dgram = events(s)
    assert isinstance(opened, st.UdpFlowOpened)
    assert (opened.host, opened.port, opened.guest, opened.guest_port, opened.dns) == \
        (REMOTE6, 7, GUEST6, 5000, False)
    assert isinstance(dgram, st.UdpDatagramReceived) and bytes(dgram.data) == b"hello"
    assert s.counters["udp.flows.opened"] == 1 and s.counters["udp.rx.datagrams"] == 1


@pytest.mark.parametrize("vnet, offload", [(True, True), (True, False), (False, False)])
def test_host_datagram_reaches_the_guest_over_ipv6(vnet, offload):
    s = make_stack(vnet=vnet, offload=offload)
    ready(s)
    fid = open_udp(s)
    s.udp_host_datagram(fid, b"world" * 100, 1.1)
    [(vh, d)] = out(s, 1.1)
    assert d[Ether].type == 0x86DD and d[Ether].src == GW_MAC and d[Ether].dst == GUEST_MAC
    assert d[IPv6].src == REMOTE6 and d[IPv6].dst == GUEST6 and d[IPv6].nh == 17
    assert (d[UDP].sport, d[UDP].dport, bytes(d[UDP].payload)) == (7, 5000, b"world" * 100)
    length = 8 + 500
    assert d[IPv6].plen == length and d[UDP].len == length
    if offload:
        assert vh == (F_NEEDS_CSUM, 0, 0, 0, 54, 6, 0)
        assert d[UDP].chksum == pseudo_header_sum(packed(REMOTE6), packed(GUEST6), 17, length)
    else:
        assert vh in (None, (0, 0, 0, 0, 0, 0, 0))
        assert d[UDP].chksum != 0 and l4_checksum_ok(bytes(d[IPv6]))
    assert s.counters["udp.tx.datagrams"] == 1


def test_zero_udp_checksum_is_refused_over_ipv6_unless_the_kernel_vouches():
    s = make_stack()
    ready(s)
    s.receive_frame(wire(s, guest_udp(chksum=0)), 1.0)
    assert events(s) == [] and s.counters["rx.drop.udp.zero_checksum_v6"] == 1
    s.receive_frame(wire(s, guest_udp(chksum=0x1234)), 1.0)
    assert events(s) == [] and s.counters["rx.drop.udp.bad_checksum"] == 1
    s.receive_frame(wire(s, guest_udp(chksum=0), vnet_flags=F_NEEDS_CSUM), 1.0)
    assert [type(e) for e in events(s)] == [st.UdpFlowOpened, st.UdpDatagramReceived]


def test_host_datagram_too_big_for_the_mtu_with_the_40_byte_header_is_dropped():
    s = make_stack(mtu=1500)
    ready(s)
    fid = open_udp(s)
    s.udp_host_datagram(fid, b"x" * (1500 - 48), 1.1)
    assert len(out(s, 1.1)) == 1
    s.udp_host_datagram(fid, b"x" * (1500 - 47), 1.1)       # would fit under IPv4's 28 bytes
    assert out(s, 1.1) == [] and s.counters["udp.tx.drop.too_big"] == 1


@pytest.mark.parametrize("dst, counter, src_mac, code", [
    (GW6, "udp.rx.drop.host_loopback_denied", GW_MAC, 0),   # no route, as libslirp
    (DNS6, "udp.rx.drop.local_network", DNS_MAC, 4),
])
def test_datagram_to_a_closed_virtual_host_port_gets_icmpv6_unreachable(dst, counter, src_mac, code):
    s = make_stack()
    ready(s)
    s.receive_frame(wire(s, guest_udp(dst=dst, dport=9)), 1.0)
    [(_, err)] = out(s, 1.0)
    assert err[Ether].src == src_mac and err[IPv6].src == dst and err[IPv6].dst == GUEST6
    assert err[ICMPv6DestUnreach].code == code
    assert err[IPerror6].dst == dst and err[UDPerror].dport == 9 and bytes(err[UDPerror].payload) == b"hello"
    assert l4_checksum_ok(bytes(err[IPv6]))
    assert s.counters[counter] == 1 and s.counters["icmpv6.tx.error"] == 1 and events(s) == []


def test_datagram_to_a_multicast_or_link_local_destination_is_dropped_silently():
    s = make_stack()
    ready(s)
    s.receive_frame(wire(s, guest_udp(dst="ff02::fb", dport=5353)), 1.0)
    s.receive_frame(wire(s, guest_udp(dst="fe80::9")), 1.0)
    assert out(s, 1.0) == [] and events(s) == []
    assert s.counters["udp.rx.drop.martian_dst"] == 2


def test_dns_query_to_the_ipv6_dns_address_is_a_dns_flow_and_garbage_is_not():
    s = make_stack()
    ready(s)
    s.receive_frame(wire(s, guest_udp(dns_query(), dst=DNS6, dport=53)), 1.0)
    opened, dgram = events(s)
    assert opened.dns and opened.host == fwd.DNS_UPSTREAM and opened.guest == GUEST6
    s.udp_host_datagram(opened.flow_id, b"\x12\x34\x81\x80" + b"\x00" * 8, 1.1)
    [(_, answer)] = out(s, 1.1)
    assert answer[IPv6].src == DNS6 and answer[Ether].src == DNS_MAC and answer[UDP].sport == 53
    s.receive_frame(wire(s, guest_udp(b"\x00" * 4, dst=DNS6, dport=53, sport=5001)), 1.2)
    assert events(s) == [] and s.counters["dns.rx.drop.garbage"] == 1
    assert s.counters["dns.flows.opened"] == 1


def test_dns_disabled_answers_icmpv6_port_unreachable():
    s = make_stack(dns_enabled=False)
    ready(s)
    s.receive_frame(wire(s, guest_udp(dns_query(), dst=DNS6, dport=53)), 1.0)
    [(_, err)] = out(s, 1.0)
    assert err[ICMPv6DestUnreach].code == 4 and err[IPv6].src == DNS6
    assert s.counters["udp.rx.drop.dns_disabled"] == 1


# ------------------------------------------------------------------ errors about UDP flows

@pytest.mark.parametrize("err, code, src", [
    (fwd.ECONNREFUSED, 4, REMOTE6), (fwd.ENETUNREACH, 0, GW6), (fwd.EHOSTUNREACH, 3, GW6),
    (fwd.EAFNOSUPPORT, 0, GW6), (fwd.EADDRNOTAVAIL, 0, GW6),
])
def test_host_errnos_on_an_ipv6_udp_flow_become_icmpv6_unreachable(err, code, src):
    s = make_stack()
    ready(s)
    fid = open_udp(s)
    s.udp_host_error(fid, err, 1.1)
    [(_, e)] = out(s, 1.1)
    assert e[IPv6].src == src and e[IPv6].dst == GUEST6
    assert e[ICMPv6DestUnreach].type == 1 and e[ICMPv6DestUnreach].code == code
    assert e[IPerror6].src == GUEST6 and bytes(e[UDPerror].payload) == b"hello"
    assert s.counters["udp.host.error"] == 1 and s.counters["icmpv6.tx.error"] == 1


def test_other_errnos_on_an_ipv6_udp_flow_are_only_counted():
    s = make_stack()
    ready(s)
    fid = open_udp(s)
    s.udp_host_error(fid, fwd.EACCES, 1.1)
    assert out(s, 1.1) == [] and s.counters["udp.host.error.other"] == 1


@pytest.mark.parametrize("icmp_type, code, info, offender, layer, src", [
    (1, 3, 0, ROUTER6, ICMPv6DestUnreach, ROUTER6),
    (1, 1, 0, "::1", ICMPv6DestUnreach, GW6),
    (1, 0, 0, "fe80::1", ICMPv6DestUnreach, GW6),
    (1, 0, 0, "fd00::9", ICMPv6DestUnreach, GW6),
    (2, 0, 1400, ROUTER6, ICMPv6PacketTooBig, ROUTER6),
    (3, 0, 0, ROUTER6, ICMPv6TimeExceeded, ROUTER6),
])
def test_icmpv6_errors_the_host_received_are_passed_on_from_their_router(
        icmp_type, code, info, offender, layer, src):
    s = make_stack()
    ready(s)
    fid = open_udp(s)
    s.udp_host_error(fid, 0, 1.1, icmp_type, code, packed(offender), info)
    [(_, e)] = out(s, 1.1)
    msg = e[layer]
    assert e[IPv6].src == src and msg.type == icmp_type and msg.code == code
    if layer is ICMPv6PacketTooBig:
        assert msg.mtu == 1400
    assert e[UDPerror].sport == 5000 and l4_checksum_ok(bytes(e[IPv6]))
    assert len(bytes(e[IPv6])) <= 1280


def test_an_error_quotes_at_most_1232_bytes_of_the_guest_datagram():
    s = make_stack()
    ready(s)
    fid = open_udp(s, payload=b"q" * 3000)
    s.udp_host_error(fid, 0, 1.1, 2, 0, packed(ROUTER6), 1280)
    [(_, e)] = out(s, 1.1)
    assert len(bytes(e[IPv6])) == 1280 and e[ICMPv6PacketTooBig].mtu == 1280
    assert e[IPerror6].plen == 8 + 3000                     # the quote is the guest's packet


def test_an_unknown_icmpv6_error_type_is_not_forged():
    s = make_stack()
    ready(s)
    fid = open_udp(s)
    s.udp_host_error(fid, 0, 1.1, 137, 0, packed(ROUTER6), 0)       # a redirect: not an error
    assert out(s, 1.1) == [] and s.counters["icmpv6.tx.drop.error_type"] == 1


# ------------------------------------------------------------------ echo flows

def echo(dst=REMOTE6, ident=0x4242, seq=1, data=b"p" * 56, hlim=64):
    return from_guest(dst=dst, hlim=hlim) / ICMPv6EchoRequest(id=ident, seq=seq, data=data)


def test_echo_to_a_remote_ipv6_host_becomes_an_echo_flow_and_the_reply_keeps_id_and_seq():
    s = make_stack()
    ready(s)
    s.receive_frame(wire(s, echo(seq=5, hlim=33)), 1.0)
    opened, req = events(s)
    assert isinstance(opened, st.IcmpEchoFlowOpened)
    assert (opened.host, opened.guest, opened.ident) == (REMOTE6, GUEST6, 0x4242)
    assert isinstance(req, st.IcmpEchoRequested)
    assert (req.seq, req.ttl, bytes(req.data)) == (5, 33, b"p" * 56)
    assert out(s, 1.0) == []
    s.icmp_host_echo_reply(opened.flow_id, 5, b"p" * 56, 50, 1.1)
    [(_, reply)] = out(s, 1.1)
    assert reply[IPv6].src == REMOTE6 and reply[IPv6].dst == GUEST6 and reply[IPv6].hlim == 50
    r = reply[ICMPv6EchoReply]
    assert (r.id, r.seq, r.data) == (0x4242, 5, b"p" * 56)
    assert l4_checksum_ok(bytes(reply[IPv6]))
    assert s.counters["icmp.rx.echo_request.proxied"] == 1
    assert s.counters["icmpv6.tx.echo_reply.proxied"] == 1 and s.counters["icmp.flows.opened"] == 1
    assert [f.flow_id for f in s.echo_flows()] == [opened.flow_id]


def test_ipv4_and_ipv6_echo_flows_live_side_by_side():
    s = make_stack()
    ready(s)
    s.receive_frame(wire(s, echo()), 1.0)
    v4 = (Ether(src=GUEST_MAC, dst=GW_MAC) / IP(src="10.0.2.100", dst="203.0.113.1")
          / ICMP(id=0x4242, seq=1) / (b"p" * 56))
    s.receive_frame(wire(s, v4), 1.0)
    evs = [e for e in events(s) if isinstance(e, st.IcmpEchoFlowOpened)]
    assert [e.host for e in evs] == [REMOTE6, "203.0.113.1"]
    s.icmp_host_echo_reply(evs[1].flow_id, 1, b"p" * 56, 60, 1.1)
    s.icmp_host_echo_reply(evs[0].flow_id, 1, b"p" * 56, 60, 1.1)
    (_, r4), (_, r6) = out(s, 1.1)
    assert r4[ICMP].type == 0 and r4[IP].ttl == 60
    assert ICMPv6EchoReply in r6 and r6[IPv6].hlim == 60
    s.icmp_host_echo_reply(999, 1, b"", 60, 1.1)
    assert s.counters["icmp.host.drop.no_flow"] == 1


def test_errors_on_an_ipv6_echo_flow_quote_the_request():
    s = make_stack()
    ready(s)
    s.receive_frame(wire(s, echo()), 1.0)
    opened, _ = events(s)
    s.icmp_host_error(opened.flow_id, 3, 0, 1.1, packed(ROUTER6))
    s.icmp_host_error(opened.flow_id, 1, 3, 1.1, None)
    (_, te), (_, unreach) = out(s, 1.1)
    assert te[ICMPv6TimeExceeded].code == 0 and te[IPv6].src == ROUTER6
    assert unreach[ICMPv6DestUnreach].code == 3 and unreach[IPv6].src == GW6
    for e in (te, unreach):
        assert e[IPerror6].src == GUEST6 and e[IPerror6].dst == REMOTE6
        assert l4_checksum_ok(bytes(e[IPv6]))
    assert s.counters["icmp.host.error"] == 2 and s.counters["icmpv6.tx.error"] == 2
    # the runtime's mapping of an echo socket's errno, for the flow's family
    assert fwd.echo_unreach(fwd.EHOSTUNREACH, True) == (1, 3)
    assert fwd.echo_unreach(fwd.EHOSTUNREACH, False) == (3, 1)
    assert fwd.echo_unreach(fwd.EADDRNOTAVAIL, True) == (1, 0)
    assert fwd.echo_unreach(fwd.EADDRNOTAVAIL, False) is None


@pytest.mark.parametrize("dst, counter", [
    ("ff02::1", "icmpv6.rx.drop.martian_dst"), ("fd00::9", "icmpv6.rx.drop.local_network"),
    ("::ffff:203.0.113.1", "icmpv6.rx.drop.martian_dst"),
])
def test_echo_policy_for_ipv6(dst, counter):
    s = make_stack()
    ready(s)
    s.receive_frame(wire(s, echo(dst=dst)), 1.0)
    assert out(s, 1.0) == [] and events(s) == [] and s.counters[counter] == 1


def test_host_echo_reply_too_big_for_the_mtu_is_dropped():
    s = make_stack(mtu=1500)
    ready(s)
    s.receive_frame(wire(s, echo()), 1.0)
    opened, _ = events(s)
    s.icmp_host_echo_reply(opened.flow_id, 1, b"x" * (1500 - 48 + 1), 64, 1.1)
    assert out(s, 1.1) == [] and s.counters["icmpv6.tx.drop.too_big"] == 1


# ------------------------------------------------------------------ published ports

def _inbound_syn(s, client, cport=5555, gport=80, now=0.0, **kw):
    fid = s.tcp_inbound_open(client, cport, gport, now, **kw)
    assert fid is not None
    [(_, syn)] = out(s, now)
    return fid, syn


def test_an_ipv6_client_reaches_the_guest_over_ipv6_from_its_own_address():
    s = make_stack(guest_mac=MAC)
    fid, syn = _inbound_syn(s, CLIENT6)
    assert syn[Ether].type == 0x86DD and syn[Ether].dst == GUEST_MAC
    assert syn[IPv6].src == CLIENT6 and syn[IPv6].dst == GUEST6
    assert (syn[TCP].sport, syn[TCP].dport, syn[TCP].flags) == (5555, 80, "S")
    assert dict(syn[TCP].options)["MSS"] == 65520 - 60
    s.receive_frame(wire(s, from_guest(dst=CLIENT6) / TCP(sport=80, dport=5555, flags="SA", seq=9000,
                                                          ack=syn[TCP].seq + 1, window=65535)), 0.1)
    out(s, 0.1)
    s.tcp_host_data(fid, b"GET /", 0.2)
    [(_, data)] = out(s, 0.2)
    assert bytes(data[TCP].payload) == b"GET /" and data[IPv6].src == CLIENT6
    assert s.counters["tcp.inbound.opened"] == 1 and s.counters["tcp.flows.established"] == 1
    assert s.counters["tcp.inbound.via_gateway"] == 0


@pytest.mark.parametrize("client", ["::1", "fe80::1%lo", "fd00::5", "ff02::1", "::"])
def test_ipv6_clients_the_guest_cannot_route_to_appear_as_the_ipv6_gateway(client):
    s = make_stack(guest_mac=MAC)
    _, syn = _inbound_syn(s, client, cport=41000)
    assert syn[IPv6].src == GW6 and syn[IPv6].dst == GUEST6 and syn[TCP].sport == 41000
    assert s.counters["tcp.inbound.via_gateway"] == 1


def test_an_ipv4_mapped_client_goes_over_ipv4_and_with_ipv6_off_an_ipv6_one_too():
    s = make_stack(guest_mac=MAC)
    _, syn = _inbound_syn(s, "::ffff:198.51.100.7")
    assert syn[IP].src == "198.51.100.7" and syn[IP].dst == "10.0.2.100"
    off = make_stack(guest_mac=MAC, network6=None)
    _, syn = _inbound_syn(off, CLIENT6)
    assert syn[IP].src == "10.0.2.2" and syn[IP].dst == "10.0.2.100"
    assert off.counters["tcp.inbound.via_gateway"] == 1
    assert off.tcp_inbound_open(CLIENT6, 1, 80, 0.0, guest_ip=packed(GUEST6)) is None
    assert off.counters["tcp.inbound.drop.family_off"] == 1
    assert off.udp_inbound_open(CLIENT6, 1, 53, 0.0, guest_ip=packed(GUEST6)) is None
    assert off.counters["udp.inbound.drop.family_off"] == 1


def test_an_explicit_guest_address_picks_the_family():
    s = make_stack(guest_mac=MAC)
    _, syn = _inbound_syn(s, "198.51.100.7", guest_ip=packed(GUEST6))
    assert syn[IPv6].src == GW6 and syn[IPv6].dst == GUEST6          # IPv4 client, IPv6 guest
    _, syn = _inbound_syn(s, CLIENT6, cport=5556, guest_ip=bytes([10, 0, 2, 100]))
    assert syn[IP].src == "10.0.2.2" and syn[IP].dst == "10.0.2.100"  # and the other way round
    _, syn = _inbound_syn(s, CLIENT6, cport=5557, guest_ip=packed(GUEST6))
    assert syn[IPv6].src == CLIENT6
    assert s.inbound_source(CLIENT6) == bytes([10, 0, 2, 2])
    assert s.inbound_source(CLIENT6, packed(GUEST6)) == packed(CLIENT6)
    assert s.inbound_source("::1", packed(GUEST6)) == packed(GW6)


def test_inbound_udp_from_an_ipv6_client_keeps_its_address_and_replies_map_back():
    s = make_stack(guest_mac=MAC)
    ready(s)
    fid = s.udp_inbound_open(CLIENT6, 7000, 53, 0.0)
    s.udp_host_datagram(fid, b"ping", 0.0)
    [(_, d)] = out(s)
    assert d[IPv6].src == CLIENT6 and d[IPv6].dst == GUEST6
    assert (d[UDP].sport, d[UDP].dport, bytes(d[UDP].payload)) == (7000, 53, b"ping")
    s.receive_frame(wire(s, from_guest(dst=CLIENT6) / UDP(sport=53, dport=7000) / b"pong"), 0.1)
    evs = [e for e in events(s) if isinstance(e, st.UdpDatagramReceived)]
    assert [(e.flow_id, bytes(e.data)) for e in evs] == [(fid, b"pong")]
    assert s.udp_flows()[0].inbound and s.counters["udp.inbound.opened"] == 1
    fid2 = s.udp_inbound_open("::1", 7000, 53, 0.2)
    s.udp_host_datagram(fid2, b"x", 0.2)
    [(_, d2)] = out(s, 0.2)
    assert d2[IPv6].src == GW6 and d2[UDP].sport == 7000


def test_an_inbound_ipv6_flow_waits_for_the_guest_mac_and_solicits_it():
    s = make_stack()
    fid = s.tcp_inbound_open(CLIENT6, 5555, 80, 0.0)
    frames = [p for _, p in out(s)]
    [sol] = [p for p in frames if ICMPv6ND_NS in p]
    [arp] = [p for p in frames if ARP in p]
    assert len(frames) == 2
    assert sol[ICMPv6ND_NS].tgt == GUEST6 and sol[IPv6].dst == "ff02::1:ff00:100"
    assert sol[Ether].dst == "33:33:ff:00:01:00" and sol[IPv6].hlim == 255
    assert arp[ARP].pdst == "10.0.2.100"
    assert s.counters["ndp.tx.ns"] == 1
    na = (from_guest(dst=sol[IPv6].src, src=GUEST6, hlim=255) / ICMPv6ND_NA(tgt=GUEST6, S=1, O=1)
          / ICMPv6NDOptDstLLAddr(lladdr=GUEST_MAC))
    s.receive_frame(wire(s, na), 0.1)
    frames = [p for _, p in out(s, 0.1)]
    syn = [p for p in frames if TCP in p]
    assert len(syn) == 1 and syn[0][IPv6].src == CLIENT6 and syn[0][Ether].dst == GUEST_MAC
    assert fid in [f.flow_id for f in s.flows()]


def test_an_inbound_ipv6_datagram_waits_for_the_guest_mac_too():
    s = make_stack()
    fid = s.udp_inbound_open(CLIENT6, 7000, 53, 0.0)
    s.udp_host_datagram(fid, b"early", 0.0)
    assert s.counters["udp.inbound.await_mac"] == 1 and s.counters["ndp.tx.ns"] == 1
    out(s)
    s.receive_frame(wire(s, from_guest(dst="ff02::2", src=GUEST_LL, hlim=255,
                                       eth_dst="33:33:00:00:00:02") /
                         ICMPv6ND_NS(tgt=GW6)), 0.1)
    frames = [p for _, p in out(s, 0.1)]
    [d] = [p for p in frames if UDP in p]
    assert bytes(d[UDP].payload) == b"early" and d[IPv6].src == CLIENT6


def _guest_rst(s, syn, now):
    """The guest's kernel refusing an inbound IPv6 SYN (nothing listens on IPv6)."""
    s.receive_frame(wire(s, from_guest(dst=syn[IPv6].src) / TCP(
        sport=syn[TCP].dport, dport=syn[TCP].sport, flags="RA", seq=0, ack=syn[TCP].seq + 1)), now)


def test_an_ipv6_client_refused_over_ipv6_is_retried_over_ipv4_with_what_it_sent():
    s = make_stack(guest_mac=MAC)
    ready(s)                            # the guest's first IPv6 frame brings an RA: done with it
    fid, syn = _inbound_syn(s, CLIENT6)
    s.tcp_host_data(fid, b"GET / HTTP/1.0\r\n\r\n", 0.01)     # the client talks before the guest answers
    s.tcp_host_eof(fid, 0.01)
    assert out(s, 0.01) == []                                 # nothing sent before SYN-ACK
    _guest_rst(s, syn, 0.02)
    [(_, syn4)] = out(s, 0.02)
    assert syn4[Ether].type == 0x0800 and syn4[IP].dst == "10.0.2.100"
    assert syn4[IP].src == "10.0.2.2" and (syn4[TCP].dport, syn4[TCP].flags) == (80, "S")
    assert events(s) == []                                    # same flow id: the runtime sees nothing
    assert s.counters["tcp.inbound.ipv4_retry"] == 1 and s.half_open == 1
    # The IPv4 server answers: the held request (and the EOF) reach it on the IPv4 flow.
    s.receive_frame(wire(s, Ether(src=GUEST_MAC, dst=GW_MAC) / IP(src="10.0.2.100", dst="10.0.2.2")
                         / TCP(sport=80, dport=syn4[TCP].sport, flags="SA", seq=7000,
                               ack=syn4[TCP].seq + 1, window=65535)), 0.03)
    frames = [f for _, f in out(s, 0.03)]
    payload = b"".join(bytes(f[TCP].payload) for f in frames)
    assert payload == b"GET / HTTP/1.0\r\n\r\n" and "F" in str(frames[-1][TCP].flags)
    assert [f.flow_id for f in s.flows()] == [fid]
    assert s.counters["tcp.flows.opened"] - s.counters["tcp.flows.closed"] == 1


def test_no_ipv4_retry_when_the_runtime_named_the_ipv6_address_or_the_guest_refuses_ipv4():
    s = make_stack(guest_mac=MAC)
    ready(s)                            # the guest's first IPv6 frame brings an RA: done with it
    fid, syn = _inbound_syn(s, CLIENT6, guest_ip=packed(GUEST6))
    _guest_rst(s, syn, 0.01)
    assert out(s, 0.01) == []
    assert [(type(e).__name__, e.flow_id, e.reset) for e in events(s)] == [("TcpFlowClosed", fid, True)]
    # Retried once only: an IPv4 refusal after the retry ends the flow.
    fid, syn = _inbound_syn(s, CLIENT6, cport=5556)
    _guest_rst(s, syn, 0.02)
    [(_, syn4)] = out(s, 0.02)
    s.receive_frame(wire(s, Ether(src=GUEST_MAC, dst=GW_MAC) / IP(src="10.0.2.100", dst="10.0.2.2")
                         / TCP(sport=80, dport=syn4[TCP].sport, flags="RA", seq=0,
                               ack=syn4[TCP].seq + 1)), 0.03)
    assert out(s, 0.03) == []
    assert [(type(e).__name__, e.flow_id, e.reset) for e in events(s)] == [("TcpFlowClosed", fid, True)]
    assert s.counters["tcp.inbound.ipv4_retry"] == 1 and s.flows() == []


def test_a_client_that_sent_more_than_the_hold_limit_is_not_retried():
    from slirpy.tcpip.iface.tcp import RETRY_HOLD_MAX
    s = make_stack(guest_mac=MAC)
    ready(s)                            # the guest's first IPv6 frame brings an RA: done with it
    fid, syn = _inbound_syn(s, CLIENT6)
    s.tcp_host_data(fid, b"x" * (RETRY_HOLD_MAX + 1), 0.01)
    _guest_rst(s, syn, 0.02)
    assert out(s, 0.02) == []
    assert [type(e).__name__ for e in events(s)][-1] == "TcpFlowClosed"
    assert s.counters["tcp.inbound.ipv4_retry_dropped"] == 1
    assert s.counters["tcp.inbound.ipv4_retry"] == 0
