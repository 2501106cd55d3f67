"""IPv4 header: golden bytes, validation order, round trips."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from slirpy.tcpip.wire import ipv4
from slirpy.tcpip.checksum import sum16
from slirpy.tcpip.errors import MalformedPacket
from slirpy.tcpip.wire.ipv4 import Ipv4Header, build_header

SETTINGS = settings(database=None)

# Built once with scapy 2.6: IP(src=10.0.2.100, dst=10.0.2.2, id=0x4d2, DF)/ICMP echo, 56 data bytes.
ECHO_PACKET = bytes.fromhex(
    "4500005404d2400040011d720a0002640a0002020800e4c01c2b0001000102030405060708090a0b0c0d0e0f"
    "101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f3031323334353637"
)
# Ethernet frame carrying a DNS query (scapy): 14 bytes Ethernet, then IPv4 without DF.
DNS_FRAME = bytes.fromhex(
    "52550a000202020000000002080045000039111100004011513d0a0002640a000203cf08003500259cc4abcd"
    "01000001000000000000076578616d706c6503636f6d0000010001"
)
GUEST = bytes((10, 0, 2, 100))
GW = bytes((10, 0, 2, 2))
DNS = bytes((10, 0, 2, 3))


def test_golden_echo_packet():
    h = Ipv4Header.parse(ECHO_PACKET)
    assert h == Ipv4Header(20, 0, 84, 0x04D2, ipv4.FLAG_DF, 64, ipv4.PROTO_ICMP, 0x1D72, GUEST, GW)
    assert h.dont_fragment and not h.more_fragments and not h.is_fragment
    assert h.payload_len == 64 == len(ECHO_PACKET) - 20
    assert h.pack() == ECHO_PACKET[:20]
    assert build_header(GUEST, GW, ipv4.PROTO_ICMP, 64, ident=0x04D2) == ECHO_PACKET[:20]


def test_golden_dns_packet_in_frame():
    h = Ipv4Header.parse(memoryview(DNS_FRAME)[14:])
    assert (h.src, h.dst, h.proto, h.ident, h.frag, h.ttl, h.total_length) == (
        GUEST, DNS, ipv4.PROTO_UDP, 0x1111, 0, 64, 0x39)
    assert h.pack() == DNS_FRAME[14:34]
    assert build_header(GUEST, DNS, ipv4.PROTO_UDP, 0x39 - 20, ident=0x1111, df=False) == DNS_FRAME[14:34]


def test_ethernet_padding_after_total_length_is_allowed():
    # A 28-byte IP packet (an empty echo) padded with 18 bytes to the Ethernet minimum.
    hdr = build_header(GUEST, GW, ipv4.PROTO_ICMP, 8)
    buf = hdr + ECHO_PACKET[20:28] + b"\xaa" * 18
    h = Ipv4Header.parse(buf)
    assert h.total_length == 28
    assert bytes(buf[h.header_len:h.total_length]) == ECHO_PACKET[20:28]


def test_options_kept_raw():
    opts = bytes((0x94, 4, 0, 0))    # Router Alert (RFC 2113)
    h = Ipv4Header(24, 0, 24, 1, 0, 1, 2, 0, GUEST, GW, opts).with_checksum()
    raw = h.pack()
    assert raw[0] == 0x46 and len(raw) == 24
    assert sum16(raw) == 0xFFFF
    assert Ipv4Header.parse(raw) == h
    assert Ipv4Header.parse(raw).options == opts


def test_fragment_properties():
    base = Ipv4Header.parse(ECHO_PACKET)
    mf = Ipv4Header(20, 0, 20, 1, ipv4.FLAG_MF, 64, 17, 0, GUEST, GW)
    last = Ipv4Header(20, 0, 20, 1, 185, 64, 17, 0, GUEST, GW)
    assert not base.is_fragment
    assert mf.is_fragment and mf.more_fragments and mf.fragment_offset == 0
    assert last.is_fragment and not last.more_fragments and last.fragment_offset == 1480


@pytest.mark.parametrize("n", range(20))
def test_short(n):
    with pytest.raises(MalformedPacket) as e:
        Ipv4Header.parse(ECHO_PACKET[:n])
    assert e.value.reason == "ipv4.short"


def _with(buf: bytes, offset: int, value: bytes) -> bytes:
    b = bytearray(buf)
    b[offset:offset + len(value)] = value
    return bytes(b)


def _reason(buf, **kw) -> str:
    with pytest.raises(MalformedPacket) as e:
        Ipv4Header.parse(buf, **kw)
    return e.value.reason


@pytest.mark.parametrize("first", [0x05, 0x65, 0xF5, 0x35])
def test_bad_version(first):
    assert _reason(_with(ECHO_PACKET, 0, bytes((first,)))) == "ipv4.bad_version"


@pytest.mark.parametrize("ihl", [0, 1, 4])
def test_ihl_too_small(ihl):
    assert _reason(_with(ECHO_PACKET, 0, bytes((0x40 | ihl,)))) == "ipv4.bad_ihl"


def test_ihl_beyond_buffer():
    assert _reason(_with(ECHO_PACKET, 0, b"\x4f")[:59]) == "ipv4.bad_ihl"
    assert _reason(_with(ECHO_PACKET, 0, b"\x46")[:23]) == "ipv4.bad_ihl"


@pytest.mark.parametrize("total", [0, 1, 19, 85, 0xFFFF])
def test_bad_total_length(total):
    assert _reason(_with(ECHO_PACKET, 2, total.to_bytes(2, "big")), verify_checksum=False) == \
        "ipv4.bad_total_length"


def test_total_length_smaller_than_ihl():
    # IHL 6 (24 bytes) but total_length 22.
    assert _reason(_with(_with(ECHO_PACKET, 0, b"\x46"), 2, b"\x00\x16"), verify_checksum=False) == \
        "ipv4.bad_total_length"


def test_truncated_payload_is_bad_total_length():
    assert _reason(ECHO_PACKET[:-1]) == "ipv4.bad_total_length"
    assert _reason(ECHO_PACKET[:20]) == "ipv4.bad_total_length"


@pytest.mark.parametrize("offset", range(20))
def test_any_header_bit_flip_breaks_checksum_or_structure(offset):
    bad = _with(ECHO_PACKET, offset, bytes((ECHO_PACKET[offset] ^ 0x01,)))
    with pytest.raises(MalformedPacket):
        Ipv4Header.parse(bad)


def test_bad_checksum_and_opt_out():
    bad = _with(ECHO_PACKET, 10, b"\x00\x00")
    assert _reason(bad) == "ipv4.bad_checksum"
    assert Ipv4Header.parse(bad, verify_checksum=False).checksum == 0


def test_build_header_limits():
    assert len(build_header(GUEST, GW, 6, 65535 - 20)) == 20
    with pytest.raises(ValueError):
        build_header(GUEST, GW, 6, 65535 - 19)
    with pytest.raises(ValueError):
        build_header(GUEST, b"\x01\x02\x03", 6, 0)


def test_pack_rejects_inconsistent_header_len():
    with pytest.raises(ValueError):
        Ipv4Header(24, 0, 24, 0, 0, 64, 6, 0, GUEST, GW).pack()
    with pytest.raises(ValueError):
        Ipv4Header(23, 0, 24, 0, 0, 64, 6, 0, GUEST, GW, b"\x01\x01\x01").pack()


u8 = st.integers(0, 255)
u16 = st.integers(0, 0xFFFF)
addrs = st.binary(min_size=4, max_size=4)


@SETTINGS
@given(addrs, addrs, u8, st.integers(0, 65515), u16, u8, u8, st.booleans())
def test_build_header_matches_reference(src, dst, proto, plen, ident, ttl, tos, df):
    raw = build_header(src, dst, proto, plen, ident=ident, ttl=ttl, tos=tos, df=df)
    assert sum16(raw) == 0xFFFF
    h = Ipv4Header.parse(raw + bytes(plen))
    assert (h.src, h.dst, h.proto, h.total_length, h.ident, h.ttl, h.tos, h.dont_fragment) == (
        src, dst, proto, plen + 20, ident, ttl, tos, df)
    assert h.with_checksum() == h
    assert h.pack() == raw


@st.composite
def headers(draw):
    opt_words = draw(st.integers(0, 10))
    options = draw(st.binary(min_size=4 * opt_words, max_size=4 * opt_words))
    hlen = 20 + len(options)
    total = draw(st.integers(hlen, hlen + 64))
    h = Ipv4Header(hlen, draw(u8), total, draw(u16), draw(u16), draw(u8), draw(u8), 0,
                   draw(addrs), draw(addrs), options)
    return h.with_checksum()


@SETTINGS
@given(headers(), st.binary(max_size=32))
def test_roundtrip(h, trailer):
    raw = h.pack()
    buf = raw + bytes(h.total_length - h.header_len) + trailer
    assert Ipv4Header.parse(buf) == h
    assert Ipv4Header.parse(memoryview(buf)) == h


@SETTINGS
@given(st.binary(min_size=20, max_size=20), st.integers(0, 40), st.booleans())
def test_checksum_verdict_without_options_is_rfc1071s(raw, extra, fix):
    """parse_fields sums an option-less header from its unpacked fields; the verdict must be
    that of summing its 20 bytes (sum16), for right and wrong checksums alike."""
    hdr = bytearray(raw)
    hdr[0] = 0x45
    hdr[2:4] = (20 + extra).to_bytes(2, "big")
    if fix:
        hdr[10:12] = b"\0\0"
        hdr[10:12] = (~sum16(bytes(hdr)) & 0xFFFF).to_bytes(2, "big")
    buf = bytes(hdr) + bytes(extra)
    if sum16(bytes(hdr)) == 0xFFFF:
        assert ipv4.parse_fields(buf)[0] == 20
    else:
        with pytest.raises(MalformedPacket, match="ipv4.bad_checksum"):
            ipv4.parse_fields(buf)
    assert ipv4.parse_fields(buf, verify_checksum=False)[2] == 20 + extra
