"""Stack: inbound (published-port) flows. Frames in, frames/events out, explicit `now`."""

from __future__ import annotations

import random

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether

from slirpy.config import Limits, NetConfig
from slirpy.tcpip import fwd
from slirpy.tcpip import stack as st

from tests.unit.test_stack import GUEST, GUEST_MAC, GW, GW_MAC, events, out_frames, wire

CLIENT = "198.51.100.7"
MAC = bytes.fromhex(GUEST_MAC.replace(":", ""))


def make_stack(mac: bool = True, **cfg) -> st.Stack:
    if mac:
        cfg.setdefault("guest_mac", MAC)
    return st.Stack(NetConfig(**cfg), vnet_hdr=True, offload=True, rng=random.Random(7))


def from_guest(dst, sport, dport, **kw):
    return Ether(src=GUEST_MAC, dst=GW_MAC) / IP(src=GUEST, dst=dst) / TCP(sport=sport, dport=dport, **kw)


def _syn(s, now=0.0):
    [(_, syn)] = out_frames(s, now)
    return syn


def _establish(s, client=CLIENT, cport=5555, gport=80):
    fid = s.tcp_inbound_open(client, cport, gport, 0.0)
    assert fid is not None
    syn = _syn(s)
    src = syn[IP].src
    s.receive_frame(wire(s, from_guest(src, gport, syn[TCP].sport, flags="SA", seq=9000,
                                       ack=syn[TCP].seq + 1, window=65535,
                                       options=[("MSS", 1460), ("WScale", 7)])), 0.01)
    return fid, syn


def test_inbound_syn_comes_from_the_clients_own_address_and_port():
    s = make_stack()
    fid = s.tcp_inbound_open(CLIENT, 5555, 80, 0.0)
    syn = _syn(s)
    assert syn[IP].src == CLIENT and syn[IP].dst == GUEST
    assert syn[Ether].src == GW_MAC and syn[Ether].dst == GUEST_MAC
    assert syn[TCP].sport == 5555 and syn[TCP].dport == 80 and syn[TCP].flags == "S"
    opts = dict(syn[TCP].options)
    assert opts["MSS"] == 65520 - 40 and "WScale" in opts
    assert s.half_open == 1 and events(s) == []
    # the guest answers through its default route; the flow is established, data flows both ways
    s.receive_frame(wire(s, from_guest(CLIENT, 80, 5555, flags="SA", seq=9000, ack=syn[TCP].seq + 1,
                                       window=65535, options=[("MSS", 1460)])), 0.01)
    [(_, ack)] = out_frames(s, 0.01)
    assert ack[TCP].flags == "A" and ack[TCP].ack == 9001
    assert s.half_open == 0 and s.counters["tcp.flows.established"] == 1
    s.tcp_host_data(fid, b"GET / HTTP/1.0\r\n\r\n", 0.02)
    [(_, data)] = out_frames(s, 0.02)
    assert bytes(data[TCP].payload) == b"GET / HTTP/1.0\r\n\r\n" and data[IP].src == CLIENT
    s.receive_frame(wire(s, from_guest(CLIENT, 80, 5555, flags="PA", seq=9001, ack=data[TCP].seq + 18,
                                       window=65535) / b"200 OK"), 0.03)
    out_frames(s, 0.03)
    evs = events(s)
    assert [type(e) for e in evs] == [st.TcpDataReceived] and evs[0].flow_id == fid
    assert bytes(evs[0].data) == b"200 OK"
    assert s.flows()[0].inbound and s.counters["tcp.inbound.opened"] == 1


def test_remembered_inbound_sources_are_bounded():
    s = make_stack()
    for i in range(fwd.INBOUND_SRC_CACHE + 10):
        assert s.inbound_source(f"198.51.{i >> 8}.{i & 255}") == bytes([198, 51, i >> 8, i & 255])
        assert len(s.fwd._inbound_src) <= fwd.INBOUND_SRC_CACHE


def test_clients_the_guest_cannot_route_to_appear_as_the_gateway():
    s = make_stack()
    for client in ("127.0.0.1", "::1", "10.0.2.50", "0.0.0.0", "224.0.0.9", "fe80::1%lo"):
        assert s.inbound_source(client) == bytes([10, 0, 2, 2]), client
    assert s.inbound_source("::ffff:203.0.113.9") == bytes([203, 0, 113, 9])
    assert s.inbound_source(CLIENT) == bytes([198, 51, 100, 7])
    # asked again (now from the remembered answers), the same
    for client in ("127.0.0.1", "::1", "10.0.2.50", "0.0.0.0", "224.0.0.9", "fe80::1%lo"):
        assert s.inbound_source(client) == bytes([10, 0, 2, 2]), client
    assert s.inbound_source(CLIENT) == bytes([198, 51, 100, 7])
    s.tcp_inbound_open("127.0.0.1", 41000, 80, 0.0)
    syn = _syn(s)
    assert syn[IP].src == GW and syn[TCP].sport == 41000
    assert s.counters["tcp.inbound.via_gateway"] == 1


def test_guest_rst_resets_the_host_client_at_once():
    s = make_stack()
    fid = s.tcp_inbound_open(CLIENT, 5555, 81, 0.0)
    syn = _syn(s)
    s.receive_frame(wire(s, from_guest(CLIENT, 81, 5555, flags="RA", seq=0, ack=syn[TCP].seq + 1)), 0.001)
    out_frames(s, 0.001)
    assert events(s) == [st.TcpFlowClosed(fid, True)]
    assert s.flows() == [] and s.half_open == 0
    assert s.next_deadline() is None


def test_guest_that_never_answers_is_given_up_after_the_inbound_timeout():
    s = make_stack(limits=Limits(tcp_inbound_timeout=5.0))
    fid = s.tcp_inbound_open(CLIENT, 5555, 80, 0.0)
    _syn(s)
    now = 0.0
    retransmits = 0
    while events(s) == [] and now < 10.0:
        now = s.next_deadline()
        assert now is not None
        s.handle_timer(now)
        frames = out_frames(s, now)
        retransmits += sum(1 for _, f in frames if TCP in f and f[TCP].flags == "S")
        for ev in events(s):
            assert ev == st.TcpFlowClosed(fid, True)
            break
        else:
            continue
        break
    assert now == 5.0 and retransmits >= 2
    assert s.counters["tcp.inbound.timeout"] == 1 and s.flows() == [] and s.half_open == 0


def test_established_inbound_flow_has_no_give_up_deadline():
    s = make_stack(limits=Limits(tcp_inbound_timeout=5.0))
    _establish(s)
    out_frames(s, 0.01)
    s.handle_timer(6.0)
    assert events(s) == [] and len(s.flows()) == 1


def test_inbound_cannot_collide_with_a_guest_flow_on_the_same_4_tuple():
    s = make_stack()
    # the guest itself connected from its port 80 to CLIENT:5555 (outbound)
    s.receive_frame(wire(s, from_guest(CLIENT, 80, 5555, flags="S", seq=1)), 0.0)
    [ev] = events(s)
    assert isinstance(ev, st.TcpConnectRequested)
    assert s.tcp_inbound_open(CLIENT, 5555, 80, 0.0) is None
    assert s.counters["tcp.inbound.drop.tuple_in_use"] == 1
    # a loopback client with that port appears as the gateway: it gets another gateway port
    s.receive_frame(wire(s, from_guest(GW, 80, 6000, flags="S", seq=1)), 0.0)   # refused: no loopback
    out_frames(s)
    s2 = make_stack(allow_host_loopback=True)
    s2.receive_frame(wire(s2, from_guest(GW, 80, 6000, flags="S", seq=1)), 0.0)
    events(s2)
    fid = s2.tcp_inbound_open("127.0.0.1", 6000, 80, 0.0)
    assert fid is not None
    syn = _syn(s2)
    assert syn[IP].src == GW and syn[TCP].sport != 6000
    assert s2.counters["tcp.inbound.port_remapped"] >= 1


def test_two_inbound_flows_from_one_client_port_to_different_guest_ports_coexist():
    s = make_stack()
    a = s.tcp_inbound_open(CLIENT, 5555, 80, 0.0)
    b = s.tcp_inbound_open(CLIENT, 5555, 81, 0.0)
    assert a is not None and b is not None and a != b
    assert sorted(f[TCP].dport for _, f in out_frames(s)) == [80, 81]


def test_inbound_waits_for_the_guest_mac_and_arps_for_it():
    s = make_stack(mac=False)
    s.probe_guest(0.0)
    [(_, req)] = out_frames(s)
    assert req[ARP].op == 1 and req[ARP].pdst == GUEST and req[ARP].psrc == GW
    assert req[Ether].dst == "ff:ff:ff:ff:ff:ff"
    fid = s.tcp_inbound_open(CLIENT, 5555, 80, 0.1)
    assert out_frames(s, 0.1) == []               # ARP rate-limited, SYN held
    s.receive_frame(wire(s, Ether(src=GUEST_MAC, dst=GW_MAC) /
                         ARP(op=2, hwsrc=GUEST_MAC, psrc=GUEST, hwdst=GW_MAC, pdst=GW)), 0.2)
    syn = _syn(s, 0.2)
    assert syn[TCP].flags == "S" and syn[Ether].dst == GUEST_MAC and syn[IP].src == CLIENT
    assert s.flows()[0].flow_id == fid
    # UDP datagrams are held too, and delivered once the MAC is known
    s3 = make_stack(mac=False)
    ufid = s3.udp_inbound_open(CLIENT, 7000, 53, 0.0)
    s3.udp_host_datagram(ufid, b"query", 0.0)
    [(_, req)] = out_frames(s3)
    assert ARP in req
    s3.receive_frame(wire(s3, Ether(src=GUEST_MAC, dst=GW_MAC) /
                          ARP(op=1, hwsrc=GUEST_MAC, psrc=GUEST, pdst=GW)), 0.1)
    frames = [f for _, f in out_frames(s3, 0.1) if UDP in f]
    assert len(frames) == 1 and bytes(frames[0][UDP].payload) == b"query"


def test_host_client_gone_before_the_guest_mac_is_known_closes_the_flow():
    s = make_stack(mac=False)
    fid = s.tcp_inbound_open(CLIENT, 5555, 80, 0.0)
    out_frames(s)
    s.tcp_host_reset(fid, 0.1)
    out_frames(s, 0.1)
    assert [e.flow_id for e in events(s) if isinstance(e, st.TcpFlowClosed)] == [fid]
    assert s.flows() == [] and s.half_open == 0


def test_inbound_udp_flow_keeps_the_client_address_and_replies_map_back():
    s = make_stack()
    fid = s.udp_inbound_open(CLIENT, 7000, 53, 0.0)
    s.udp_host_datagram(fid, b"ping", 0.0)
    [(_, d)] = out_frames(s)
    assert d[IP].src == CLIENT and d[IP].dst == GUEST and d[UDP].sport == 7000 and d[UDP].dport == 53
    assert bytes(d[UDP].payload) == b"ping"
    s.receive_frame(wire(s, Ether(src=GUEST_MAC, dst=GW_MAC) / IP(src=GUEST, dst=CLIENT) /
                         UDP(sport=53, dport=7000) / b"pong"), 0.1)
    evs = events(s)
    assert [type(e) for e in evs] == [st.UdpDatagramReceived]
    assert evs[0].flow_id == fid and bytes(evs[0].data) == b"pong"
    assert s.udp_flows()[0].inbound
    # a second client is its own flow; loopback clients appear as the gateway
    fid2 = s.udp_inbound_open("127.0.0.1", 7000, 53, 0.2)
    s.udp_host_datagram(fid2, b"x", 0.2)
    [(_, d2)] = out_frames(s, 0.2)
    assert fid2 != fid and d2[IP].src == GW and d2[UDP].sport == 7000
    # idle expiry as for outbound UDP
    s.handle_timer(1000.0)
    assert sorted(e.flow_id for e in events(s) if isinstance(e, st.UdpFlowClosed)) == [fid, fid2]
    assert s.udp_flows() == []


def test_inbound_udp_does_not_take_a_guest_flows_4_tuple():
    s = make_stack()
    s.receive_frame(wire(s, Ether(src=GUEST_MAC, dst=GW_MAC) / IP(src=GUEST, dst=CLIENT) /
                         UDP(sport=53, dport=7000) / b"out"), 0.0)
    assert [type(e) for e in events(s)] == [st.UdpFlowOpened, st.UdpDatagramReceived]
    assert s.udp_inbound_open(CLIENT, 7000, 53, 0.0) is None
    assert s.counters["udp.inbound.drop.tuple_in_use"] == 1


def test_inbound_respects_the_flow_limits():
    s = make_stack(limits=Limits(max_half_open=2))
    assert s.tcp_inbound_open(CLIENT, 1, 80, 0.0) is not None
    assert s.tcp_inbound_open(CLIENT, 2, 80, 0.0) is not None
    assert s.tcp_inbound_open(CLIENT, 3, 80, 0.0) is None
    assert s.counters["tcp.inbound.drop.half_open_limit"] == 1


def test_a_client_reusing_a_time_wait_tuple_replaces_the_old_flow():
    """Loopback clients all appear as the gateway with their own port, so a second client on
    the same port meets the first one's TIME-WAIT flow, whose host socket was closed when it
    went into TIME-WAIT (issue 13 was one leaked fd per reuse)."""
    s = make_stack()
    fid, syn = _establish(s, cport=5555)
    out_frames(s, 0.01)
    s.tcp_host_eof(fid, 0.02)                       # the client closes first
    [(_, fin)] = out_frames(s, 0.02)
    assert fin[TCP].flags.F
    s.receive_frame(wire(s, from_guest(fin[IP].src, 80, 5555, flags="FA", seq=9001,
                                       ack=fin[TCP].seq + 1)), 0.03)
    out_frames(s, 0.03)
    assert events(s) == [st.TcpEofReceived(fid), st.TcpFlowClosed(fid, False)]
    assert s.flows()[0].conn.state.name == "TIME_WAIT"
    new = s.tcp_inbound_open(CLIENT, 5555, 80, 0.5)
    assert new is not None and new != fid
    assert events(s) == []
    assert s.counters["tcp.time_wait.reused"] == 1
    assert [f.flow_id for f in s.flows()] == [new]
