"""TCP header and options: golden Linux-layout segments (scapy), option edge cases, round trips."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings, strategies as st

from slirpy.tcpip.wire import tcp
from slirpy.tcpip.checksum import pseudo_header_sum, sum16
from slirpy.tcpip.errors import MalformedPacket
from slirpy.tcpip.wire.ipv4 import Ipv4Header
from slirpy.tcpip.wire.tcp import TcpOptions, TcpSegment, build_header

SETTINGS = settings(database=None)

GUEST = bytes((10, 0, 2, 100))
PEER = bytes((203, 0, 113, 1))
# scapy 2.6: Ether/IP(10.0.2.100 -> 203.0.113.1, id=0xbeef, DF)/TCP(51234 -> 443, S, seq=0xfffffff0,
# win=64240, options MSS 1460, SAckOK, TS(0xaabbccdd, 0), NOP, WScale 7) -- Linux's SYN layout.
SYN_FRAME = bytes.fromhex(
    "52550a00020202000000000208004500003cbeef4000400633670a000264cb007101c82201bbfffffff000000000"
    "a002faf0c3410000020405b40402080aaabbccdd0000000001030307"
)
# scapy: IP(203.0.113.1 -> 10.0.2.100, DF)/TCP(443 -> 51234, PA, seq=1, ack=0xfffffff1, win=502,
# options NOP NOP TS(7, 0xaabbccdd))/"hello, guest\n" -- Linux's data-segment layout.
DATA_PACKET = bytes.fromhex(
    "45000041000040004006f251cb0071010a00026401bbc82200000001fffffff1801801f6939c00000101080a0000"
    "0007aabbccdd68656c6c6f2c2067756573740a"
)
SYN = SYN_FRAME[34:]
DATA = DATA_PACKET[20:]


def test_golden_syn():
    ip = Ipv4Header.parse(SYN_FRAME[14:])
    seg = TcpSegment.parse(memoryview(SYN_FRAME)[34:ip.total_length + 14], ip.src, ip.dst, verify_checksum=True)
    assert (seg.src_port, seg.dst_port, seg.seq, seg.ack, seg.flags, seg.window, seg.urgent) == (
        51234, 443, 0xFFFFFFF0, 0, tcp.SYN, 64240, 0)
    assert seg.options == TcpOptions(mss=1460, wscale=7, sack_permitted=True, timestamp=(0xAABBCCDD, 0))
    assert len(seg.payload) == 0 and seg.seg_len == 1
    assert seg.options.pack() == SYN[20:40]
    assert seg.pack(GUEST, PEER) == SYN
    assert build_header(51234, 443, 0xFFFFFFF0, 0, tcp.SYN, 64240, seg.options.pack(), 0xC341) == SYN


def test_golden_data_segment():
    seg = TcpSegment.parse(memoryview(DATA), PEER, GUEST, verify_checksum=True)
    assert (seg.src_port, seg.dst_port, seg.seq, seg.ack, seg.flags, seg.window) == (
        443, 51234, 1, 0xFFFFFFF1, tcp.PSH | tcp.ACK, 502)
    assert seg.options == TcpOptions(timestamp=(7, 0xAABBCCDD))
    assert bytes(seg.payload) == b"hello, guest\n" and seg.seg_len == 13
    assert isinstance(seg.payload, memoryview)
    assert seg.options.pack() == DATA[20:32]     # NOP NOP TS, as Linux lays it out
    assert seg.pack(PEER, GUEST) == DATA


def test_pack_without_addresses_leaves_checksum_zero():
    seg = TcpSegment.parse(DATA)
    assert seg.pack()[16:18] == b"\0\0"
    assert seg.pack()[18:] == DATA[18:]


def test_seg_len_counts_syn_and_fin():
    assert TcpSegment(1, 2, 0, 0, tcp.SYN | tcp.FIN, 0, payload=b"ab").seg_len == 4
    assert TcpSegment(1, 2, 0, 0, tcp.ACK, 0).seg_len == 0
    assert TcpSegment(1, 2, 0, 0, tcp.FIN | tcp.ACK, 0).seg_len == 1


def test_bad_checksum():
    # Swapping src/dst cannot change a one's-complement sum; a different address does.
    TcpSegment.parse(memoryview(DATA), GUEST, PEER, verify_checksum=True)
    with pytest.raises(MalformedPacket) as e:
        TcpSegment.parse(memoryview(DATA), PEER, bytes((10, 0, 2, 101)), verify_checksum=True)
    assert e.value.reason == "tcp.bad_checksum"
    bad = bytearray(DATA)
    bad[-1] ^= 0x20
    with pytest.raises(MalformedPacket) as e:
        TcpSegment.parse(memoryview(bad), PEER, GUEST, verify_checksum=True)
    assert e.value.reason == "tcp.bad_checksum"
    assert TcpSegment.parse(memoryview(bad)).payload[-1] == ord("\n") ^ 0x20


@pytest.mark.parametrize("n", range(20))
def test_short(n):
    with pytest.raises(MalformedPacket) as e:
        TcpSegment.parse(memoryview(SYN[:n]))
    assert e.value.reason == "tcp.short"


@pytest.mark.parametrize("doff", [0, 1, 4, 11, 15])
def test_bad_data_offset(doff):
    bad = bytearray(SYN)             # 40-byte header: offsets 0..4 are too small, 11..15 too big
    bad[12] = doff << 4
    with pytest.raises(MalformedPacket) as e:
        TcpSegment.parse(memoryview(bad))
    assert e.value.reason == "tcp.bad_data_offset"


def test_truncated_options_are_bad_data_offset():
    for n in range(20, 40):
        with pytest.raises(MalformedPacket) as e:
            TcpSegment.parse(memoryview(SYN[:n]))
        assert e.value.reason == "tcp.bad_data_offset"


def test_oversized_buffer_checksum_does_not_raise_struct_error():
    big = build_header(1, 2, 0, 0, tcp.ACK, 0) + bytes(70000)
    with pytest.raises(MalformedPacket) as e:
        TcpSegment.parse(memoryview(big), GUEST, PEER, verify_checksum=True)
    assert e.value.reason == "tcp.bad_checksum"


# ---------------------------------------------------------------- options

@pytest.mark.parametrize("raw", [
    "0204",                 # MSS cut short
    "020305b4",             # MSS with length 3
    "02",                   # kind without a length byte
    "0300",                 # length 0
    "0301",                 # length 1
    "030207",               # wscale length 2
    "04030000",             # SACK-permitted length 3
    "080800000000000000",   # TS length 8
    "0502",                 # empty SACK
    "050a00000001000000",   # SACK of one block, cut one byte short
    "050c000000010000000200",   # SACK length 12: not 2 + 8n
    "1e0a0000",             # unknown kind whose length runs past the end
])
def test_bad_options(raw):
    data = bytes.fromhex(raw)
    with pytest.raises(MalformedPacket) as e:
        TcpOptions.parse(data)
    assert e.value.reason == "tcp.bad_option"


def test_options_unknown_kind_skipped_and_end_stops():
    data = bytes.fromhex("1e04abcd" "020405b4" "00" "0303ff")   # after END: garbage ignored
    assert TcpOptions.parse(data) == TcpOptions(mss=1460)
    assert TcpOptions.parse(b"\x01" * 40) == TcpOptions()
    assert TcpOptions.parse(b"") == TcpOptions()


def test_options_sack_blocks():
    opts = TcpOptions(timestamp=(1, 2), sack_blocks=((100, 200), (0xFFFFFF00, 16), (5, 6)))
    raw = opts.pack()
    assert len(raw) == 40
    assert raw[:12] == bytes.fromhex("0101080a0000000100000002")
    assert raw[12:16] == bytes.fromhex("0101051a")
    assert TcpOptions.parse(raw) == opts


def test_options_too_long():
    with pytest.raises(ValueError):
        TcpOptions(timestamp=(1, 2), sack_blocks=((1, 2),) * 4).pack()
    assert len(TcpOptions(sack_blocks=((1, 2),) * 4).pack()) == 36


def test_options_alignment():
    assert TcpOptions(sack_permitted=True).pack() == bytes.fromhex("01010402")
    assert TcpOptions(mss=536).pack() == bytes.fromhex("02040218")
    assert TcpOptions(wscale=14).pack() == bytes.fromhex("0103030e")
    assert TcpOptions(mss=1460, wscale=0).pack() == bytes.fromhex("020405b4" "01030300")
    assert TcpOptions().pack() == b""


def test_build_header_rejects_unpadded_options():
    with pytest.raises(ValueError):
        build_header(1, 2, 0, 0, tcp.SYN, 0, b"\x02\x04\x05")
    with pytest.raises(ValueError):
        build_header(1, 2, 0, 0, tcp.SYN, 0, bytes(44))


u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
options = st.builds(
    TcpOptions,
    mss=st.none() | u16,
    wscale=st.none() | st.integers(0, 255),
    sack_permitted=st.booleans(),
    timestamp=st.none() | st.tuples(u32, u32),
    sack_blocks=st.lists(st.tuples(u32, u32), max_size=4).map(tuple),
)


def _packable(o: TcpOptions) -> bytes | None:
    try:
        return o.pack()
    except ValueError:
        return None


@SETTINGS
@given(options)
def test_options_roundtrip(o):
    raw = _packable(o)
    assume(raw is not None)
    assert len(raw) % 4 == 0 and len(raw) <= 40
    assert TcpOptions.parse(raw) == o
    assert TcpOptions.parse(memoryview(raw)) == o


@SETTINGS
@given(u16, u16, u32, u32, st.integers(0, 255), u16, u16, options, st.binary(max_size=200),
       st.binary(min_size=4, max_size=4), st.binary(min_size=4, max_size=4))
def test_segment_roundtrip(sport, dport, seq, ack, flags, window, urgent, opts, payload, src, dst):
    assume(_packable(opts) is not None)
    seg = TcpSegment(sport, dport, seq, ack, flags, window, urgent, opts, payload)
    raw = seg.pack(src, dst)
    assert sum16(raw, pseudo_header_sum(src, dst, 6, len(raw))) == 0xFFFF
    back = TcpSegment.parse(memoryview(raw), src, dst, verify_checksum=True)
    assert back == seg
    assert bytes(back.payload) == payload
