"""UDP: golden DNS query (scapy), checksum rules, lengths, round trips."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from slirpy.tcpip.checksum import pseudo_header_sum, sum16
from slirpy.tcpip.errors import MalformedPacket
from slirpy.tcpip.wire.udp import UDP_HLEN, UdpHeader, build_datagram

SETTINGS = settings(database=None)

GUEST = bytes((10, 0, 2, 100))
DNS = bytes((10, 0, 2, 3))
# scapy 2.6: UDP(53000 -> 53)/DNS(id=0xabcd, rd=1, qd=DNSQR("a.test", A)), from 10.0.2.100 to 10.0.2.3
DNS_QUERY = bytes.fromhex(
    "cf08003500208bf0abcd01000001000000000000016104746573740000010001"
)
# scapy: UDP(1234 -> 53)/b"\x00\x00\xe2\x68" from 10.0.2.100 to 10.0.2.3: its checksum computes
# to 0 and is sent as ffff (RFC 768).
ZERO_SUM = bytes.fromhex("04d20035000cffff0000e268")


def test_golden_dns_query():
    h = UdpHeader.parse(DNS_QUERY, GUEST, DNS, verify_checksum=True)
    assert h == UdpHeader(53000, 53, 32, 0x8BF0)
    assert h.length == len(DNS_QUERY)
    assert h.pack() == DNS_QUERY[:8]
    assert build_datagram(GUEST, DNS, 53000, 53, DNS_QUERY[8:]) == DNS_QUERY
    assert DNS_QUERY[8:h.length][12:20] == b"\x01a\x04test\x00"


def test_computed_zero_checksum_sent_as_ffff():
    assert build_datagram(GUEST, DNS, 1234, 53, ZERO_SUM[8:]) == ZERO_SUM
    assert UdpHeader.parse(ZERO_SUM, GUEST, DNS, verify_checksum=True).checksum == 0xFFFF


def test_no_checksum():
    raw = build_datagram(GUEST, DNS, 1, 2, b"abc", checksum=False)
    assert raw == bytes.fromhex("00010002000b0000616263")
    # A zero checksum is "none": accepted even when verifying, whatever the addresses.
    assert UdpHeader.parse(raw, GUEST, DNS, verify_checksum=True).checksum == 0


def test_bad_checksum():
    bad = bytearray(DNS_QUERY)
    bad[-1] ^= 1
    with pytest.raises(MalformedPacket) as e:
        UdpHeader.parse(bad, GUEST, DNS, verify_checksum=True)
    assert e.value.reason == "udp.bad_checksum"
    assert UdpHeader.parse(bad).length == 32           # not verified by default
    with pytest.raises(MalformedPacket):
        UdpHeader.parse(DNS_QUERY, GUEST, bytes((10, 0, 2, 4)), verify_checksum=True)


def test_trailing_bytes_after_length_ignored_by_checksum():
    h = UdpHeader.parse(DNS_QUERY + b"\x99\x98\x97", GUEST, DNS, verify_checksum=True)
    assert h.length == 32


@pytest.mark.parametrize("n", range(8))
def test_short(n):
    with pytest.raises(MalformedPacket) as e:
        UdpHeader.parse(DNS_QUERY[:n])
    assert e.value.reason == "udp.short"


@pytest.mark.parametrize("length", [0, 1, 7, 38, 0xFFFF])
def test_bad_length(length):
    bad = bytearray(DNS_QUERY)
    bad[4:6] = length.to_bytes(2, "big")
    with pytest.raises(MalformedPacket) as e:
        UdpHeader.parse(bad)
    assert e.value.reason == "udp.bad_length"


def test_truncated_is_bad_length():
    for n in range(8, len(DNS_QUERY)):
        with pytest.raises(MalformedPacket) as e:
            UdpHeader.parse(DNS_QUERY[:n])
        assert e.value.reason == "udp.bad_length"


def test_build_datagram_too_big():
    assert len(build_datagram(GUEST, DNS, 1, 2, bytes(0xFFFF - 8))) == 0xFFFF
    with pytest.raises(ValueError):
        build_datagram(GUEST, DNS, 1, 2, bytes(0xFFFF - 7))


u16 = st.integers(0, 0xFFFF)
addrs = st.binary(min_size=4, max_size=4)


@SETTINGS
@given(addrs, addrs, u16, u16, st.binary(max_size=1500), st.booleans())
def test_roundtrip(src, dst, sport, dport, payload, checksum):
    raw = build_datagram(src, dst, sport, dport, payload, checksum=checksum)
    h = UdpHeader.parse(raw, src, dst, verify_checksum=True)
    assert (h.src_port, h.dst_port, h.length) == (sport, dport, len(payload) + UDP_HLEN)
    assert raw[8:h.length] == payload
    if checksum:
        assert h.checksum != 0
        assert sum16(raw, pseudo_header_sum(src, dst, 17, len(raw))) == 0xFFFF
    else:
        assert h.checksum == 0
    assert UdpHeader.parse(h.pack() + bytes(payload)) == h
