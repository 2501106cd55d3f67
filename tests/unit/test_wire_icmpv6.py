"""ICMPv6 and NDP: golden messages (built by scapy), byte-exact builds, checksums over the
pseudo-header, option validation, truncations at every offset, round trips."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from hypothesis import given, settings, strategies as st
from scapy.layers.inet import UDPerror
from scapy.layers.inet6 import (
    ICMPv6ND_NA, ICMPv6ND_NS, ICMPv6ND_RA, ICMPv6NDOptDstLLAddr, ICMPv6NDOptMTU,
    ICMPv6NDOptPrefixInfo, ICMPv6NDOptRDNSS, ICMPv6NDOptSrcLLAddr, IPv6,
)
from scapy.utils6 import in6_getnsma, in6_getnsmac, in6_mactoifaceid

from slirpy.tcpip.checksum import pseudo_header_sum, sum16
from slirpy.tcpip.errors import MalformedPacket
from slirpy.tcpip.wire import icmpv6, ipv6
from slirpy.tcpip.wire.icmpv6 import (
    Icmpv6Header, build_echo_reply, build_error, build_message, build_na, build_ns, build_ra,
    link_local_from_mac, multicast_mac, parse_na, parse_ns, parse_rs, solicited_node,
)

SETTINGS = settings(database=None, deadline=None)


def a6(text: str) -> bytes:
    return ipaddress.IPv6Address(text).packed


GUEST = a6("fd00::100")
GW = a6("fd00::2")
DNS = a6("fd00::3")
FAR = a6("2001:db8::1")
GW_LL = a6("fe80::5055:aff:fe00:202")
GUEST_LL = a6("fe80::ff:fe00:64")
GW_MAC = bytes.fromhex("52550a000202")
GUEST_MAC = bytes.fromhex("020000000064")

# scapy 2.6: ICMPv6EchoRequest(id=0x1c2b, seq=1, data=bytes(range(56))), fd00::100 -> fd00::2
ECHO_REQUEST = bytes.fromhex(
    "800071421c2b0001000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f2021222324"
    "25262728292a2b2c2d2e2f3031323334353637")
# scapy: the ICMPv6EchoReply to it, fd00::2 -> fd00::100
ECHO_REPLY = bytes.fromhex(
    "810070421c2b0001000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f2021222324"
    "25262728292a2b2c2d2e2f3031323334353637")
# scapy: IPv6(fd00::100 -> 2001:db8::1)/UDP(1000 -> 9)/"xxxxx", and errors quoting it
ORIGINAL = bytes.fromhex(
    "60000000000d1140fd00000000000000000000000000010020010db800000000000000000000000103e8000900"
    "0d67377878787878")
QUOTED = bytes.fromhex(
    "60000000000d1140fd00000000000000000000000000010020010db8000000000000000000"
    "00000103e80009000d67377878787878")
PORT_UNREACH = bytes.fromhex("0104619a00000000") + QUOTED      # 2001:db8::1 -> fd00::100
TOO_BIG = bytes.fromhex("02008c5500000500") + QUOTED           # fd00::2 -> fd00::100, MTU 1280
HOP_EXCEEDED = bytes.fromhex("0300905500000000") + QUOTED      # fd00::2 -> fd00::100
PARAM_PROBLEM = bytes.fromhex("04008f4f00000006") + QUOTED     # fd00::2 -> fd00::100, pointer 6
# scapy NDP, hop limit 255:
# NS fd00::100 -> ff02::1:ff00:2 for fd00::2, source link-layer 02:00:00:00:00:64
NS = bytes.fromhex("87007c3500000000fd0000000000000000000000000000020101020000000064")
# NS :: -> ff02::1:ff00:100 for fd00::100 (duplicate address detection: no option)
NS_DAD = bytes.fromhex("87007ba700000000fd000000000000000000000000000100")
# NA fd00::2 -> fd00::100, R S O, target fd00::2 at 52:55:0a:00:02:02
NA = bytes.fromhex("88003f45e0000000fd000000000000000000000000000002020152550a000202")
# NA fd00::100 -> fd00::2, S only, target fd00::100 at 02:00:00:00:00:64
NA_GUEST = bytes.fromhex("88003a3b40000000fd0000000000000000000000000001000201020000000064")
# RS fe80::ff:fe00:64 -> ff02::2, source link-layer 02:00:00:00:00:64
RS = bytes.fromhex("85007a66000000000101020000000064")
# RA fe80::5055:aff:fe00:202 -> ff02::1: router lifetime 1800; SLLA 52:55:0a:00:02:02;
# prefix fd00::/64 L A valid 86400 preferred 14400; MTU 65520; RDNSS fd00::3 lifetime 1800
RA = bytes.fromhex(
    "8600cda8000007080000000000000000010152550a000202030440c0000151800000384000000000fd00000000"
    "0000000000000000000000050100000000fff01903000000000708fd000000000000000000000000000003")

RA_ARGS = dict(prefix=a6("fd00::"), prefix_len=64, mtu=65520, rdnss=[DNS], router_lifetime=1800,
               valid_lifetime=86400, preferred_lifetime=14400, rdnss_lifetime=1800)


def test_constants():
    assert icmpv6.ERROR_QUOTE_MAX == 1232 and icmpv6.ICMPV6_HLEN == 8
    assert (icmpv6.DEST_UNREACH, icmpv6.PACKET_TOO_BIG, icmpv6.TIME_EXCEEDED, icmpv6.PARAM_PROBLEM) == (1, 2, 3, 4)
    assert (icmpv6.ROUTER_SOLICIT, icmpv6.ROUTER_ADVERT, icmpv6.NEIGHBOR_SOLICIT, icmpv6.NEIGHBOR_ADVERT,
            icmpv6.REDIRECT) == (133, 134, 135, 136, 137)
    assert icmpv6.UNREACH_PORT == 4 and icmpv6.UNREACH_ADDR == 3 and icmpv6.UNREACH_ADMIN == 1


def test_golden_echo_request():
    h = Icmpv6Header.parse(ECHO_REQUEST, GUEST, GW)
    assert (h.type, h.code, h.rest, h.ident, h.sequence) == (icmpv6.ECHO_REQUEST, 0, 0x1C2B0001, 0x1C2B, 1)
    assert bytes(h.body) == bytes(range(56)) and isinstance(h.body, memoryview)
    assert build_message(GUEST, GW, icmpv6.ECHO_REQUEST, 0, bytes.fromhex("1c2b0001"), bytes(range(56))) \
        == ECHO_REQUEST
    assert h.pack(GUEST, GW) == ECHO_REQUEST


def test_golden_echo_reply():
    assert build_echo_reply(GW, GUEST, ECHO_REQUEST) == ECHO_REPLY
    assert build_echo_reply(GW, GUEST, memoryview(ECHO_REQUEST)) == ECHO_REPLY
    h = Icmpv6Header.parse(memoryview(ECHO_REPLY), GW, GUEST)
    assert (h.type, h.ident, h.sequence) == (icmpv6.ECHO_REPLY, 0x1C2B, 1)


def test_echo_reply_to_short_request():
    with pytest.raises(MalformedPacket, match="icmpv6.truncated"):
        build_echo_reply(GW, GUEST, ECHO_REQUEST[:7])
    reply = build_echo_reply(GW, GUEST, ECHO_REQUEST[:8])
    assert len(reply) == 8 and Icmpv6Header.parse(reply, GW, GUEST).sequence == 1


@pytest.mark.parametrize("built,golden", [
    (lambda: build_error(FAR, GUEST, icmpv6.DEST_UNREACH, icmpv6.UNREACH_PORT, 0, ORIGINAL), PORT_UNREACH),
    (lambda: build_error(GW, GUEST, icmpv6.PACKET_TOO_BIG, 0, 1280, ORIGINAL), TOO_BIG),
    (lambda: build_error(GW, GUEST, icmpv6.TIME_EXCEEDED, icmpv6.HOP_LIMIT_EXCEEDED, 0, ORIGINAL), HOP_EXCEEDED),
    (lambda: build_error(GW, GUEST, icmpv6.PARAM_PROBLEM, icmpv6.PARAM_BAD_HEADER, 6, ORIGINAL), PARAM_PROBLEM),
])
def test_golden_errors(built, golden):
    assert QUOTED == ORIGINAL
    assert built() == golden


def test_error_info_fields():
    assert Icmpv6Header.parse(TOO_BIG, GW, GUEST).mtu == 1280
    assert Icmpv6Header.parse(PARAM_PROBLEM, GW, GUEST).pointer == 6
    with pytest.raises(ValueError):
        build_error(GW, GUEST, icmpv6.PACKET_TOO_BIG, 0, 1 << 32, ORIGINAL)


def test_error_quote_drops_link_padding():
    assert build_error(FAR, GUEST, 1, 4, 0, ORIGINAL + bytes(11)) == PORT_UNREACH
    # a quote that is not a sane IPv6 packet is quoted as given
    odd = b"\x45" + ORIGINAL[1:] + bytes(3)
    assert build_error(FAR, GUEST, 1, 4, 0, odd)[8:] == odd


def test_error_quote_capped_at_minimum_mtu():
    payload = bytes(range(256)) * 8
    big = ipv6.build_header(GUEST, FAR, 17, 8 + len(payload)) + bytes(8) + payload
    msg = build_error(GW, GUEST, icmpv6.DEST_UNREACH, icmpv6.UNREACH_ADDR, 0, big)
    assert 40 + len(msg) == ipv6.IPV6_MIN_MTU == 1280
    assert msg[8:] == big[:1232]
    assert Icmpv6Header.parse(msg, GW, GUEST).type == icmpv6.DEST_UNREACH
    assert build_error(GW, GUEST, 3, 0, 0, big[:1232])[8:] == big[:1232]
    assert build_error(GW, GUEST, 3, 0, 0, big[:1233])[8:] == big[:1232]


def test_is_error():
    assert all(icmpv6.is_error(t) for t in (1, 2, 3, 4, 127))
    assert not any(icmpv6.is_error(t) for t in (128, 129, 133, 134, 135, 136, 137))


@pytest.mark.parametrize("n", range(8))
def test_short(n):
    with pytest.raises(MalformedPacket) as e:
        Icmpv6Header.parse(ECHO_REQUEST[:n], GUEST, GW)
    assert e.value.reason == "icmpv6.truncated"


@pytest.mark.parametrize("offset", [0, 1, 2, 3, 5, 8, 63])
def test_bad_checksum(offset):
    bad = bytearray(ECHO_REQUEST)
    bad[offset] ^= 0x10
    with pytest.raises(MalformedPacket) as e:
        Icmpv6Header.parse(bad, GUEST, GW)
    assert e.value.reason == "icmpv6.bad_checksum"
    assert Icmpv6Header.parse(bad, GUEST, GW, verify=False).type == bad[0]


def test_checksum_covers_the_pseudo_header():
    # Another source or destination address breaks it (IPv4 ICMP would not notice).
    for src, dst in ((FAR, GW), (GUEST, DNS)):
        with pytest.raises(MalformedPacket, match="icmpv6.bad_checksum"):
            Icmpv6Header.parse(ECHO_REQUEST, src, dst)
    assert sum16(ECHO_REQUEST) != 0xFFFF
    assert sum16(ECHO_REQUEST, pseudo_header_sum(GUEST, GW, 58, len(ECHO_REQUEST))) == 0xFFFF


def test_truncated_message_fails_checksum():
    with pytest.raises(MalformedPacket, match="icmpv6.bad_checksum"):
        Icmpv6Header.parse(ECHO_REQUEST[:-2], GUEST, GW)


def test_build_message_rejects_bad_rest():
    with pytest.raises(ValueError):
        build_message(GUEST, GW, 128, 0, b"\x00\x01")


u8 = st.integers(0, 255)
u32 = st.integers(0, 0xFFFFFFFF)
addr6 = st.binary(min_size=16, max_size=16)


@SETTINGS
@given(addr6, addr6, u8, u8, u32, st.binary(max_size=1500))
def test_roundtrip(src, dst, t, code, rest, data):
    msg = build_message(src, dst, t, code, rest.to_bytes(4, "big"), data)
    assert sum16(msg, pseudo_header_sum(src, dst, 58, len(msg))) == 0xFFFF
    h = Icmpv6Header.parse(msg, src, dst)
    assert (h.type, h.code, h.rest, bytes(h.body)) == (t, code, rest, data)
    assert h.pack(src, dst) == msg


@SETTINGS
@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.binary(max_size=300))
def test_echo_reply_property(ident, seq, data):
    req = build_message(GUEST, FAR, icmpv6.ECHO_REQUEST, 0, (ident << 16 | seq).to_bytes(4, "big"), data)
    h = Icmpv6Header.parse(build_echo_reply(FAR, GUEST, req), FAR, GUEST)
    assert (h.type, h.code, h.ident, h.sequence, bytes(h.body)) == (icmpv6.ECHO_REPLY, 0, ident, seq, data)


@SETTINGS
@given(st.binary(max_size=1400), st.sampled_from([1, 2, 3, 4]), u32)
def test_errors_always_valid_and_bounded(quote, t, info):
    msg = build_error(GW, GUEST, t, 0, info, quote)
    h = Icmpv6Header.parse(msg, GW, GUEST)
    assert (h.type, h.rest) == (t, info)
    assert 8 <= len(msg) <= 1280 - 40 and quote.startswith(msg[8:])


# ------------------------------------------------------------------ NDP

def test_golden_ns():
    h = Icmpv6Header.parse(NS, GUEST, solicited_node(GW))
    assert (h.type, h.code, h.rest) == (icmpv6.NEIGHBOR_SOLICIT, 0, 0)
    assert parse_ns(h.body) == (GW, GUEST_MAC)
    assert build_ns(GUEST, solicited_node(GW), GW, GUEST_MAC) == NS


def test_golden_ns_for_duplicate_address_detection():
    dst = solicited_node(GUEST)
    h = Icmpv6Header.parse(NS_DAD, icmpv6.UNSPECIFIED, dst)
    assert parse_ns(h.body) == (GUEST, None)
    assert build_ns(icmpv6.UNSPECIFIED, dst, GUEST, GUEST_MAC) == NS_DAD


def test_golden_na():
    h = Icmpv6Header.parse(NA, GW, GUEST)
    assert parse_na(h.body, h.rest) == (icmpv6.NA_ROUTER | icmpv6.NA_SOLICITED | icmpv6.NA_OVERRIDE, GW, GW_MAC)
    assert build_na(GW, GUEST, GW, GW_MAC, router=True, solicited=True) == NA
    g = Icmpv6Header.parse(NA_GUEST, GUEST, GW)
    assert parse_na(g.body, g.rest) == (icmpv6.NA_SOLICITED, GUEST, GUEST_MAC)
    assert build_na(GUEST, GW, GUEST, GUEST_MAC, router=False, solicited=True, override=False) == NA_GUEST


def test_golden_rs():
    h = Icmpv6Header.parse(RS, GUEST_LL, icmpv6.ALL_ROUTERS)
    assert h.type == icmpv6.ROUTER_SOLICIT and parse_rs(h.body) == GUEST_MAC
    assert parse_rs(b"") is None


def test_golden_ra():
    assert build_ra(GW_LL, icmpv6.ALL_NODES, GW_MAC, **RA_ARGS) == RA
    assert Icmpv6Header.parse(RA, GW_LL, icmpv6.ALL_NODES).rest == 1800


def test_ra_read_back_by_scapy():
    dns2 = a6("2001:db8::53")
    msg = build_ra(GW_LL, GUEST, GW_MAC, **(RA_ARGS | dict(prefix=a6("fd00:1:2:3:ffff::1"), mtu=1500,
                                                          rdnss=[DNS, dns2], rdnss_lifetime=600)))
    pkt = IPv6(ipv6.build_header(GW_LL, GUEST, 58, len(msg), 255) + msg)
    ra = pkt[ICMPv6ND_RA]
    assert (ra.chlim, ra.M, ra.O, ra.routerlifetime, ra.reachabletime, ra.retranstimer) == (0, 0, 0, 1800, 0, 0)
    assert pkt[ICMPv6NDOptSrcLLAddr].lladdr == "52:55:0a:00:02:02"
    pi = pkt[ICMPv6NDOptPrefixInfo]
    assert (pi.prefix, pi.prefixlen, pi.L, pi.A, pi.validlifetime, pi.preferredlifetime) == \
        ("fd00:1:2:3::", 64, 1, 1, 86400, 14400)
    assert pkt[ICMPv6NDOptMTU].mtu == 1500
    assert (pkt[ICMPv6NDOptRDNSS].dns, pkt[ICMPv6NDOptRDNSS].lifetime) == (["fd00::3", "2001:db8::53"], 600)
    # scapy computes the same checksum
    cks = ra.cksum
    del ra.cksum
    assert IPv6(bytes(pkt))[ICMPv6ND_RA].cksum == cks


def test_ra_without_rdnss_and_other_prefix_lengths():
    msg = build_ra(GW_LL, icmpv6.ALL_NODES, GW_MAC, **(RA_ARGS | dict(rdnss=[], prefix_len=48)))
    pkt = IPv6(ipv6.build_header(GW_LL, icmpv6.ALL_NODES, 58, len(msg), 255) + msg)
    assert ICMPv6NDOptRDNSS not in pkt and len(msg) == len(RA) - 24
    assert pkt[ICMPv6NDOptPrefixInfo].prefixlen == 48


@pytest.mark.parametrize("bad", [
    dict(src=GW), dict(src=a6("fec0::1")), dict(mac=GW_MAC[:5]), dict(prefix=GW[:8]), dict(prefix_len=129),
    dict(mtu=1279), dict(router_lifetime=0x10000), dict(preferred_lifetime=86401),
    dict(valid_lifetime=1 << 32, preferred_lifetime=1 << 32), dict(rdnss=[DNS[:4]]),
    dict(rdnss_lifetime=-1),
])
def test_ra_refuses_what_a_guest_would_discard(bad):
    args = dict(src=GW_LL, dst=icmpv6.ALL_NODES, mac=GW_MAC) | RA_ARGS | bad
    with pytest.raises(ValueError):
        build_ra(args.pop("src"), args.pop("dst"), args.pop("mac"), **args)


def test_ndp_builders_refuse_bad_lengths():
    for call in (lambda: build_na(GW, GUEST, GW[:4], GW_MAC, router=True, solicited=True),
                 lambda: build_na(GW, GUEST, GW, GW_MAC + b"\0", router=True, solicited=True),
                 lambda: build_ns(GW, GUEST, GW[:15], GW_MAC),
                 lambda: build_ns(GW, GUEST, GW, b""),
                 lambda: solicited_node(GW[:4]), lambda: multicast_mac(GW),
                 lambda: link_local_from_mac(GW_MAC[:5])):
        with pytest.raises(ValueError):
            call()


def test_scapy_built_ndp_parses():
    ns = bytes(IPv6(src="fd00::100", dst="ff02::1:ff00:3", hlim=255) / ICMPv6ND_NS(tgt="fd00::3")
               / ICMPv6NDOptSrcLLAddr(lladdr="02:00:00:00:00:65"))
    h = Icmpv6Header.parse(ns[40:], ns[8:24], ns[24:40])
    assert parse_ns(h.body) == (DNS, bytes.fromhex("020000000065"))
    na = bytes(IPv6(src="fd00::100", dst="ff02::1", hlim=255) / ICMPv6ND_NA(tgt="fd00::100", R=0, S=0, O=1)
               / ICMPv6NDOptDstLLAddr(lladdr="02:00:00:00:00:64"))
    h = Icmpv6Header.parse(na[40:], na[8:24], na[24:40])
    assert parse_na(h.body, h.rest) == (icmpv6.NA_OVERRIDE, GUEST, GUEST_MAC)
    # an NA without the option, and an RA from the guest (read only by its options walk)
    na_bare = bytes(IPv6(src="fd00::100", dst="fd00::2") / ICMPv6ND_NA(tgt="fd00::100"))[40:]
    h = Icmpv6Header.parse(na_bare, GUEST, GW)
    assert parse_na(h.body, h.rest)[1:] == (GUEST, None)


def _opts(*opts: bytes) -> bytes:
    return GW + b"".join(opts)


@pytest.mark.parametrize("body", [
    _opts(b"\x01\x00" + bytes(6)),                           # length 0
    _opts(b"\x01\x02" + bytes(6)),                           # 16 bytes claimed, 8 present
    _opts(b"\x0e\x01" + bytes(6), b"\x01"),                  # a type byte and no length
    _opts(b"\x01\x01" + GUEST_MAC, b"\x0e\x00"),             # a later option of length 0
    _opts(b"\x01\x02" + GUEST_MAC + bytes(8)),               # link-layer option not 8 bytes
])
def test_bad_options(body):
    with pytest.raises(MalformedPacket) as e:
        parse_ns(body)
    assert e.value.reason == "ndp.bad_option"
    target_opt = body[:16] + body[16:17].replace(b"\x01", b"\x02") + body[17:]
    with pytest.raises(MalformedPacket, match="ndp.bad_option"):
        parse_na(target_opt, 0)
    with pytest.raises(MalformedPacket, match="ndp.bad_option"):
        parse_rs(body[16:])


def test_unknown_options_are_skipped_and_first_lladdr_wins():
    nonce = b"\x0e\x01" + b"nonce!"
    other_mac = bytes.fromhex("020000000099")
    body = _opts(nonce, b"\x02\x01" + other_mac, b"\x01\x01" + GUEST_MAC, b"\x01\x01" + other_mac)
    assert parse_ns(body) == (GW, GUEST_MAC)
    assert parse_na(body, icmpv6.NA_SOLICITED | 0x1FFFFFFF) == (icmpv6.NA_SOLICITED, GW, other_mac)
    assert parse_rs(body[16:]) == GUEST_MAC
    assert parse_rs(nonce) is None


@pytest.mark.parametrize("target", ["ff02::1", "ff02::1:ff00:2", "ff05::2"])
def test_multicast_target(target):
    for parse in (parse_ns, _na):
        with pytest.raises(MalformedPacket) as e:
            parse(a6(target) + b"\x01\x01" + GUEST_MAC)
        assert e.value.reason == "ndp.bad_target"


def _na(body):
    return parse_na(body, 0)


@pytest.mark.parametrize("body,parse,whole", [
    (NS[8:], parse_ns, {16, 24}), (NA[8:], _na, {16, 24}), (NS_DAD[8:], parse_ns, {16}),
    (RS[8:], parse_rs, {0, 8}), (RA[16:], parse_rs, {0, 8, 40, 48, 72}),    # RA: its options
], ids=["ns", "na", "ns_dad", "rs", "ra_options"])
def test_every_truncation_of_ndp_bodies(body, parse, whole):
    """A cut at an option boundary is a valid, shorter message; anywhere else it is refused."""
    assert max(whole) == len(body)
    for n in range(len(body) + 1):
        if n in whole:
            parse(body[:n])
            continue
        with pytest.raises(MalformedPacket) as e:
            parse(body[:n])
        assert e.value.reason == ("ndp.truncated" if n < 16 and parse is not parse_rs else "ndp.bad_option")


@pytest.mark.parametrize("value", [0x00, 0x01, 0x02, 0xFF])
def test_impossible_values_at_every_offset(value):
    for msg, parse in ((NS, parse_ns), (NA, _na), (RS, parse_rs)):
        body = msg[8:]
        for off in range(len(body)):
            bad = body[:off] + bytes((value,)) + body[off + 1:]
            try:
                parse(bad)
            except MalformedPacket as e:
                assert e.reason.startswith("ndp.")


def test_solicited_node_and_multicast_mac_match_scapy():
    for text in ("fd00::2", "fd00::100", "2001:db8::abcd:1234", "fe80::5055:aff:fe00:202"):
        addr = a6(text)
        assert solicited_node(addr) == in6_getnsma(socket.inet_pton(socket.AF_INET6, text))
        mac = in6_getnsmac(solicited_node(addr))
        assert multicast_mac(solicited_node(addr)) == bytes.fromhex(mac.replace(":", ""))
    assert multicast_mac(icmpv6.ALL_NODES) == bytes.fromhex("333300000001")
    assert solicited_node(GW) == a6("ff02::1:ff00:2")


@pytest.mark.parametrize("mac", ["52:55:0a:00:02:02", "02:00:00:00:00:64", "00:00:00:00:00:00",
                                 "ff:ff:ff:ff:ff:ff"])
def test_link_local_from_mac_matches_scapy(mac):
    raw = bytes.fromhex(mac.replace(":", ""))
    ll = link_local_from_mac(raw)
    assert ll[:8] == bytes.fromhex("fe80000000000000")
    assert ll[8:] == bytes.fromhex(in6_mactoifaceid(mac).replace(":", ""))
    assert link_local_from_mac(GW_MAC) == GW_LL


@SETTINGS
@given(addr6, addr6, st.binary(min_size=6, max_size=6), st.booleans(), st.booleans(), st.booleans())
def test_ndp_roundtrip(src, target, mac, router, solicited, override):
    target = b"\xfd" + target[1:]
    msg = build_na(src, GUEST, target, mac, router=router, solicited=solicited, override=override)
    h = Icmpv6Header.parse(msg, src, GUEST)
    flags = (router and icmpv6.NA_ROUTER) | (solicited and icmpv6.NA_SOLICITED) | (override and icmpv6.NA_OVERRIDE)
    assert parse_na(h.body, h.rest) == (flags, target, mac)
    msg = build_ns(src, solicited_node(target), target, mac)
    h = Icmpv6Header.parse(msg, src, solicited_node(target))
    assert parse_ns(h.body) == (target, None if src == icmpv6.UNSPECIFIED else mac)


@SETTINGS
@given(st.binary(max_size=120))
def test_random_bodies_raise_only_malformed(body):
    for parse in (parse_ns, lambda b: parse_na(b, 0xFFFFFFFF), parse_rs):
        try:
            parse(body)
        except MalformedPacket as e:
            assert e.reason in ("ndp.truncated", "ndp.bad_option", "ndp.bad_target")


def test_udp_in_scapy_quote_is_what_we_quote():
    # the quoted datagram is a real one: scapy reads the UDP header back out of the error
    err = IPv6(ipv6.build_header(FAR, GUEST, 58, len(PORT_UNREACH)) + PORT_UNREACH)
    assert (err[UDPerror].sport, err[UDPerror].dport, err[UDPerror].len) == (1000, 9, 13)
