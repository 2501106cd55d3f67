"""The UDP receive fast path (iface/fastpath.py `_receive_udp`, wire/udp4frame.py) against the
general path (Link -> Ipv4Input -> UdpHandler.receive).

As tests/unit/test_tcp_predict.py does for TCP: two stacks made alike get the same frames,
`fast` as the Stack wires it and `slow` with `Link.receive_frame` only; after every frame both
must have emitted the same frames and events and hold the same counters, UDP flow records
(field by field) and flow-table order (the LRU that eviction follows). A spy counts the frames
the fast path handed to the general path: a qualifying datagram must not be, the others must.
"""

from __future__ import annotations

import random
import struct
from typing import Any

import pytest

from slirpy.config import NetConfig
from slirpy.tcpip import stack as st
from slirpy.tcpip.checksum import finish, pseudo_header_sum, sum16
from slirpy.tcpip.wire.ipv4 import build_header as ip_header
from slirpy.tcpip.wire.virtio import F_DATA_VALID, F_NEEDS_CSUM, VNET_HDR_LEN
from tests.unit.test_tcp_predict import flat, snap, spy_on_general_path

GUEST = bytes([10, 0, 2, 100])
REMOTE = bytes([203, 0, 113, 1])
DNS = bytes([10, 0, 2, 3])
GUEST_MAC = bytes.fromhex("020000000064")
OTHER_MAC = bytes.fromhex("020000000065")
GW_MAC = bytes.fromhex("52550a000202")
IP_OFF = VNET_HDR_LEN + 14


def udp_frame(payload: bytes, *, sport: int = 40000, dport: int = 5201, src: bytes = GUEST,
              dst: bytes = REMOTE, vflags: int = F_NEEDS_CSUM, src_mac: bytes = GUEST_MAC,
              ulen: int | None = None, ip: bytes | None = None, trailer: bytes = b"") -> bytes:
    length = 8 + len(payload)
    udp = bytearray(struct.pack("!HHHH", sport, dport, length if ulen is None else ulen, 0) + payload)
    struct.pack_into("!H", udp, 6, finish(sum16(udp, pseudo_header_sum(src, dst, 17, len(udp)))) or 0xFFFF)
    iph = ip if ip is not None else ip_header(src, dst, 17, len(udp))
    return bytes([vflags]) + bytes(VNET_HDR_LEN - 1) + GW_MAC + src_mac + b"\x08\x00" + iph + bytes(udp) + trailer


class Pair:
    def __init__(self, routed: tuple[str, ...] = ()) -> None:
        cfg = NetConfig(mtu=65520)
        self.fast = st.Stack(cfg, vnet_hdr=True, offload=True, rng=random.Random(1))
        self.slow = st.Stack(cfg, vnet_hdr=True, offload=True, rng=random.Random(1))
        for s in (self.fast, self.slow):
            s.set_routed(routed)
        spy_on_general_path(self)
        self.now = 0.0
        self.events: list[Any] = []

    def feed(self, raw: bytes) -> None:
        self.now += 0.001
        self.fast.receive_frame(raw, self.now)
        self.slow.receive_frame(raw, self.now)
        self.check()

    def check(self) -> None:
        out = [flat(f) for f in self.fast.frames_to_send(self.now)]
        assert out == [flat(f) for f in self.slow.frames_to_send(self.now)]
        evs, evs_slow = [], []
        while (ev := self.fast.next_event()) is not None:
            evs.append(ev)
        while (ev := self.slow.next_event()) is not None:
            evs_slow.append(snap(ev))
        assert [snap(e) for e in evs] == evs_slow
        assert dict(self.fast.counters) == dict(self.slow.counters)
        assert [snap(f) for f in self.fast.udp_flows()] == [snap(f) for f in self.slow.udp_flows()]
        assert list(self.fast.table.udp) == list(self.slow.table.udp)
        assert self.fast.next_deadline() == self.slow.next_deadline()
        self.events = evs


def _opened(**kw: Any) -> Pair:
    """A pair with two UDP flows open (the first datagram of each takes the general path)."""
    p = Pair(**kw)
    p.feed(udp_frame(b"first"))
    p.feed(udp_frame(b"other", sport=40001))
    assert p.general == 2
    p.general = 0
    return p


def test_datagrams_of_open_flows_take_the_fast_path_with_identical_results():
    p = _opened()
    for i in range(30):
        p.feed(udp_frame(bytes([i]) * (i * 47 % 1400), sport=40000 + i % 2))
        assert [type(e).__name__ for e in p.events] == ["UdpDatagramReceived"]
    assert p.general == 0
    # the LRU order follows the last datagram
    p.feed(udp_frame(b"x", sport=40000))
    assert list(p.fast.table.udp)[-1][1] == 40000 and p.general == 0


@pytest.mark.parametrize("vflags", [F_NEEDS_CSUM, F_DATA_VALID, F_NEEDS_CSUM | F_DATA_VALID])
def test_every_vouching_virtio_flag_qualifies(vflags):
    p = _opened()
    p.feed(udp_frame(b"data", vflags=vflags))
    assert p.general == 0


def test_ethernet_padding_after_the_packet_is_ignored_alike():
    p = _opened()
    p.feed(udp_frame(b"", trailer=bytes(18)))
    p.feed(udp_frame(b"ab", trailer=b"\xff" * 5))
    assert p.general == 0
    assert [bytes(e.data) for e in p.events] == [b"ab"]


def test_a_member_behind_the_guest_takes_the_fast_path():
    member = bytes([10, 89, 0, 5])
    p = Pair(routed=("10.89.0.0/24",))
    p.feed(udp_frame(b"first", src=member))
    p.general = 0
    p.feed(udp_frame(b"again", src=member))
    p.feed(udp_frame(b"and again", src=member, src_mac=OTHER_MAC))   # no MAC is learned for it
    assert p.general == 0


def _bad_ip_checksum() -> bytes:
    h = bytearray(ip_header(GUEST, REMOTE, 17, 8 + 4))
    h[10] ^= 0x01
    return bytes(h)


def _with_ip(**fields: int) -> bytes:
    """An IPv4 header for a 4-byte payload with one field changed and the checksum redone."""
    vihl, tos, total, ident, frag, ttl, proto = 0x45, 0, 20 + 12, 0, 0x4000, 64, 17
    v = dict(vihl=vihl, tos=tos, total=total, ident=ident, frag=frag, ttl=ttl, proto=proto) | fields
    h = bytearray(struct.pack("!BBHHHBBH4s4s", v["vihl"], v["tos"], v["total"], v["ident"], v["frag"],
                              v["ttl"], v["proto"], 0, GUEST, REMOTE))
    extra = bytes((v["vihl"] & 0xF) * 4 - 20)
    h += extra
    struct.pack_into("!H", h, 10, finish(sum16(h)))
    return bytes(h)


NOT_QUALIFYING = {
    "no vouching virtio flag": dict(vflags=0),
    "an IPv4 header checksum that fails": dict(ip=_bad_ip_checksum()),
    "IPv4 options": dict(ip=_with_ip(vihl=0x46, total=24 + 12)),
    "a fragment (MF)": dict(ip=_with_ip(frag=0x2000)),
    "a fragment (offset)": dict(ip=_with_ip(frag=0x0001)),
    "a total length past the frame": dict(ip=_with_ip(total=20 + 12 + 40)),
    "a total length too short for UDP": dict(ip=_with_ip(total=20 + 6)),
    "a UDP length past the packet": dict(ulen=8 + 4 + 1),
    "a UDP length under its header": dict(ulen=7),
    "a source MAC other than the learned one": dict(src_mac=OTHER_MAC),
    "a flow not yet open": dict(sport=40002),
    "a DNS flow": dict(dst=DNS, dport=53),
    "a source off the network and not routed": dict(src=bytes([192, 0, 2, 7])),
    "a broadcast destination": dict(dst=bytes([255, 255, 255, 255])),
}


@pytest.mark.parametrize("case", sorted(NOT_QUALIFYING))
def test_datagrams_that_do_not_qualify_take_the_general_path(case):
    p = _opened()
    kw = NOT_QUALIFYING[case]
    if case == "a DNS flow":
        dns_query = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x01"
        p.feed(udp_frame(dns_query, **kw))         # opens the DNS flow (general path)
        p.general = 0
        p.feed(udp_frame(dns_query, **kw))
    else:
        p.feed(udp_frame(b"data", **kw))
    assert p.general == 1, case


def test_tcp_ipv6_and_arp_frames_are_not_taken_here():
    p = _opened()
    tcp = udp_frame(b"data")
    tcp = tcp[:IP_OFF + 9] + b"\x06" + tcp[IP_OFF + 10:]       # protocol TCP: tcp4frame's shape
    p.feed(tcp)
    assert p.general == 1


def test_mangled_frames_never_raise_and_both_paths_agree():
    p = _opened()
    rng = random.Random(7)
    base = udp_frame(b"payload!" * 8)
    for i in range(600):
        b = bytearray(base)
        for _ in range(rng.randint(1, 4)):
            pos = rng.randrange(len(b))
            if pos < VNET_HDR_LEN and rng.random() < 0.7:
                continue                       # keep the virtio flags mostly intact
            b[pos] = rng.randrange(256)
        if rng.random() < 0.2:
            b = b[:rng.randrange(len(b))]
        p.feed(bytes(b))
    assert p.general > 0
