"""Every parser, on any bytes, either returns a header or raises MalformedPacket -- nothing else.

Inputs: plain random bytes, and mutated/truncated/extended real packets (so that the deeper
validation paths are reached, not only the length checks). When a parse succeeds, re-emitting
the header must give back exactly the bytes it came from.
"""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from slirpy.tcpip.wire.arp import ArpPacket
from slirpy.tcpip.errors import MalformedPacket
from slirpy.tcpip.wire.ethernet import EthernetHeader
from slirpy.tcpip.wire.icmp import IcmpHeader, build_echo_reply
from slirpy.tcpip.wire.ipv4 import Ipv4Header
from slirpy.tcpip.wire.tcp import TCP_HDR, TcpOptions, TcpSegment
from slirpy.tcpip.wire.udp import UdpHeader
from slirpy.tcpip.wire.virtio import VirtioNetHeader

SETTINGS = settings(database=None, max_examples=300)

A = bytes((10, 0, 2, 100))
B = bytes((203, 0, 113, 1))
DNS = bytes((10, 0, 2, 3))

# Real packets (scapy 2.6), the same as in the per-protocol tests.
VNET = bytes.fromhex("01014200a805220010000000")
ARP_FRAME = bytes.fromhex(
    "ffffffffffff020000000002080600010800060400010200000000020a0002640000000000000a000202")
SYN = bytes.fromhex(
    "c82201bbfffffff000000000a002faf0c3410000020405b40402080aaabbccdd0000000001030307")
SACK_OPTS = bytes.fromhex("0101080a00000001000000020101051a000000640000"
                          "00c8ffffff00000000100000000500000006")
IP_ECHO = bytes.fromhex(
    "4500005404d2400040011d720a0002640a0002020800e4c01c2b0001000102030405060708090a0b0c0d0e0f"
    "101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f3031323334353637")
DNS_QUERY = bytes.fromhex(
    "cf08003500259cc4abcd01000001000000000000076578616d706c6503636f6d0000010001")
SEEDS = [VNET, ARP_FRAME, ARP_FRAME[14:], SYN, SACK_OPTS, IP_ECHO, IP_ECHO[20:], DNS_QUERY]


@st.composite
def mutated(draw, seeds=tuple(SEEDS)):
    """A real packet with a few bytes overwritten, then maybe cut or extended.

    Each step is often skipped, so that a good share of inputs still parse and the
    re-emission checks below are exercised, not only the error paths.
    """
    buf = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.sampled_from((0, 0, 1, 2, 4)))):
        if buf:
            buf[draw(st.integers(0, len(buf) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        del buf[draw(st.integers(0, len(buf))):]
    if draw(st.booleans()):
        buf += draw(st.binary(max_size=8))
    return bytes(buf)


def inputs_for(*seeds):
    return st.binary(max_size=120) | mutated(seeds) | mutated()


inputs = inputs_for(*SEEDS)


def only_malformed(fn, buf):
    try:
        return fn(buf)
    except MalformedPacket as e:
        assert e.reason and "." in e.reason
        return None


@SETTINGS
@given(inputs_for(VNET))
def test_virtio(buf):
    h = only_malformed(VirtioNetHeader.parse, buf)
    if h is not None:
        assert h.pack() == buf[:12]


@SETTINGS
@given(inputs)
def test_ethernet(buf):
    h = only_malformed(EthernetHeader.parse, buf)
    if h is not None:
        assert h.pack() == buf[:14]


@SETTINGS
@given(inputs_for(ARP_FRAME[14:]))
def test_arp(buf):
    p = only_malformed(ArpPacket.parse, buf)
    if p is not None:
        assert p.pack() == buf[:28]
    only_malformed(ArpPacket.parse, memoryview(buf)[14:])


@SETTINGS
@given(inputs_for(IP_ECHO), st.booleans())
def test_ipv4(buf, verify):
    h = only_malformed(lambda b: Ipv4Header.parse(b, verify_checksum=verify), buf)
    if h is not None:
        assert h.pack() == buf[:h.header_len]
        assert h.header_len <= h.total_length <= len(buf)
    only_malformed(Ipv4Header.parse, memoryview(buf))


@SETTINGS
@given(inputs_for(IP_ECHO[20:]), st.booleans())
def test_icmp(buf, verify):
    h = only_malformed(lambda b: IcmpHeader.parse(b, verify_checksum=verify), buf)
    if h is not None:
        assert h.pack() == buf[:8]
        assert 0 <= h.ident <= 0xFFFF and 0 <= h.sequence <= 0xFFFF
    reply = only_malformed(build_echo_reply, buf)
    if reply is not None:
        assert IcmpHeader.parse(reply).type == 0


@SETTINGS
@given(inputs_for(DNS_QUERY), st.booleans())
def test_udp(buf, verify):
    h = only_malformed(lambda b: UdpHeader.parse(b, A, DNS, verify_checksum=verify), buf)
    if h is not None:
        assert h.pack() == buf[:8]
        assert 8 <= h.length <= len(buf)


@SETTINGS
@given(inputs_for(SYN), st.booleans())
def test_tcp_segment(buf, verify):
    seg = only_malformed(lambda b: TcpSegment.parse(memoryview(b), A, B, verify_checksum=verify), buf)
    if seg is not None:
        fields = TCP_HDR.unpack_from(buf)
        assert (seg.src_port, seg.dst_port, seg.seq, seg.ack, seg.flags, seg.window, seg.urgent) == \
            fields[:4] + fields[5:7] + fields[8:]
        assert len(buf) - len(seg.payload) == (buf[12] >> 4) * 4


@SETTINGS
@given(inputs_for(SACK_OPTS, SYN[20:]))
def test_tcp_options(buf):
    opts = only_malformed(TcpOptions.parse, buf)
    if opts is not None:
        assert opts.mss is None or 0 <= opts.mss <= 0xFFFF
        assert len(opts.sack_blocks) <= 5


def test_seeds_parse():
    # The mutation seeds themselves are valid: the fuzzers start from packets that parse.
    assert VirtioNetHeader.parse(VNET)
    assert ArpPacket.parse(ARP_FRAME[14:])
    assert TcpSegment.parse(memoryview(SYN), A, B, verify_checksum=True)
    assert TcpOptions.parse(SACK_OPTS).sack_blocks
    assert Ipv4Header.parse(IP_ECHO) and IcmpHeader.parse(IP_ECHO[20:])
    assert UdpHeader.parse(DNS_QUERY, A, DNS, verify_checksum=True)


def test_every_truncation_of_every_seed():
    parsers = [VirtioNetHeader.parse, EthernetHeader.parse, ArpPacket.parse, Ipv4Header.parse,
               IcmpHeader.parse, lambda b: UdpHeader.parse(b, A, B, True),
               lambda b: TcpSegment.parse(memoryview(b), A, B, True), TcpOptions.parse]
    for seed in SEEDS:
        for n in range(len(seed) + 1):
            for parse in parsers:
                only_malformed(parse, seed[:n])
