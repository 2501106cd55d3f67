"""Stack over IPv6: TCP flows (handshake, data both ways with and without offloads, close),
the forwarding decisions for IPv6 SYNs, and connect failures answered with ICMPv6."""

from __future__ import annotations

import random

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import ICMPv6DestUnreach, IPerror6, IPv6, TCPerror
from scapy.layers.l2 import Ether

from slirpy.tcpip import fwd
from slirpy.tcpip import stack as st
from slirpy.tcpip.checksum import pseudo_header_sum
from slirpy.tcpip.wire.virtio import F_NEEDS_CSUM, GSO_NONE, GSO_TCPV4, GSO_TCPV6

from tests.unit.test_stack_ipv6 import (
    DNS6, GUEST6, GUEST_MAC, GW6, GW_MAC, REMOTE6, events, from_guest, l4_checksum_ok,
    make_stack, out, packed, ready, wire,
)


def guest_tcp(dst=REMOTE6, sport=40000, dport=80, **kw):
    return from_guest(dst=dst) / TCP(sport=sport, dport=dport, **kw)


def syn(s, dst=REMOTE6, dport=80, sport=40000, mss=1440, now=1.0):
    s.receive_frame(wire(s, guest_tcp(dst=dst, sport=sport, dport=dport, flags="S", seq=1000,
                                      options=[("MSS", mss), ("WScale", 7)])), now)


def established(s, sport=40000, mss=1440):
    """A guest flow from `sport` to REMOTE6:80 through the handshake: (flow id, our ISS)."""
    syn(s, sport=sport, mss=mss)
    [ev] = events(s)
    s.tcp_host_connected(ev.flow_id, 1.0)
    [(_, synack)] = out(s, 1.0)
    iss = synack[TCP].seq
    s.receive_frame(wire(s, guest_tcp(sport=sport, flags="A", seq=1001, ack=iss + 1,
                                      window=65535)), 1.0)
    assert out(s, 1.0) == []
    return ev.flow_id, iss


def test_handshake_data_and_close_with_offloads():
    s = make_stack()
    ready(s)
    syn(s)
    assert out(s, 1.0) == []                      # nothing before the host connect succeeded
    [ev] = events(s)
    assert isinstance(ev, st.TcpConnectRequested)
    assert (ev.host, ev.port, ev.guest, ev.guest_port, ev.dns) == (REMOTE6, 80, GUEST6, 40000, False)
    s.tcp_host_connected(ev.flow_id, 1.0)
    [(vh, synack)] = out(s, 1.0)
    assert synack[Ether].src == GW_MAC and synack[Ether].dst == GUEST_MAC
    assert synack[Ether].type == 0x86DD
    assert synack[IPv6].src == REMOTE6 and synack[IPv6].dst == GUEST6 and synack[IPv6].hlim == 64
    t = synack[TCP]
    assert t.flags == "SA" and t.ack == 1001 and (t.sport, t.dport) == (80, 40000)
    assert dict(t.options)["MSS"] == 65520 - 60
    # a complete frame whose TCP checksum the kernel finishes: csum_start after the IPv6 header
    assert vh == (F_NEEDS_CSUM, GSO_NONE, 0, 0, 54, 16, 0)
    tcp_len = len(bytes(synack[TCP]))
    assert synack[IPv6].plen == tcp_len
    assert t.chksum == pseudo_header_sum(packed(REMOTE6), packed(GUEST6), 6, tcp_len)
    s.receive_frame(wire(s, guest_tcp(flags="PA", seq=1001, ack=t.seq + 1, window=65535)
                         / b"hello"), 1.1)
    assert out(s, 1.1) == []                      # the ACK waits for the answer (ack_delay)
    assert [bytes(e.data) for e in events(s)] == [b"hello"]
    assert s.half_open == 0 and s.counters["tcp.flows.established"] == 1
    # host data leaves as one GSO_TCPV6 super-frame cut at the guest's MSS
    data = random.Random(3).randbytes(50000)
    s.tcp_host_data(ev.flow_id, data, 1.2)
    frames = out(s, 1.2)
    payload = b"".join(bytes(p[TCP].payload) for _, p in frames)
    assert payload == data[:len(payload)] and len(frames[0][1][TCP].payload) > 1440
    vh, first = frames[0]
    thlen = len(bytes(first[TCP])) - len(bytes(first[TCP].payload))
    assert vh == (F_NEEDS_CSUM, GSO_TCPV6, 14 + 40 + thlen, 1440, 54, 16, 0)
    assert first[IPv6].plen == len(bytes(first[TCP]))
    assert s.counters["tcp.tx.gso_frames"] == len(frames)
    # the guest acknowledges until it has everything
    def end_of(frames):
        return max(p[TCP].seq + len(p[TCP].payload) for _, p in frames)

    got, now, end = payload, 1.2, end_of(frames)
    while len(got) < len(data):
        now += 0.01
        s.receive_frame(wire(s, guest_tcp(flags="A", seq=1006, ack=end, window=65535)), now)
        frames = out(s, now)
        got += b"".join(bytes(p[TCP].payload) for _, p in frames)
        end = end_of(frames)
    assert got == data
    # the guest closes, then the host: the flow ends with one TcpFlowClosed
    s.receive_frame(wire(s, guest_tcp(flags="FA", seq=1006, ack=end, window=65535)), 2.0)
    out(s, 2.0)
    assert [type(e) for e in events(s)] == [st.TcpEofReceived]
    s.tcp_host_eof(ev.flow_id, 2.1)
    [(_, fin)] = out(s, 2.1)
    assert fin[TCP].flags == "FA" and fin[IPv6].src == REMOTE6 and fin[TCP].ack == 1007
    s.receive_frame(wire(s, guest_tcp(flags="A", seq=1007, ack=fin[TCP].seq + 1)), 2.2)
    out(s, 2.2)
    assert events(s) == [st.TcpFlowClosed(ev.flow_id, False)]
    assert s.flows() == []


@pytest.mark.parametrize("vnet", [True, False])
def test_without_offloads_every_segment_fits_the_mss_and_carries_its_checksum(vnet):
    s = make_stack(vnet=vnet, offload=False, mtu=1500)
    ready(s)
    fid, _ = established(s, mss=1460)
    data = random.Random(4).randbytes(5000)
    s.tcp_host_data(fid, data, 1.2)
    frames = out(s, 1.2)
    assert b"".join(bytes(p[TCP].payload) for _, p in frames) == data
    assert [len(bytes(p[TCP].payload)) for _, p in frames][0] == 1500 - 60   # our MSS caps it
    for vh, p in frames:
        assert vh in (None, (0, 0, 0, 0, 0, 0, 0))
        assert l4_checksum_ok(bytes(p[IPv6]))
    assert s.counters["tcp.tx.gso_frames"] == 0


def test_syn_ack_advertises_the_ipv6_mss_and_ipv4_flows_keep_theirs():
    s = make_stack(mtu=1500)
    ready(s)
    syn(s)
    v4 = Ether(src=GUEST_MAC, dst=GW_MAC) / IP(src="10.0.2.100", dst="203.0.113.1")
    s.receive_frame(wire(s, v4 / TCP(sport=40000, dport=80, flags="S", seq=5,
                                      options=[("MSS", 1460)])), 1.0)
    for ev in events(s):
        s.tcp_host_connected(ev.flow_id, 1.0)
    (vh6, a6), (vh4, a4) = out(s, 1.0)
    assert IPv6 in a6 and dict(a6[TCP].options)["MSS"] == 1440 and vh6[4] == 54
    assert IP in a4 and dict(a4[TCP].options)["MSS"] == 1460 and vh4[4] == 34
    # both flows (the same ports, each family its own) move data in their own super-frames
    s.receive_frame(wire(s, guest_tcp(flags="A", seq=1001, ack=a6[TCP].seq + 1)), 1.0)
    s.receive_frame(wire(s, v4 / TCP(sport=40000, dport=80, flags="A", seq=6,
                                      ack=a4[TCP].seq + 1)), 1.0)
    for fid in (1, 2):
        s.tcp_host_data(fid, b"z" * 4000, 1.1)
    frames = out(s, 1.1)
    assert sorted((vh[1], vh[4], IPv6 in p) for vh, p in frames) == [
        (GSO_TCPV4, 34, False), (GSO_TCPV6, 54, True)]
    assert len(s.flows()) == 2 and s.counters["tcp.flows.established"] == 2


@pytest.mark.parametrize("allow", [False, True])
def test_syn_to_the_ipv6_gateway_reaches_host_loopback_only_when_allowed(allow):
    s = make_stack(allow_host_loopback=allow)
    ready(s)
    syn(s, dst=GW6, dport=22)
    if allow:
        [ev] = events(s)
        assert (ev.host, ev.port) == ("::1", 22)
        assert out(s, 1.0) == []
    else:
        [(_, err)] = out(s, 1.0)       # ICMPv6 no route quoting the SYN, as libslirp
        assert err[ICMPv6DestUnreach].code == 0 and err[IPv6].src == GW6
        assert err[IPv6].dst == GUEST6 and err[IPerror6].dst == GW6
        assert err[TCPerror].flags == "S" and err[TCPerror].dport == 22
        assert l4_checksum_ok(bytes(err[IPv6]))
        assert events(s) == [] and s.counters["tcp.rx.drop.host_loopback_denied"] == 1


@pytest.mark.parametrize("dst, counter", [
    ("::1", "martian_dst"), ("fe80::1", "martian_dst"), ("ff02::1", "martian_dst"),
    ("::ffff:203.0.113.1", "martian_dst"), ("fd00::7", "local_network"),
    (GUEST6, "local_network"), (DNS6, "local_network"),
])
def test_syn_to_what_the_guest_may_not_reach_is_reset(dst, counter):
    s = make_stack()
    ready(s)
    syn(s, dst=dst)
    [(_, rst)] = out(s, 1.0)
    assert rst[TCP].flags == "RA" and rst[IPv6].src == dst
    assert events(s) == [] and s.counters["tcp.rx.drop." + counter] == 1


def test_syn_to_the_ipv6_dns_address_port_53_is_a_dns_flow():
    s = make_stack()
    ready(s)
    syn(s, dst=DNS6, dport=53)
    [ev] = events(s)
    assert ev.dns and ev.host == fwd.DNS_UPSTREAM and ev.port == 53 and ev.guest == GUEST6
    assert s.counters["dns.tcp.flows.opened"] == 1


@pytest.mark.parametrize("err, code", [
    (fwd.ENETUNREACH, 0), (fwd.EHOSTUNREACH, 3), (fwd.EAFNOSUPPORT, 0),
    (fwd.EADDRNOTAVAIL, 0), (fwd.EACCES, 1), (fwd.ETIMEDOUT, 3),
])
def test_failed_connect_answers_icmpv6_unreachable_quoting_the_syn(err, code):
    s = make_stack()
    ready(s)
    syn(s)
    [ev] = events(s)
    s.tcp_host_connect_failed(ev.flow_id, err, 1.1)
    [(_, err_frame)] = out(s, 1.1)
    assert err_frame[Ether].src == GW_MAC and err_frame[IPv6].src == GW6
    assert err_frame[IPv6].dst == GUEST6
    unreach = err_frame[ICMPv6DestUnreach]
    assert unreach.type == 1 and unreach.code == code
    quoted = err_frame[IPerror6]
    assert quoted.src == GUEST6 and quoted.dst == REMOTE6
    assert err_frame[TCPerror].flags == "S" and err_frame[TCPerror].seq == 1000
    assert l4_checksum_ok(bytes(err_frame[IPv6]))
    assert events(s) == [st.TcpFlowClosed(ev.flow_id, False)]
    assert s.counters["tcp.connect.unreachable"] == 1 and s.counters["icmpv6.tx.error"] == 1


def test_refused_connect_is_a_reset_and_an_ipv4_eaddrnotavail_still_a_silent_drop():
    s = make_stack()
    ready(s)
    syn(s)
    [ev] = events(s)
    s.tcp_host_connect_failed(ev.flow_id, fwd.ECONNREFUSED, 1.1)
    [(_, rst)] = out(s, 1.1)
    assert rst[TCP].flags == "RA" and rst[TCP].ack == 1001 and rst[IPv6].src == REMOTE6
    assert s.counters["tcp.connect.refused"] == 1
    # over IPv4 the same errno is a shortage on our side: the guest retries
    s.receive_frame(wire(s, Ether(src=GUEST_MAC, dst=GW_MAC) / IP(src="10.0.2.100", dst="203.0.113.1")
                         / TCP(sport=40001, dport=80, flags="S", seq=5)), 1.2)
    ev4 = [e for e in events(s) if isinstance(e, st.TcpConnectRequested)][0]
    s.tcp_host_connect_failed(ev4.flow_id, fwd.EADDRNOTAVAIL, 1.3)
    assert out(s, 1.3) == [] and s.counters["tcp.connect.drop.local_resource"] == 1
