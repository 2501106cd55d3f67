"""ICMPv4: golden echo and error messages (built by scapy), quoting limits, round trips."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from slirpy.tcpip.wire import icmp, ipv4
from slirpy.tcpip.checksum import sum16
from slirpy.tcpip.errors import MalformedPacket
from slirpy.tcpip.wire.icmp import (
    IcmpHeader, build_dest_unreachable, build_echo_reply, build_message, build_time_exceeded,
)

SETTINGS = settings(database=None)

# scapy 2.6: IP(10.0.2.100 -> 10.0.2.2, id=0x4d2, DF)/ICMP(echo-request, id=0x1c2b, seq=1)/bytes(range(56))
ECHO_PACKET = bytes.fromhex(
    "4500005404d2400040011d720a0002640a0002020800e4c01c2b0001000102030405060708090a0b0c0d0e0f"
    "101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f3031323334353637"
)
ECHO_REQUEST = ECHO_PACKET[20:]
# scapy: ICMP(type=0, id=0x1c2b, seq=1)/bytes(range(56))
ECHO_REPLY = bytes.fromhex(
    "0000ecc01c2b0001000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f2021222324"
    "25262728292a2b2c2d2e2f3031323334353637"
)
# scapy: IP(10.0.2.100 -> 10.0.2.2, id=7)/UDP(1000 -> 9)/"xxxxx", and the errors quoting it.
ORIGINAL = bytes.fromhex("4500002100070000401162600a0002640a00020203e80009000d7a8c7878787878")
PORT_UNREACH = bytes.fromhex("03031581000000004500002100070000401162600a0002640a00020203e80009000d7a8c7878787878")
FRAG_NEEDED = bytes.fromhex("03041008000005784500002100070000401162600a0002640a00020203e80009000d7a8c7878787878")
TTL_EXCEEDED = bytes.fromhex("0b000d84000000004500002100070000401162600a0002640a00020203e80009000d7a8c7878787878")


def test_golden_echo_request():
    h = IcmpHeader.parse(ECHO_REQUEST)
    assert (h.type, h.code, h.checksum, h.ident, h.sequence) == (icmp.ECHO_REQUEST, 0, 0xE4C0, 0x1C2B, 1)
    assert h.rest == bytes.fromhex("1c2b0001")
    assert h.pack() == ECHO_REQUEST[:8]
    assert build_message(icmp.ECHO_REQUEST, 0, h.rest, ECHO_REQUEST[8:]) == ECHO_REQUEST


def test_golden_echo_reply():
    assert build_echo_reply(ECHO_REQUEST) == ECHO_REPLY
    assert build_echo_reply(memoryview(ECHO_PACKET)[20:]) == ECHO_REPLY
    h = IcmpHeader.parse(ECHO_REPLY)
    assert (h.type, h.ident, h.sequence) == (icmp.ECHO_REPLY, 0x1C2B, 1)


def test_echo_reply_to_short_request():
    with pytest.raises(MalformedPacket):
        build_echo_reply(ECHO_REQUEST[:7])
    empty = build_message(icmp.ECHO_REQUEST, 0, b"\x00\x01\x00\x02")
    reply = build_echo_reply(empty)
    assert len(reply) == 8 and IcmpHeader.parse(reply).sequence == 2


@pytest.mark.parametrize("built,golden", [
    (lambda: build_dest_unreachable(icmp.UNREACH_PORT, ORIGINAL), PORT_UNREACH),
    (lambda: build_dest_unreachable(icmp.UNREACH_FRAG_NEEDED, ORIGINAL, next_hop_mtu=1400), FRAG_NEEDED),
    (lambda: build_time_exceeded(icmp.TTL_EXCEEDED_IN_TRANSIT, ORIGINAL), TTL_EXCEEDED),
])
def test_golden_errors(built, golden):
    assert built() == golden


def test_frag_needed_mtu_property_and_ignored_for_other_codes():
    assert IcmpHeader.parse(FRAG_NEEDED).next_hop_mtu == 1400
    assert build_dest_unreachable(icmp.UNREACH_HOST, ORIGINAL, next_hop_mtu=1400)[4:8] == bytes(4)


def test_error_quote_drops_link_padding():
    assert build_dest_unreachable(icmp.UNREACH_PORT, ORIGINAL + bytes(13)) == PORT_UNREACH


def test_error_quote_capped_at_576_byte_packet():
    udp_payload = bytes(range(256)) * 8
    big = ipv4.build_header(b"\x0a\x00\x02\x64", b"\x0a\x00\x02\x02", 17, 8 + len(udp_payload)) \
        + bytes(8) + udp_payload
    msg = build_dest_unreachable(icmp.UNREACH_PORT, big)
    assert 20 + len(msg) == icmp.ERROR_PACKET_MAX == 576
    assert msg[8:] == big[:548]
    assert sum16(msg) == 0xFFFF
    # At exactly 548 bytes nothing is cut; at 549 one byte is.
    assert build_time_exceeded(0, big[:548])[8:] == big[:548]
    assert build_time_exceeded(0, big[:549])[8:] == big[:548]


def test_is_error():
    assert icmp.is_error(icmp.DEST_UNREACH) and icmp.is_error(icmp.TIME_EXCEEDED)
    assert not icmp.is_error(icmp.ECHO_REQUEST) and not icmp.is_error(icmp.ECHO_REPLY)


@pytest.mark.parametrize("n", range(8))
def test_short(n):
    with pytest.raises(MalformedPacket) as e:
        IcmpHeader.parse(ECHO_REQUEST[:n])
    assert e.value.reason == "icmp.short"


@pytest.mark.parametrize("offset", [0, 1, 2, 3, 5, 8, 63])
def test_bad_checksum(offset):
    bad = bytearray(ECHO_REQUEST)
    bad[offset] ^= 0x10
    with pytest.raises(MalformedPacket) as e:
        IcmpHeader.parse(bad)
    assert e.value.reason == "icmp.bad_checksum"
    assert IcmpHeader.parse(bad, verify_checksum=False).type == bad[0]


def test_truncated_message_fails_checksum():
    with pytest.raises(MalformedPacket) as e:
        IcmpHeader.parse(ECHO_REQUEST[:-2])
    assert e.value.reason == "icmp.bad_checksum"


def test_build_message_rejects_bad_rest():
    with pytest.raises(ValueError):
        build_message(8, 0, b"\x00\x01", b"")


u8 = st.integers(0, 255)
rests = st.binary(min_size=4, max_size=4)


@SETTINGS
@given(u8, u8, rests, st.binary(max_size=600))
def test_roundtrip(t, code, rest, payload):
    msg = build_message(t, code, rest, payload)
    assert sum16(msg) == 0xFFFF
    h = IcmpHeader.parse(msg)
    assert (h.type, h.code, h.rest) == (t, code, rest)
    assert IcmpHeader.parse(h.pack() + bytes(payload)) == h
    assert msg[8:] == payload


@SETTINGS
@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.binary(max_size=300))
def test_echo_reply_property(ident, seq, data):
    req = build_message(icmp.ECHO_REQUEST, 0, ident.to_bytes(2, "big") + seq.to_bytes(2, "big"), data)
    reply = build_echo_reply(req)
    h = IcmpHeader.parse(reply)
    assert (h.type, h.code, h.ident, h.sequence) == (icmp.ECHO_REPLY, 0, ident, seq)
    assert reply[8:] == data


@SETTINGS
@given(st.binary(max_size=1200))
def test_errors_always_valid_and_bounded(original):
    for msg in (build_dest_unreachable(icmp.UNREACH_HOST, original), build_time_exceeded(0, original)):
        assert sum16(msg) == 0xFFFF
        assert 8 <= len(msg) <= 576 - 20
        assert original.startswith(msg[8:])
