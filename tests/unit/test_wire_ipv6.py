"""IPv6 header and extension-header walk: golden bytes, scapy cross-checks, every refusal,
truncations at every offset, round trips; TCP and UDP checksums over IPv6."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings, strategies as st
from scapy.layers.inet import TCP, UDP
from scapy.layers.inet6 import (
    HBHOptUnknown, ICMPv6EchoRequest, IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop, IPv6ExtHdrRouting, PadN, RouterAlert,
)

from slirpy.tcpip.errors import MalformedPacket
from slirpy.tcpip.wire import ipv6
from slirpy.tcpip.wire.ipv6 import Ipv6Header, build_header, parse_fields
from slirpy.tcpip.wire.tcp import ACK, PSH, SYN, TcpOptions, TcpSegment
from slirpy.tcpip.wire.udp import UdpHeader, build_datagram

SETTINGS = settings(database=None, deadline=None)


def a6(text: str) -> bytes:
    return ipaddress.IPv6Address(text).packed


GUEST = a6("fd00::100")
GW = a6("fd00::2")
FAR = a6("2001:db8::1")

# scapy 2.6: IPv6(fd00::100 -> fd00::2)/ICMPv6EchoRequest(id=0x1c2b, seq=1, data=bytes(range(56)))
ECHO6 = bytes.fromhex(
    "6000000000403a40fd000000000000000000000000000100fd000000000000000000000000000002800071421c2b"
    "0001000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b"
    "2c2d2e2f3031323334353637")
# scapy: IPv6(fd00::100 -> 2001:db8::1, tc=0xb8, fl=0x12345, hlim=3)/HopByHop(RouterAlert)
#        /DestOpt(PadN 4)/Routing(segleft=0)/UDP(5353 -> 53)/"slirpy"
CHAIN = bytes.fromhex(
    "6b81234500260003fd00000000000000000000000000010020010db80000000000000000000000013c0005020000"
    "01002b00010400000000110000000000000014e90035000e71a1736c69727079")


def test_golden_echo():
    assert parse_fields(memoryview(ECHO6)) == (ipv6.PROTO_ICMPV6, 40, 104, 64, GUEST, GW)
    h = Ipv6Header.parse(ECHO6)
    assert h == Ipv6Header(0, 0, 64, ipv6.PROTO_ICMPV6, 64, GUEST, GW, 40)
    assert h.end == len(ECHO6) and h.pack() == ECHO6[:40]
    assert build_header(GUEST, GW, ipv6.PROTO_ICMPV6, 64) == ECHO6[:40]


def test_golden_chain():
    assert parse_fields(memoryview(CHAIN)) == (ipv6.PROTO_UDP, 64, 78, 3, GUEST, FAR)
    h = Ipv6Header.parse(CHAIN)
    assert (h.traffic_class, h.flow_label, h.payload_length, h.next_header, h.hop_limit) == \
        (0xB8, 0x12345, 38, ipv6.PROTO_UDP, 3)
    assert h.ext_types == (ipv6.PROTO_HOPOPTS, ipv6.PROTO_DSTOPTS, ipv6.PROTO_ROUTING)
    assert h.pack() == CHAIN[:64]
    u = UdpHeader.parse(memoryview(CHAIN)[64:], GUEST, FAR, verify_checksum=True)
    assert (u.src_port, u.dst_port, u.length) == (5353, 53, 14)
    # build_header sends flow label 0 (the golden one has 0x12345)
    assert build_header(GUEST, FAR, ipv6.PROTO_HOPOPTS, 38, 3, 0xB8) == \
        bytes.fromhex("6b800000") + CHAIN[4:40]


def test_link_padding_after_payload_is_ignored():
    buf = ECHO6 + b"\xaa" * 9
    assert parse_fields(memoryview(buf))[2] == len(ECHO6)
    assert Ipv6Header.parse(buf).end == len(ECHO6)


def test_build_header_fields_and_limits():
    raw = build_header(GUEST, FAR, 17, 0xFFFF, hop_limit=255, traffic_class=0x2E)
    assert raw[:8] == bytes.fromhex("62e00000ffff11ff")
    with pytest.raises(ValueError):
        build_header(GUEST, FAR, 17, 0x10000)
    with pytest.raises(ValueError):
        build_header(GUEST, FAR, 17, -1)
    with pytest.raises(ValueError):
        build_header(GUEST[:4], GW[:4], 17, 8)


def test_pack_rejects_inconsistent_extension_headers():
    good = Ipv6Header.parse(CHAIN)
    for kw in ({"l4_offset": 40}, {"ext_headers": good.ext_headers[:-1]}, {"ext_types": ()}):
        fields = {f: getattr(good, f) for f in good.__dataclass_fields__} | kw
        with pytest.raises(ValueError):
            Ipv6Header(**fields).pack()


# ------------------------------------------------------------------ scapy-built chains

def _chains():
    udp = UDP(sport=1, dport=2) / b"xxx"
    tcp = TCP(sport=3, dport=4, flags="S", options=[("MSS", 1440)])
    echo = ICMPv6EchoRequest(id=1, seq=2)
    big_pad = IPv6ExtHdrDestOpt(options=[PadN(optdata=bytes(200))])
    return [
        ("plain udp", udp, 17),
        ("hbh", IPv6ExtHdrHopByHop() / tcp, 6),
        ("hbh router alert", IPv6ExtHdrHopByHop(options=[RouterAlert()]) / echo, 58),
        ("dst", IPv6ExtHdrDestOpt() / udp, 17),
        ("dst rt dst", IPv6ExtHdrDestOpt() / IPv6ExtHdrRouting(segleft=0) / IPv6ExtHdrDestOpt() / tcp, 6),
        ("rt with spent addresses", IPv6ExtHdrRouting(addresses=[FAR_T, GW_T], segleft=0) / udp, 17),
        ("big padding", IPv6ExtHdrHopByHop() / big_pad / echo, 58),
        ("skip-action unknown option", IPv6ExtHdrDestOpt(options=[HBHOptUnknown(otype=0x1E, optdata=b"ab")])
         / udp, 17),
        ("eight headers", _n_dstopts(8) / udp, 17),
        ("fragment", IPv6ExtHdrFragment(id=7, m=1) / udp, 44),
        ("hbh then fragment", IPv6ExtHdrHopByHop() / IPv6ExtHdrFragment(offset=5) / (b"z" * 8), 44),
        ("no next header", IPv6ExtHdrDestOpt(nh=59), 59),
        ("unknown upper layer", IPv6ExtHdrDestOpt(nh=132) / b"sctp", 132),
    ]


FAR_T, GW_T = "2001:db8::1", "fd00::2"


def _n_dstopts(n: int):
    p = IPv6ExtHdrDestOpt()
    for _ in range(n - 1):
        p = p / IPv6ExtHdrDestOpt()
    return p


WALKED = (IPv6ExtHdrHopByHop, IPv6ExtHdrDestOpt, IPv6ExtHdrRouting)


def _built(payload) -> tuple[bytes, bytes, int]:
    """The scapy packet's bytes, its upper-layer part (what follows the hop-by-hop, routing
    and destination-options headers) and how many of those headers precede it."""
    raw = bytes(IPv6(src="fd00::100", dst=FAR_T, hlim=9) / payload)
    layer, walked = payload, 0
    while isinstance(layer, WALKED):
        layer, walked = layer.payload, walked + 1
    return raw, bytes(layer), walked


@pytest.mark.parametrize("name,payload,proto", _chains(), ids=[c[0] for c in _chains()])
def test_scapy_chains(name, payload, proto):
    raw, upper, walked = _built(payload)
    got = parse_fields(memoryview(raw))
    assert got == (proto, len(raw) - len(upper), len(raw), 9, GUEST, FAR)
    h = Ipv6Header.parse(raw)
    assert h.pack() == raw[:h.l4_offset] and h.next_header == proto
    assert len(h.ext_types) == walked and list(h.ext_types[:1]) == list(raw[6:7]) * bool(walked)
    if proto == 6:
        seg = TcpSegment.parse(memoryview(raw)[h.l4_offset:], GUEST, FAR, verify_checksum=True)
        assert (seg.src_port, seg.flags, seg.options.mss) == (3, SYN, 1440)
    if proto == 17:
        u = UdpHeader.parse(memoryview(raw)[h.l4_offset:], GUEST, FAR, verify_checksum=True)
        assert (u.src_port, u.dst_port, u.length) == (1, 2, 11)


def _reason(buf: bytes) -> str:
    with pytest.raises(MalformedPacket) as e:
        parse_fields(memoryview(buf))
    with pytest.raises(MalformedPacket):
        Ipv6Header.parse(buf)
    return e.value.reason


def test_routing_header_with_segments_left_is_refused():
    raw, *_ = _built(IPv6ExtHdrRouting(addresses=[GW_T]) / UDP())
    assert raw[40 + 3] == 1
    assert _reason(raw) == "ipv6.routing"


def test_nine_headers_are_too_many():
    assert _reason(_built(_n_dstopts(9) / UDP())[0]) == "ipv6.ext_chain"


def test_hop_by_hop_only_first():
    assert _reason(_built(IPv6ExtHdrDestOpt() / IPv6ExtHdrHopByHop() / UDP())[0]) == "ipv6.ext_chain"
    assert _reason(_built(IPv6ExtHdrHopByHop() / IPv6ExtHdrHopByHop() / UDP())[0]) == "ipv6.ext_chain"


@pytest.mark.parametrize("otype", [0x40, 0x80, 0xC2, 0x63, 0xC9])
def test_unknown_option_asking_to_discard(otype):
    for hdr in (IPv6ExtHdrHopByHop, IPv6ExtHdrDestOpt):
        raw, *_ = _built(hdr(options=[HBHOptUnknown(otype=otype, optdata=b"\0\0\0\0")]) / UDP())
        assert _reason(raw) == "ipv6.ext_option"


def test_option_running_past_its_header():
    raw = bytearray(_built(IPv6ExtHdrDestOpt(options=[PadN(optdata=b"\0\0\0\0")]) / UDP())[0])
    assert raw[42:44] == b"\x01\x04"
    raw[43] = 5                                      # PadN of 5 data bytes: one past the header
    assert _reason(bytes(raw)) == "ipv6.ext_option"
    raw[42:48] = b"\x00\x00\x00\x00\x00\x01"         # Pad1 x5, then a type byte with no length
    assert _reason(bytes(raw)) == "ipv6.ext_option"
    raw[42:48] = bytes(6)                            # Pad1 x6: fine
    assert parse_fields(memoryview(bytes(raw)))[:2] == (17, 48)


@pytest.mark.parametrize("n", range(40))
def test_truncated_fixed_header(n):
    assert _reason(ECHO6[:n]) == "ipv6.truncated"


@pytest.mark.parametrize("first", [0x00, 0x40, 0x70, 0xF0, 0x46])
def test_bad_version(first):
    assert _reason(bytes((first,)) + ECHO6[1:]) == "ipv6.bad_version"


@pytest.mark.parametrize("plen", [0, 65, 0xFFFF])
def test_bad_payload_length(plen):
    assert _reason(ECHO6[:4] + plen.to_bytes(2, "big") + ECHO6[6:]) == "ipv6.bad_length"


def test_every_truncation_raises_only_malformed():
    for raw in [ECHO6, CHAIN] + [_built(c[1])[0] for c in _chains()]:
        for n in range(len(raw)):
            reason = _reason(raw[:n])
            assert reason in ("ipv6.truncated", "ipv6.bad_length"), (n, reason)
            # the same cut with the payload length made to match: now the chain itself is cut
            if n > 40 and raw[6] in (0, 43, 60):
                cut = raw[:4] + (n - 40).to_bytes(2, "big") + raw[6:n]
                try:
                    proto, l4, end, *_ = parse_fields(memoryview(cut))
                except MalformedPacket as e:
                    assert e.reason == "ipv6.ext_truncated", (n, e.reason)
                else:
                    assert 40 <= l4 <= end == n


def test_extension_header_longer_than_the_packet():
    raw = bytearray(_built(IPv6ExtHdrDestOpt() / UDP())[0])
    raw[41] = 2                                      # 24 bytes claimed, 8 + 8 (UDP) present
    assert _reason(bytes(raw)) == "ipv6.ext_truncated"
    raw[41] = 1                                      # 16: the UDP header taken as padding
    raw[48:56] = bytes(8)
    assert parse_fields(memoryview(bytes(raw)))[:3] == (17, 56, 56)


@pytest.mark.parametrize("value", [0x00, 0x01, 0x3B, 0x80, 0xFF])
def test_impossible_values_at_every_offset(value):
    for raw in (CHAIN, _built(_chains()[6][1])[0]):
        for off in range(len(raw)):
            bad = raw[:off] + bytes((value,)) + raw[off + 1:]
            try:
                proto, l4, end, *_ = parse_fields(memoryview(bad))
            except MalformedPacket as e:
                assert e.reason.startswith("ipv6.")
            else:
                assert 40 <= l4 <= end <= len(bad)
                assert Ipv6Header.parse(bad).pack() == bad[:l4]


# ------------------------------------------------------------------ TCP and UDP over IPv6

def test_tcp_checksum_over_ipv6_matches_scapy():
    pkt = IPv6(src="fd00::100", dst=FAR_T) / TCP(sport=40000, dport=443, seq=1000, ack=5, flags="PA",
                                                 window=512) / b"hello over six"
    raw = bytes(pkt)
    seg = TcpSegment.parse(memoryview(raw)[40:], GUEST, FAR, verify_checksum=True)
    assert bytes(seg.payload) == b"hello over six" and seg.flags == PSH | ACK
    built = TcpSegment(40000, 443, 1000, 5, PSH | ACK, 512, payload=b"hello over six").pack(GUEST, FAR)
    assert built == raw[40:]
    # the same segment checked against other addresses, or with one bit flipped, fails
    with pytest.raises(MalformedPacket, match="tcp.bad_checksum"):
        TcpSegment.parse(memoryview(raw)[40:], GUEST, GW, verify_checksum=True)
    flipped = bytearray(raw[40:])
    flipped[-1] ^= 1
    with pytest.raises(MalformedPacket, match="tcp.bad_checksum"):
        TcpSegment.parse(memoryview(flipped), GUEST, FAR, verify_checksum=True)


def test_udp_checksum_over_ipv6_matches_scapy():
    raw = bytes(IPv6(src="fd00::100", dst="fd00::3") / UDP(sport=53000, dport=53) / b"\x12\x34query")
    dns = a6("fd00::3")
    assert build_datagram(GUEST, dns, 53000, 53, b"\x12\x34query") == raw[40:]
    assert UdpHeader.parse(memoryview(raw)[40:], GUEST, dns, verify_checksum=True).length == 15
    with pytest.raises(MalformedPacket, match="udp.bad_checksum"):
        UdpHeader.parse(memoryview(raw)[40:], GW, dns, verify_checksum=True)


def test_udp_zero_checksum_refused_over_ipv6_only():
    dgram = build_datagram(GUEST[:4], GW[:4], 1, 2, b"abc", checksum=False)
    assert dgram[6:8] == b"\0\0"
    assert UdpHeader.parse(dgram, GUEST[:4], GW[:4], verify_checksum=True).checksum == 0
    with pytest.raises(MalformedPacket) as e:
        UdpHeader.parse(dgram, GUEST, GW, verify_checksum=True)
    assert e.value.reason == "udp.zero_checksum_v6"
    assert UdpHeader.parse(dgram, GUEST, GW, verify_checksum=False).checksum == 0
    with pytest.raises(ValueError):
        build_datagram(GUEST, GW, 1, 2, b"abc", checksum=False)


def test_udp_computed_zero_is_sent_as_ffff_over_ipv6():
    # Find a payload whose checksum computes to 0: it must go out as 0xFFFF and verify.
    for i in range(70000):
        payload = i.to_bytes(4, "big")
        d = build_datagram(GUEST, FAR, 7, 9, payload)
        if d[6:8] == b"\xff\xff":
            break
    else:
        raise AssertionError("no zero-sum payload found")
    assert UdpHeader.parse(d, GUEST, FAR, verify_checksum=True).checksum == 0xFFFF
    assert bytes(IPv6(src="fd00::100", dst=FAR_T) / UDP(sport=7, dport=9) / payload)[40:] == d


addr6 = st.binary(min_size=16, max_size=16)


@SETTINGS
@given(addr6, addr6, st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.binary(max_size=1500),
       st.sampled_from([SYN, ACK, PSH | ACK]))
def test_tcp_over_ipv6_roundtrip(src, dst, sport, dport, payload, flags):
    seg = TcpSegment(sport, dport, 7, 8, flags, 1000, options=TcpOptions(mss=1440) if flags == SYN
                     else TcpOptions(), payload=payload).pack(src, dst)
    got = TcpSegment.parse(memoryview(seg), src, dst, verify_checksum=True)
    assert (got.src_port, got.dst_port, bytes(got.payload)) == (sport, dport, payload)
    u = build_datagram(src, dst, sport, dport, payload)
    assert UdpHeader.parse(u, src, dst, verify_checksum=True).length == 8 + len(payload)


# ------------------------------------------------------------------ round trips

u8 = st.integers(0, 255)
PROTO_HBH = ipv6.PROTO_HOPOPTS


@st.composite
def packets(draw):
    """A packet with a random chain of extension headers (padding options only) before a
    random upper-layer protocol, and the l4 offset the walk must find."""
    types = [PROTO_HBH] * draw(st.booleans()) + draw(st.lists(st.sampled_from([43, 60]), max_size=7))
    proto = draw(st.sampled_from([6, 17, 58, 59, 132, 44]))
    chain = b""
    for i, t in enumerate(types):
        nxt = types[i + 1] if i + 1 < len(types) else proto
        units = draw(st.integers(0, 3))
        if t == 43:
            body = bytes((draw(u8), 0)) + draw(st.binary(min_size=4 + 8 * units, max_size=4 + 8 * units))
        else:
            body = bytes((1, 4 + 8 * units)) + bytes(4 + 8 * units)
        chain += bytes((nxt, units)) + body
    upper = draw(st.binary(min_size=0 if chain else 1, max_size=64))
    tc, fl, hop = draw(u8), draw(st.integers(0, 0xFFFFF)), draw(u8)
    src, dst = draw(addr6), draw(addr6)
    head = Ipv6Header(tc, fl, len(chain) + len(upper), proto, hop, src, dst, 40 + len(chain),
                      tuple(types), chain)
    return head, head.pack() + upper


@SETTINGS
@given(packets(), st.binary(max_size=16))
def test_roundtrip(packet, trailer):
    head, raw = packet
    buf = raw + trailer
    assert Ipv6Header.parse(buf) == head
    assert Ipv6Header.parse(memoryview(buf)) == head
    assert parse_fields(memoryview(buf)) == (head.next_header, head.l4_offset, len(raw), head.hop_limit,
                                             head.src, head.dst)
    first = head.ext_types[0] if head.ext_types else head.next_header
    no_flow_label = raw[:1] + bytes((raw[1] & 0xF0, 0, 0)) + raw[4:40]
    assert build_header(head.src, head.dst, first, head.payload_length, head.hop_limit,
                        head.traffic_class) == no_flow_label


@SETTINGS
@given(st.binary(max_size=200) | st.builds(lambda b, t: CHAIN[:t] + b, st.binary(max_size=40),
                                             st.integers(0, len(CHAIN))))
def test_random_bytes_raise_only_malformed(buf):
    try:
        proto, l4, end, hop, src, dst = parse_fields(memoryview(buf))
    except MalformedPacket as e:
        assert e.reason.startswith("ipv6.")
    else:
        assert 40 <= l4 <= end <= len(buf) and len(src) == len(dst) == 16
