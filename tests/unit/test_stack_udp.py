"""Stack: UDP flows, DNS at network+3, ICMP echo to other hosts. Explicit `now`, no sockets."""

from __future__ import annotations

import random

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, UDPerror
from scapy.layers.l2 import Ether

from slirpy.config import Limits, NetConfig
from slirpy.tcpip import stack as st
from slirpy.tcpip.checksum import sum16
from slirpy.tcpip.wire.virtio import F_NEEDS_CSUM, VNET_HDR, VNET_HDR_LEN

GUEST_MAC = "02:00:00:00:00:64"
GW_MAC = "52:55:0a:00:02:02"
DNS_MAC = "52:55:0a:00:02:03"
GUEST = "10.0.2.100"
GW = "10.0.2.2"
DNS = "10.0.2.3"
REMOTE = "203.0.113.1"
ROUTER = "198.51.100.7"


def make_stack(vnet=True, offload=True, **cfg) -> st.Stack:
    return st.Stack(NetConfig(**cfg), vnet_hdr=vnet, offload=offload, rng=random.Random(1))


def wire(stack, pkt, vnet_flags=0) -> bytes:
    raw = bytes(pkt)
    if not stack.vnet_hdr:
        return raw
    return VNET_HDR.pack(vnet_flags, 0, 0, 0, 0, 0, 0) + raw


def flat(frame) -> bytes:
    return frame if isinstance(frame, bytes) else b"".join(bytes(p) for p in frame)


def out(stack, now=0.0):
    res = []
    for f in stack.frames_to_send(now):
        raw = flat(f)
        if stack.vnet_hdr:
            res.append((VNET_HDR.unpack_from(raw, 0), raw[VNET_HDR_LEN:]))
        else:
            res.append((None, raw))
    return res


def events(stack) -> list:
    evs = []
    while (ev := stack.next_event()) is not None:
        evs.append(ev)
    return evs


def guest_udp(payload=b"hello", dst=REMOTE, sport=5000, dport=7, **udp_kw):
    return (Ether(src=GUEST_MAC, dst=GW_MAC) / IP(src=GUEST, dst=dst) /
            UDP(sport=sport, dport=dport, **udp_kw) / payload)


def dns_query(qid=0x1234, flags=0x0100) -> bytes:
    # header + one question: example. A IN
    return (qid.to_bytes(2, "big") + flags.to_bytes(2, "big") + b"\x00\x01\x00\x00\x00\x00\x00\x00"
            + b"\x07example\x00\x00\x01\x00\x01")


def udp_checksum_ok(ip_bytes: bytes) -> bool:
    ip = IP(ip_bytes)
    udp = bytes(ip[UDP])
    pseudo = sum16(bytes(ip)[12:20]) + 17 + len(udp)
    return sum16(udp, pseudo) == 0xFFFF


def open_flow(s, now=0.0, **kw):
    s.receive_frame(wire(s, guest_udp(**kw)), now)
    evs = events(s)
    opened = [e for e in evs if isinstance(e, st.UdpFlowOpened)]
    assert len(opened) == 1, evs
    return opened[0]


# --------------------------------------------------------------------------- guest -> host

def test_first_datagram_opens_a_flow_and_is_passed_on():
    s = make_stack()
    s.receive_frame(wire(s, guest_udp(b"ping!", sport=5000, dport=7)), 0.0)
    ev_open, ev_data = events(s)
    assert ev_open == st.UdpFlowOpened(ev_open.flow_id, REMOTE, 7, GUEST, 5000, False)
    assert isinstance(ev_data, st.UdpDatagramReceived) and ev_data.flow_id == ev_open.flow_id
    assert bytes(ev_data.data) == b"ping!"
    s.receive_frame(wire(s, guest_udp(b"again", sport=5000, dport=7)), 1.0)
    [ev2] = events(s)
    assert ev2.flow_id == ev_open.flow_id and bytes(ev2.data) == b"again"
    s.receive_frame(wire(s, guest_udp(b"x", sport=5001, dport=7)), 1.0)
    ev3_open, _ = events(s)
    assert ev3_open.flow_id != ev_open.flow_id
    assert s.counters["udp.flows.opened"] == 2
    assert s.counters["udp.rx.datagrams"] == 3
    assert out(s) == []


def test_empty_datagram_is_passed_on():
    s = make_stack()
    s.receive_frame(wire(s, guest_udp(b"")), 0.0)
    _, ev = events(s)
    assert bytes(ev.data) == b""


def test_bad_udp_checksum_is_dropped_unless_the_kernel_left_it_to_us():
    s = make_stack()
    s.receive_frame(wire(s, guest_udp(b"data", chksum=0x1234)), 0.0)
    assert events(s) == []
    assert s.counters["rx.drop.udp.bad_checksum"] == 1
    # NEEDS_CSUM: the field holds only the pseudo-header sum; not verified.
    s.receive_frame(wire(s, guest_udp(b"data", chksum=0x1234), vnet_flags=F_NEEDS_CSUM), 0.0)
    assert [type(e) for e in events(s)] == [st.UdpFlowOpened, st.UdpDatagramReceived]
    # Checksum 0 means "none" over IPv4.
    s.receive_frame(wire(s, guest_udp(b"data", sport=6000, chksum=0)), 0.0)
    assert len(events(s)) == 2
    assert s.counters["rx.drop.udp.bad_checksum"] == 1


@pytest.mark.parametrize("dst, counter, unreachable", [
    (GW, "udp.rx.drop.host_loopback_denied", 0),        # net unreachable, as libslirp
    (DNS, "udp.rx.drop.local_network", 3),
    ("10.0.2.77", "udp.rx.drop.local_network", None),
    ("127.0.0.1", "udp.rx.drop.martian_dst", None),
    ("224.0.0.251", "udp.rx.drop.martian_dst", None),
    ("255.255.255.255", "udp.rx.drop.martian_dst", None),
])
def test_destination_policy(dst, counter, unreachable):
    s = make_stack()
    s.receive_frame(wire(s, guest_udp(dst=dst)), 0.0)
    assert events(s) == []
    assert s.counters[counter] == 1
    frames = out(s)
    if unreachable is not None:
        [(_, raw)] = frames
        icmp = Ether(raw)[ICMP]
        assert (icmp.type, icmp.code) == (3, unreachable) and Ether(raw)[IP].src == dst
    else:
        assert frames == []


def test_gateway_reaches_host_loopback_when_allowed():
    s = make_stack(allow_host_loopback=True)
    ev = open_flow(s, dst=GW, dport=9999)
    assert (ev.host, ev.port, ev.dns) == ("127.0.0.1", 9999, False)


def test_port_zero_is_dropped():
    s = make_stack()
    s.receive_frame(wire(s, guest_udp(dport=0)), 0.0)
    assert events(s) == [] and s.counters["udp.rx.drop.port_zero"] == 1


# --------------------------------------------------------------------------- host -> guest

@pytest.mark.parametrize("vnet, offload", [(True, True), (True, False), (False, False)])
@pytest.mark.parametrize("size", [0, 1, 1400, 1500 - 28])
def test_host_datagram_reaches_the_guest(vnet, offload, size):
    s = make_stack(vnet=vnet, offload=offload, mtu=1500)
    ev = open_flow(s, sport=5000, dport=53)
    payload = bytes(random.Random(size).randbytes(size))
    s.udp_host_datagram(ev.flow_id, payload, 1.0)
    [(vh, raw)] = out(s)
    pkt = Ether(raw)
    assert pkt[Ether].dst == GUEST_MAC and pkt[Ether].src == GW_MAC
    assert (pkt[IP].src, pkt[IP].dst, pkt[UDP].sport, pkt[UDP].dport) == (REMOTE, GUEST, 53, 5000)
    assert bytes(pkt[UDP].payload) == payload and pkt[UDP].len == 8 + size
    ip_bytes = raw[14:]
    assert sum16(ip_bytes[:20]) == 0xFFFF
    if offload:
        flags, gso, _, _, start, off, _ = vh
        assert (flags, gso, start, off) == (F_NEEDS_CSUM, 0, 34, 6)
        # The field holds the pseudo-header sum; completing the sum (as the kernel does)
        # must give a valid checksum.
        udp = bytearray(ip_bytes[20:])
        field = int.from_bytes(udp[6:8], "big")
        udp[6:8] = b"\0\0"
        csum = ~sum16(bytes(udp), field) & 0xFFFF or 0xFFFF
        udp[6:8] = csum.to_bytes(2, "big")
        assert udp_checksum_ok(ip_bytes[:20] + bytes(udp))
    else:
        assert vh in (None, (0, 0, 0, 0, 0, 0, 0))
        assert pkt[UDP].chksum != 0 and udp_checksum_ok(ip_bytes)
    assert s.counters["udp.tx.datagrams"] == 1


def test_host_datagram_larger_than_the_mtu_is_dropped_and_counted():
    s = make_stack(mtu=1500)
    ev = open_flow(s)
    s.udp_host_datagram(ev.flow_id, b"x" * (1500 - 28 + 1), 1.0)
    assert out(s) == []
    assert s.counters["udp.tx.drop.too_big"] == 1


def test_host_datagram_for_an_unknown_flow_is_counted():
    s = make_stack()
    s.udp_host_datagram(12345, b"late", 1.0)
    assert out(s) == [] and s.counters["udp.host.drop.no_flow"] == 1


# --------------------------------------------------------------------------- errors

def test_refused_port_becomes_icmp_port_unreachable_quoting_the_datagram():
    s = make_stack()
    ev = open_flow(s, payload=b"knock", sport=5555, dport=9)
    s.udp_host_error(ev.flow_id, st.ECONNREFUSED, 1.0)
    [(_, raw)] = out(s)
    pkt = Ether(raw)
    assert pkt[IP].src == REMOTE and pkt[IP].dst == GUEST
    assert (pkt[ICMP].type, pkt[ICMP].code) == (3, 3)
    assert sum16(bytes(pkt[ICMP])) == 0xFFFF
    assert pkt[IPerror].src == GUEST and pkt[IPerror].dst == REMOTE
    assert (pkt[UDPerror].sport, pkt[UDPerror].dport) == (5555, 9)
    assert s.counters["icmp.tx.error"] == 1 and s.counters["udp.host.error"] == 1


def test_icmp_details_from_the_error_queue_are_mapped():
    s = make_stack()
    ev = open_flow(s)
    s.udp_host_error(ev.flow_id, st.EHOSTUNREACH, 1.0, icmp_type=11, icmp_code=0,
                     offender=bytes([198, 51, 100, 7]))
    [(_, raw)] = out(s)
    pkt = Ether(raw)
    assert (pkt[ICMP].type, pkt[ICMP].code) == (11, 0) and pkt[IP].src == ROUTER
    # A loopback offender is not shown to the guest: the error comes from the gateway.
    s.udp_host_error(ev.flow_id, st.EHOSTUNREACH, 1.0, icmp_type=3, icmp_code=1,
                     offender=bytes([127, 0, 0, 1]))
    [(_, raw)] = out(s)
    assert Ether(raw)[IP].src == GW and Ether(raw)[ICMP].code == 1


@pytest.mark.parametrize("err, code", [(st.ENETUNREACH, 0), (st.EHOSTUNREACH, 1)])
def test_unreachable_errnos(err, code):
    s = make_stack()
    ev = open_flow(s)
    s.udp_host_error(ev.flow_id, err, 1.0)
    [(_, raw)] = out(s)
    assert (Ether(raw)[ICMP].type, Ether(raw)[ICMP].code) == (3, code)
    assert Ether(raw)[IP].src == GW                     # a routing failure: from the router


def test_other_errnos_are_only_counted():
    s = make_stack()
    ev = open_flow(s)
    s.udp_host_error(ev.flow_id, 90, 1.0)     # EMSGSIZE
    assert out(s) == [] and s.counters["udp.host.error.other"] == 1


# --------------------------------------------------------------------------- expiry and bounds

def test_idle_flow_expires_after_udp_timeout():
    s = make_stack()
    ev = open_flow(s, now=5.0)
    assert s.next_deadline() == 35.0
    s.handle_timer(34.9)
    assert events(s) == []
    s.handle_timer(35.0)
    assert events(s) == [st.UdpFlowClosed(ev.flow_id)]
    assert s.udp_flows() == [] and s.counters["udp.flows.expired"] == 1
    assert s.next_deadline() is None
    # A datagram after expiry opens a new flow.
    ev2 = open_flow(s, now=40.0)
    assert ev2.flow_id != ev.flow_id


def test_activity_pushes_expiry_without_touching_the_heap():
    s = make_stack()
    ev = open_flow(s, now=0.0)
    heap_size = len(s.table.timers)
    for t in range(1, 21):
        s.receive_frame(wire(s, guest_udp()), float(t))
    events(s)
    assert len(s.table.timers) == heap_size
    s.handle_timer(30.0)
    assert events(s) == [] and s.next_deadline() == 50.0
    s.handle_timer(50.0)
    assert events(s) == [st.UdpFlowClosed(ev.flow_id)]


def test_replied_flow_lives_longer():
    limits = Limits(udp_timeout=30.0, udp_timeout_replied=180.0)
    s = make_stack(limits=limits)
    ev = open_flow(s, now=0.0)
    s.udp_host_datagram(ev.flow_id, b"answer", 1.0)
    out(s)
    s.handle_timer(30.0)
    assert events(s) == [] and s.next_deadline() == 181.0
    s.handle_timer(181.0)
    assert events(s) == [st.UdpFlowClosed(ev.flow_id)]


def test_flow_bound_evicts_the_least_recently_active():
    s = make_stack(limits=Limits(max_udp_flows=3))
    ids = [open_flow(s, sport=p, now=float(i)).flow_id for i, p in enumerate((1001, 1002, 1003))]
    # 1001 becomes active again: 1002 is now the oldest idle one.
    s.receive_frame(wire(s, guest_udp(sport=1001)), 5.0)
    events(s)
    s.receive_frame(wire(s, guest_udp(sport=1004)), 6.0)
    evs = events(s)
    assert evs[0] == st.UdpFlowClosed(ids[1])
    assert isinstance(evs[1], st.UdpFlowOpened) and evs[1].guest_port == 1004
    assert sorted(f.guest_port for f in s.udp_flows()) == [1001, 1003, 1004]
    assert s.counters["udp.flows.evicted"] == 1
    # The evicted flow's heap entry is stale and never fires.
    s.handle_timer(100.0)
    closed = [e.flow_id for e in events(s)]
    assert sorted(closed) == sorted([ids[0], ids[2], evs[1].flow_id])


def test_flood_of_new_flows_stays_bounded():
    s = make_stack(limits=Limits(max_udp_flows=64))
    template = bytearray(wire(s, guest_udp(chksum=0)))     # no UDP checksum: patch ports freely
    off = VNET_HDR_LEN + 14 + 20
    for p in range(1, 5001):
        template[off:off + 2] = p.to_bytes(2, "big")
        s.receive_frame(bytes(template), p * 0.001)
    events(s)
    s.frames_to_send(5.0)
    assert len(s.udp_flows()) == 64
    assert s.counters["udp.flows.evicted"] == 5000 - 64
    assert len(s.table.timers) <= 4 * 64 + 64


def test_tcp_and_udp_deadlines_combine():
    s = make_stack()
    open_flow(s, now=0.0)
    syn = Ether(src=GUEST_MAC, dst=GW_MAC) / IP(src=GUEST, dst=REMOTE) / TCP(sport=40000, dport=80, flags="S")
    s.receive_frame(wire(s, syn), 0.0)
    events(s)
    out(s)
    d = s.next_deadline()
    assert d is not None and d <= 30.0


# --------------------------------------------------------------------------- DNS

def test_dns_query_to_network_plus_3_is_a_dns_flow():
    s = make_stack()
    s.receive_frame(wire(s, guest_udp(dns_query(), dst=DNS, dport=53)), 0.0)
    ev_open, ev_data = events(s)
    assert ev_open.dns and ev_open.host == "" and ev_open.port == 53
    assert bytes(ev_data.data) == dns_query()
    s.udp_host_datagram(ev_open.flow_id, dns_query(flags=0x8180), 0.5)
    [(_, raw)] = out(s)
    pkt = Ether(raw)
    assert pkt[Ether].src == DNS_MAC and pkt[IP].src == DNS and pkt[UDP].sport == 53
    assert s.next_deadline() == 10.0                   # dns_timeout, not udp_timeout
    s.handle_timer(10.5)
    assert events(s) == [st.UdpFlowClosed(ev_open.flow_id)]


@pytest.mark.parametrize("payload", [b"", b"\x12\x34", b"x" * 11, dns_query(flags=0x8180)])
def test_garbage_dns_is_dropped_and_counted(payload):
    s = make_stack()
    s.receive_frame(wire(s, guest_udp(payload, dst=DNS, dport=53)), 0.0)
    assert events(s) == [] and s.udp_flows() == []
    assert s.counters["dns.rx.drop.garbage"] == 1
    # Also on an existing flow.
    s.receive_frame(wire(s, guest_udp(dns_query(), dst=DNS, dport=53)), 0.0)
    assert len(events(s)) == 2
    s.receive_frame(wire(s, guest_udp(payload, dst=DNS, dport=53)), 0.0)
    assert events(s) == [] and s.counters["dns.rx.drop.garbage"] == 2


def test_dns_disabled_answers_port_unreachable_and_rst():
    s = make_stack(dns_enabled=False)
    s.receive_frame(wire(s, guest_udp(dns_query(), dst=DNS, dport=53)), 0.0)
    assert events(s) == []
    [(_, raw)] = out(s)
    assert (Ether(raw)[ICMP].type, Ether(raw)[ICMP].code) == (3, 3) and Ether(raw)[IP].src == DNS
    assert s.counters["udp.rx.drop.dns_disabled"] == 1
    syn = Ether(src=GUEST_MAC, dst=DNS_MAC) / IP(src=GUEST, dst=DNS) / TCP(sport=40000, dport=53, flags="S")
    s.receive_frame(wire(s, syn), 0.0)
    assert events(s) == []
    [(_, raw)] = out(s)
    assert "R" in Ether(raw)[TCP].flags


def test_dns_over_tcp_is_a_dns_flow():
    s = make_stack()
    syn = Ether(src=GUEST_MAC, dst=DNS_MAC) / IP(src=GUEST, dst=DNS) / TCP(sport=40000, dport=53, flags="S")
    s.receive_frame(wire(s, syn), 0.0)
    [ev] = events(s)
    assert isinstance(ev, st.TcpConnectRequested) and ev.dns and ev.port == 53 and ev.host == ""


def test_other_ports_on_the_dns_address_are_unreachable():
    s = make_stack()
    s.receive_frame(wire(s, guest_udp(b"x", dst=DNS, dport=123)), 0.0)
    assert events(s) == []
    [(_, raw)] = out(s)
    assert (Ether(raw)[ICMP].type, Ether(raw)[ICMP].code) == (3, 3)
    assert s.counters["udp.rx.drop.local_network"] == 1


# --------------------------------------------------------------------------- ICMP echo

def echo(dst=REMOTE, ident=0x4242, seq=1, payload=b"p" * 56, ttl=64):
    return Ether(src=GUEST_MAC, dst=GW_MAC) / IP(src=GUEST, dst=dst, ttl=ttl) / ICMP(id=ident, seq=seq) / payload


def test_echo_to_a_remote_host_becomes_an_echo_flow_and_the_reply_keeps_id_and_seq():
    s = make_stack()
    s.receive_frame(wire(s, echo(seq=7, ttl=61)), 0.0)
    ev_open, ev_req = events(s)
    assert ev_open == st.IcmpEchoFlowOpened(ev_open.flow_id, REMOTE, GUEST, 0x4242)
    assert (ev_req.flow_id, ev_req.seq, ev_req.ttl, bytes(ev_req.data)) == (ev_open.flow_id, 7, 61, b"p" * 56)
    assert out(s) == []                                   # never answered by the stack itself
    s.icmp_host_echo_reply(ev_open.flow_id, 7, b"p" * 56, 57, 0.01)
    [(_, raw)] = out(s)
    pkt = Ether(raw)
    assert (pkt[IP].src, pkt[IP].dst, pkt[IP].ttl) == (REMOTE, GUEST, 57)
    assert (pkt[ICMP].type, pkt[ICMP].id, pkt[ICMP].seq) == (0, 0x4242, 7)
    assert bytes(pkt[ICMP].payload) == b"p" * 56
    assert sum16(raw[14:34]) == 0xFFFF and sum16(bytes(pkt[ICMP])) == 0xFFFF
    # Same ident and destination: same flow.
    s.receive_frame(wire(s, echo(seq=8)), 1.0)
    [ev] = events(s)
    assert ev.flow_id == ev_open.flow_id and ev.seq == 8


def test_echo_flows_are_bounded_and_expire():
    s = make_stack(limits=Limits(max_icmp_flows=2, icmp_timeout=30.0))
    for i, ident in enumerate((1, 2, 3)):
        s.receive_frame(wire(s, echo(ident=ident)), float(i))
    evs = events(s)
    closed = [e for e in evs if isinstance(e, st.IcmpEchoFlowClosed)]
    assert len(closed) == 1 and s.counters["icmp.flows.evicted"] == 1
    assert sorted(f.guest_port for f in s.echo_flows()) == [2, 3]
    s.handle_timer(40.0)
    assert len([e for e in events(s) if isinstance(e, st.IcmpEchoFlowClosed)]) == 2
    assert s.counters["icmp.flows.expired"] == 2 and s.echo_flows() == []


def test_echo_errors_quote_the_request():
    s = make_stack()
    s.receive_frame(wire(s, echo(seq=3)), 0.0)
    ev_open, _ = events(s)
    s.icmp_host_error(ev_open.flow_id, 11, 0, 0.5, offender=bytes([198, 51, 100, 7]))
    [(_, raw)] = out(s)
    pkt = Ether(raw)
    assert (pkt[ICMP].type, pkt[ICMP].code, pkt[IP].src) == (11, 0, ROUTER)
    assert pkt[IPerror].dst == REMOTE


def test_dropped_echo_is_counted_and_nothing_is_forged():
    s = make_stack()
    s.receive_frame(wire(s, echo()), 0.0)
    ev_open, _ = events(s)
    s.icmp_echo_dropped(ev_open.flow_id, "not_permitted", 0.0)
    assert out(s) == [] and s.counters["icmp.echo.drop.not_permitted"] == 1


@pytest.mark.parametrize("dst, counter", [("127.0.0.1", "icmp.rx.drop.martian_dst"),
                                          ("10.0.2.77", "icmp.rx.drop.local_network")])
def test_echo_policy(dst, counter):
    s = make_stack()
    s.receive_frame(wire(s, echo(dst=dst)), 0.0)
    assert events(s) == [] and out(s) == [] and s.counters[counter] == 1


def test_non_echo_icmp_to_a_remote_host_is_dropped():
    s = make_stack()
    pkt = Ether(src=GUEST_MAC, dst=GW_MAC) / IP(src=GUEST, dst=REMOTE) / ICMP(type=13)
    s.receive_frame(wire(s, pkt), 0.0)
    assert events(s) == [] and s.counters["icmp.rx.drop.type"] == 1
