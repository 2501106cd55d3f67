"""DHCPv4: the wire module (parse what scapy's DHCP layer builds, build what scapy reads back)
and the server at the gateway through a real `Stack` (lease pool network+15..+30 as libslirp,
bounded table, expiry, NAK, INFORM, RELEASE, counters, malformed requests dropped)."""

from __future__ import annotations

import pytest
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from slirpy.tcpip.errors import MalformedPacket
from slirpy.tcpip.iface import dhcp as server
from slirpy.tcpip.wire import dhcp as wd
from tests.unit.test_stack_udp import GW_MAC, events, make_stack, out, udp_checksum_ok, wire

MAC = "02:00:00:00:00:99"
MAC_B = bytes.fromhex("020000000099")
GW4 = bytes([10, 0, 2, 2])


def dhcp_pkt(msg_type, mac=MAC, xid=0x1234, src="0.0.0.0", dst="255.255.255.255", flags=0,
             ciaddr="0.0.0.0", opts=(), sport=68, dport=67):
    return (Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / IP(src=src, dst=dst) / UDP(sport=sport, dport=dport)
            / BOOTP(chaddr=bytes.fromhex(mac.replace(":", "")), xid=xid, flags=flags, ciaddr=ciaddr)
            / DHCP(options=[("message-type", msg_type), *opts, "end"]))


def replies(s, now=0.0):
    res = []
    for _, raw in out(s, now):
        p = Ether(raw)
        assert udp_checksum_ok(bytes(p[IP]))
        opts = {o[0]: o[1:] if len(o) > 2 else o[1] for o in p[DHCP].options if isinstance(o, tuple)}
        res.append((p, opts))
    return res


# ------------------------------------------------------------------ wire

def test_parse_what_scapy_builds():
    raw = bytes(BOOTP(chaddr=MAC_B, xid=7, flags=0x8000, ciaddr="10.0.2.20")
                / DHCP(options=[("message-type", "request"), ("requested_addr", "10.0.2.17"),
                                ("server_id", "10.0.2.2"), ("hostname", b"box"), "pad", "end"]))
    req = wd.DhcpRequest.parse(memoryview(raw))
    assert (req.msg_type, req.xid, req.broadcast, req.mac) == (wd.REQUEST, 7, True, MAC_B)
    assert req.ciaddr == bytes([10, 0, 2, 20]) and req.requested_ip == bytes([10, 0, 2, 17])
    assert req.server_id == GW4


def test_build_reply_is_what_scapy_reads():
    req = wd.DhcpRequest.parse(wd.build_request(wd.DISCOVER, 99, MAC_B))
    raw = wd.build_reply(wd.OFFER, req, bytes([10, 0, 2, 15]), GW4, bytes([255, 255, 255, 0]),
                         GW4, bytes([10, 0, 2, 3]), 86400)
    p = BOOTP(raw)
    assert (p.op, p.xid, p.yiaddr, p.chaddr[:6]) == (2, 99, "10.0.2.15", MAC_B)
    opts = dict(o for o in p[DHCP].options if isinstance(o, tuple))
    assert opts == {"message-type": 2, "server_id": "10.0.2.2", "lease_time": 86400,
                    "subnet_mask": "255.255.255.0", "router": "10.0.2.2", "name_server": "10.0.2.3"}
    nak = dict(o for o in BOOTP(wd.build_reply(wd.NAK, req, bytes(4), GW4))[DHCP].options
               if isinstance(o, tuple))
    assert nak == {"message-type": 6, "server_id": "10.0.2.2"}


@pytest.mark.parametrize("mutate, reason", [
    (lambda b: b[:239], "dhcp.short"),
    (lambda b: b"\x02" + b[1:], "dhcp.not_request"),
    (lambda b: b[:1] + b"\x06" + b[2:], "dhcp.bad_hw"),
    (lambda b: b[:2] + b"\x08" + b[3:], "dhcp.bad_hw"),
    (lambda b: b[:236] + b"\x00\x00\x00\x00" + b[240:], "dhcp.bad_cookie"),
    (lambda b: b[:240] + b"\x35\x05\x01", "dhcp.bad_option"),            # runs past the end
    (lambda b: b[:240] + b"\x35", "dhcp.bad_option"),                    # no length byte
    (lambda b: b[:240] + b"\x0c\x01x\xff", "dhcp.no_type"),
    (lambda b: b[:240] + b"\x35\x01\x02\xff", "dhcp.bad_type"),          # an OFFER from a client
    (lambda b: b[:240] + b"\x35\x01\x01\x32\x03abc\xff", "dhcp.bad_option"),
])
def test_malformed_requests(mutate, reason):
    good = wd.build_request(wd.DISCOVER, 1, MAC_B)
    wd.DhcpRequest.parse(good)
    with pytest.raises(MalformedPacket) as info:
        wd.DhcpRequest.parse(mutate(good))
    assert info.value.reason == reason


# ------------------------------------------------------------------ server through the Stack

def test_discover_request_gets_network_plus_15_router_dns_and_becomes_the_guest():
    s = make_stack()
    s.receive_frame(wire(s, dhcp_pkt("discover")), 0.0)
    [(offer, o)] = replies(s)
    assert o["message-type"] == 2 and offer[BOOTP].yiaddr == "10.0.2.15"
    assert (o["router"], o["name_server"], o["subnet_mask"]) == ("10.0.2.2", "10.0.2.3", "255.255.255.0")
    assert o["server_id"] == "10.0.2.2" and o["lease_time"] == server.LEASE_TIME
    # no broadcast flag: to the offered address at the client's MAC, from the gateway
    assert (offer[Ether].dst, offer[Ether].src) == (MAC, GW_MAC)
    assert (offer[IP].src, offer[IP].dst, offer[UDP].sport, offer[UDP].dport) == ("10.0.2.2", "10.0.2.15", 67, 68)
    s.receive_frame(wire(s, dhcp_pkt("request", opts=[("requested_addr", "10.0.2.15"),
                                                      ("server_id", "10.0.2.2")])), 1.0)
    [(ack, o)] = replies(s)
    assert o["message-type"] == 5 and ack[BOOTP].yiaddr == "10.0.2.15"
    assert s.link.guest_mac == MAC_B and events(s) == []
    c = s.counters
    assert (c["dhcp.rx.discover"], c["dhcp.tx.offer"], c["dhcp.rx.request"], c["dhcp.tx.ack"]) == (1, 1, 1, 1)
    assert c["ipv4.rx.drop.bad_src"] == 0 and not any(k.startswith("udp.") for k in c)


def test_broadcast_flag_and_renewal_from_the_leased_address_to_the_gateway():
    s = make_stack()
    s.receive_frame(wire(s, dhcp_pkt("discover", flags=0x8000)), 0.0)
    [(offer, _)] = replies(s)
    assert (offer[Ether].dst, offer[IP].dst) == ("ff:ff:ff:ff:ff:ff", "255.255.255.255")
    s.receive_frame(wire(s, dhcp_pkt("request", opts=[("requested_addr", "10.0.2.15")])), 0.0)
    assert replies(s)[0][1]["message-type"] == 5
    # RENEWING: unicast from its address to the gateway, ciaddr set, no option 50: a UDP
    # datagram from inside the network, decided by fwd.py at the flow check; no flow made.
    s.receive_frame(wire(s, dhcp_pkt("request", src="10.0.2.15", dst="10.0.2.2", ciaddr="10.0.2.15")), 100.0)
    [(ack, o)] = replies(s, 100.0)
    assert o["message-type"] == 5 and (ack[IP].dst, ack[BOOTP].ciaddr) == ("10.0.2.15", "10.0.2.15")
    assert s.udp_flows() == [] and events(s) == []


def test_requested_address_is_honoured_when_free_and_nak_outside_the_pool():
    s = make_stack()
    s.receive_frame(wire(s, dhcp_pkt("discover", opts=[("requested_addr", "10.0.2.22")])), 0.0)
    assert replies(s)[0][0][BOOTP].yiaddr == "10.0.2.22"
    s.receive_frame(wire(s, dhcp_pkt("request", opts=[("requested_addr", "10.0.2.100")])), 0.0)
    [(nak, o)] = replies(s)
    assert o["message-type"] == 6 and nak[IP].dst == "255.255.255.255" and s.counters["dhcp.tx.nak"] == 1


def test_pool_is_16_addresses_bounded_and_expired_offers_are_reclaimed():
    s = make_stack()
    got = []
    for i in range(17):
        mac = f"02:00:00:00:01:{i:02x}"
        s.receive_frame(wire(s, dhcp_pkt("discover", mac=mac)), 0.0)
        got += [p[BOOTP].yiaddr for p, _ in replies(s)]
    assert got == [f"10.0.2.{n}" for n in range(15, 31)]         # the 17th got nothing
    assert s.counters["dhcp.rx.drop.pool_full"] == 1 and len(s.dhcp.leases) == server.POOL_SIZE
    # Offers not taken up expire; a new client then gets one of their addresses.
    later = server.OFFER_HOLD + 1
    s.receive_frame(wire(s, dhcp_pkt("discover", mac="02:00:00:00:02:00")), later)
    [(offer, _)] = replies(s, later)
    assert offer[BOOTP].yiaddr == "10.0.2.15" and len(s.dhcp.leases) == 1     # all 16 expired


def test_an_address_leased_to_another_client_is_nak_and_release_frees_it():
    s = make_stack()
    other = "02:00:00:00:00:aa"
    s.receive_frame(wire(s, dhcp_pkt("request", mac=other, opts=[("requested_addr", "10.0.2.15")])), 0.0)
    assert replies(s)[0][1]["message-type"] == 5
    s.receive_frame(wire(s, dhcp_pkt("request", opts=[("requested_addr", "10.0.2.15")])), 1.0)
    assert replies(s, 1.0)[0][1]["message-type"] == 6
    s.receive_frame(wire(s, dhcp_pkt("release", mac=other, src="10.0.2.15", dst="10.0.2.2",
                                     ciaddr="10.0.2.15")), 2.0)
    assert replies(s, 2.0) == [] and s.counters["dhcp.rx.release"] == 1
    s.receive_frame(wire(s, dhcp_pkt("request", opts=[("requested_addr", "10.0.2.15")])), 3.0)
    assert replies(s, 3.0)[0][1]["message-type"] == 5


def test_inform_gets_options_without_an_address_or_lease():
    s = make_stack()
    s.receive_frame(wire(s, dhcp_pkt("inform", src="10.0.2.100", dst="10.0.2.2", ciaddr="10.0.2.100")), 0.0)
    [(ack, o)] = replies(s)
    assert o["message-type"] == 5 and ack[BOOTP].yiaddr == "0.0.0.0" and "lease_time" not in o
    assert ack[IP].dst == "10.0.2.100" and o["router"] == "10.0.2.2" and s.dhcp.leases == {}


def test_request_for_another_server_is_dropped_and_no_dns_option_with_dns_disabled():
    s = make_stack(dns_enabled=False)
    s.receive_frame(wire(s, dhcp_pkt("discover")), 0.0)
    assert "name_server" not in replies(s)[0][1]
    s.receive_frame(wire(s, dhcp_pkt("request", opts=[("requested_addr", "10.0.2.15"),
                                                      ("server_id", "10.0.2.9")])), 0.0)
    assert replies(s) == [] and s.counters["dhcp.rx.drop.other_server"] == 1 and s.dhcp.leases == {}


@pytest.mark.parametrize("raw, counter", [
    (b"\x01" * 100, "dhcp.rx.drop.short"),
    (bytes(BOOTP(op=2, chaddr=MAC_B) / DHCP(options=[("message-type", "discover"), "end"])),
     "dhcp.rx.drop.not_request"),
    (bytes(BOOTP(chaddr=MAC_B) / DHCP(options=[("message-type", "offer"), "end"])), "dhcp.rx.drop.bad_type"),
    (bytes(BOOTP(chaddr=b"\xff" * 6) / DHCP(options=[("message-type", "discover"), "end"])),
     "dhcp.rx.drop.bad_mac"),
])
def test_malformed_requests_are_counted_and_dropped(raw, counter):
    s = make_stack()
    pkt = Ether(src=MAC, dst="ff:ff:ff:ff:ff:ff") / IP(src="0.0.0.0", dst="255.255.255.255") / UDP(sport=68, dport=67) / raw
    s.receive_frame(wire(s, pkt), 0.0)
    assert out(s) == [] and s.counters[counter] == 1 and s.dhcp.leases == {}


def test_other_udp_from_0_0_0_0_is_still_bad_src_and_makes_no_flow():
    s = make_stack()
    s.receive_frame(wire(s, dhcp_pkt("discover", dport=53, dst="10.0.2.3")), 0.0)
    s.receive_frame(wire(s, dhcp_pkt("discover", dst="203.0.113.1")), 0.0)
    assert out(s) == [] and events(s) == [] and s.counters["ipv4.rx.drop.bad_src"] == 2
    assert s.counters["dhcp.rx.discover"] == 0
