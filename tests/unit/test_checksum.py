"""Internet checksum (RFC 1071) against a plain word-loop reference."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings, strategies as st

from slirpy.tcpip.checksum import finish, internet_checksum, pseudo_header_sum, sum16
from slirpy.tcpip.wire import icmpv6, ipv4, udp
from slirpy.tcpip.wire import tcp

SETTINGS = settings(database=None, deadline=None, max_examples=400)


def ref_sum16(data: bytes, initial: int = 0) -> int:
    """RFC 1071 §4.1, literally: add 16-bit words, fold carries back in."""
    if len(data) % 2:
        data = bytes(data) + b"\0"
    total = initial
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
        while total > 0xFFFF:
            total = (total & 0xFFFF) + (total >> 16)
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def ref_checksum(data: bytes) -> int:
    return ~ref_sum16(data) & 0xFFFF


def test_rfc1071_example():
    # RFC 1071 §3: bytes 00 01 f2 03 f4 f5 f6 f7 sum to ddf2 (one's complement, folded).
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert sum16(data) == 0xDDF2
    assert internet_checksum(data) == 0x220D


def test_known_ipv4_header_checksum():
    # Classic example header (checksum field zeroed); its checksum is b861.
    hdr = bytes.fromhex("450000730000400040110000c0a80001c0a800c7")
    assert internet_checksum(hdr) == 0xB861
    assert sum16(hdr[:10] + b"\xb8\x61" + hdr[12:]) == 0xFFFF


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 20, 1499, 1500, 65535])
def test_all_zero(n):
    assert sum16(bytes(n)) == 0
    assert internet_checksum(bytes(n)) == 0xFFFF
    assert ref_sum16(bytes(n)) == 0


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 20, 1499, 1500])
def test_all_ff(n):
    data = b"\xff" * n
    assert sum16(data) == ref_sum16(data)
    assert internet_checksum(data) == ref_checksum(data)


def test_odd_length_pads_with_zero_byte():
    assert sum16(b"\xab") == 0xAB00
    assert sum16(b"\x12\x34\x56") == 0x1234 + 0x5600
    assert sum16(b"\x12\x34\x56") == sum16(b"\x12\x34\x56\x00")


def test_negative_zero_is_ffff_not_zero():
    # Nonzero words summing to 0xFFFF stay 0xFFFF (one's complement "-0" never folds to +0).
    assert sum16(b"\x80\x00\x7f\xff") == 0xFFFF
    assert sum16(b"\xff\xff") == 0xFFFF
    assert sum16(b"\xff\xff\xff\xff") == 0xFFFF
    assert sum16(b"", 0xFFFF) == 0xFFFF
    assert finish(0xFFFF) == 0


@SETTINGS
@given(st.binary(max_size=3000), st.integers(0, 0xFFFF))
def test_matches_reference(data, initial):
    assert sum16(data, initial) == ref_sum16(data, initial)
    assert sum16(memoryview(data), initial) == ref_sum16(data, initial)
    assert sum16(bytearray(data), initial) == ref_sum16(data, initial)


@SETTINGS
@given(st.binary(max_size=200), st.binary(max_size=200))
def test_incremental_sum_even_split(a, b):
    if len(a) % 2:
        a = a[:-1]
    assert sum16(b, sum16(a)) == ref_sum16(a + b)


@SETTINGS
@given(st.binary(min_size=4, max_size=4), st.binary(min_size=4, max_size=4),
       st.integers(0, 255), st.integers(0, 0xFFFF))
def test_pseudo_header_matches_reference(src, dst, proto, length):
    ref = ref_sum16(src + dst + bytes((0, proto)) + struct.pack("!H", length))
    assert pseudo_header_sum(src, dst, proto, length) == ref


def test_pseudo_header_oversized_length_does_not_raise():
    # 2**16 == 1 (mod 0xFFFF): the sum of a 65536-byte length equals the sum of length 1.
    s, d = b"\x0a\x00\x02\x64", b"\x0a\x00\x02\x02"
    assert pseudo_header_sum(s, d, 6, 0x10000) == pseudo_header_sum(s, d, 6, 1)


def test_pseudo_header_rejects_bad_address_length():
    with pytest.raises(ValueError):
        pseudo_header_sum(b"", b"\0\0\0\0", 6, 20)
    for src, dst in ((bytes(4), bytes(16)), (bytes(16), bytes(4)), (bytes(8), bytes(8)),
                     (bytes(15), bytes(16)), (bytes(17), bytes(17))):
        with pytest.raises(ValueError):
            pseudo_header_sum(src, dst, 6, 20)


def ref_pseudo6(src: bytes, dst: bytes, next_header: int, length: int) -> bytes:
    """RFC 8200 §8.1, literally: source, destination, 32-bit upper-layer packet length,
    24 zero bits, next header."""
    return src + dst + struct.pack("!I", length) + bytes(3) + bytes((next_header,))


@SETTINGS
@given(st.binary(min_size=16, max_size=16), st.binary(min_size=16, max_size=16),
       st.integers(0, 255), st.integers(0, 0xFFFFFFFF))
def test_pseudo_header_v6_matches_reference(src, dst, proto, length):
    assert pseudo_header_sum(src, dst, proto, length) == ref_sum16(ref_pseudo6(src, dst, proto, length))


def test_pseudo_header_v6_known_value():
    # fe80::1 -> ff02::1, ICMPv6, 32 bytes: words fe80 + 0001 + ff02 + 0001 + 0020 + 003a
    src = bytes.fromhex("fe800000000000000000000000000001")
    dst = bytes.fromhex("ff020000000000000000000000000001")
    assert pseudo_header_sum(src, dst, 58, 32) == ref_sum16(bytes.fromhex(
        "fe80 0001 ff02 0001 0020 003a".replace(" ", ""))) == (0xFE80 + 1 + 0xFF02 + 1 + 0x20 + 0x3A) % 0xFFFF


SRC6 = bytes.fromhex("fd000000000000000000000000000100")
DST6 = bytes.fromhex("20010db8000000000000000000000001")


@SETTINGS
@given(st.binary(max_size=1400), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))
def test_checksummed_ipv6_packets_sum_to_ffff(payload, sport, dport):
    """UDP, TCP and ICMPv6 over IPv6 checksum to the literal RFC 8200 §8.1 pseudo-header."""
    udp_msg = udp.build_datagram(SRC6, DST6, sport, dport, payload)
    assert ref_sum16(ref_pseudo6(SRC6, DST6, 17, len(udp_msg)) + udp_msg) == 0xFFFF
    seg = tcp.TcpSegment(sport, dport, 1, 2, tcp.ACK | tcp.PSH, 1000, payload=payload).pack(SRC6, DST6)
    assert ref_sum16(ref_pseudo6(SRC6, DST6, 6, len(seg)) + seg) == 0xFFFF
    msg = icmpv6.build_message(SRC6, DST6, icmpv6.ECHO_REQUEST, 0, sport.to_bytes(4, "big"), payload)
    assert ref_sum16(ref_pseudo6(SRC6, DST6, 58, len(msg)) + msg) == 0xFFFF


SRC = bytes((10, 0, 2, 100))
DST = bytes((203, 0, 113, 1))


@SETTINGS
@given(st.binary(max_size=1400), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))
def test_checksummed_packets_sum_to_ffff(payload, sport, dport):
    udp_msg = udp.build_datagram(SRC, DST, sport, dport, payload)
    assert sum16(udp_msg, pseudo_header_sum(SRC, DST, 17, len(udp_msg))) == 0xFFFF
    ip_hdr = ipv4.build_header(SRC, DST, ipv4.PROTO_UDP, len(udp_msg), ident=sport)
    assert sum16(ip_hdr) == 0xFFFF
    seg = tcp.TcpSegment(sport, dport, 1, 2, tcp.ACK | tcp.PSH, 1000, payload=payload).pack(SRC, DST)
    assert sum16(seg, pseudo_header_sum(SRC, DST, 6, len(seg))) == 0xFFFF
    assert ref_sum16(SRC + DST + bytes((0, 6)) + struct.pack("!H", len(seg)) + seg) == 0xFFFF
