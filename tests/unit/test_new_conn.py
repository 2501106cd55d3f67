"""What every new TCP connection computes, made cheaper with the same results: RFC 6528
initial sequence numbers (tcpip/tcp/iss.py), the SYN options packed without an object
(wire/tcp.py `syn_options`), the window scale in closed form (tcp/params.py `choose_wscale`)."""

from __future__ import annotations

import hashlib
import random
import struct

import pytest

from slirpy.tcpip.tcp.iss import IssGenerator
from slirpy.tcpip.tcp.params import MAX_WSCALE, choose_wscale
from slirpy.tcpip.wire.tcp import TcpOptions, syn_options

GUEST = bytes([10, 0, 2, 100])
PEER = bytes([10, 0, 2, 2])
GUEST6 = bytes.fromhex("fd000000000000000000000000000100")
PEER6 = bytes.fromhex("fd000000000000000000000000000002")


def _reference(secret: bytes, guest: bytes, gport: int, peer: bytes, pport: int) -> int:
    """The keyed BLAKE2s of the 4-tuple as a fresh MAC computes it (RFC 7693 keyed mode)."""
    data = guest + peer + struct.pack("!HH", gport, pport)
    return int.from_bytes(hashlib.blake2s(data, digest_size=4, key=secret).digest(), "big")


@pytest.mark.parametrize("guest,peer", [(GUEST, PEER), (GUEST6, PEER6)])
def test_offset_is_the_keyed_blake2s_of_the_tuple(guest: bytes, peer: bytes) -> None:
    rng = random.Random(7)
    for _ in range(50):
        secret = rng.randbytes(16)
        gen = IssGenerator(secret)
        gport, pport = rng.randrange(1, 65536), rng.randrange(1, 65536)
        assert gen.offset(guest, gport, peer, pport) == _reference(secret, guest, gport, peer,
                                                                     pport)
        # the copied keyed state is not consumed: the same tuple gives the same offset again
        assert gen.offset(guest, gport, peer, pport) == _reference(secret, guest, gport, peer,
                                                                     pport)


def test_keyed_another_secret_gives_unrelated_isns() -> None:
    a = IssGenerator(bytes(16))
    b = IssGenerator(bytes(15) + b"\x01")
    tuples = [(GUEST, 40000 + i, PEER, 80) for i in range(256)]
    same = sum(a.iss(*t, now=5.0) == b.iss(*t, now=5.0) for t in tuples)
    assert same <= 1                 # 32-bit outputs: a coincidence is ~2**-24 over 256 tuples
    # and the difference between the two keys' ISNs is not one constant (not a shifted clock)
    assert len({(a.iss(*t, now=5.0) - b.iss(*t, now=5.0)) & 0xFFFFFFFF for t in tuples}) > 250


def test_different_tuples_give_unrelated_isns() -> None:
    gen = IssGenerator(random.Random(1).randbytes(16))
    isns = [gen.iss(GUEST, 40000 + i, PEER, 80, now=3.0) for i in range(1000)]
    assert len(set(isns)) >= 999
    # neighbouring ports are not neighbouring sequence numbers (a PRF, not a counter)
    steps = {(isns[i + 1] - isns[i]) & 0xFFFFFFFF for i in range(len(isns) - 1)}
    assert len(steps) > 990
    # every bit of the 32 flips for some pair of neighbouring tuples, and the high bit is set
    # about half the time (a 1000-draw binomial: 500 +- 5 sigma)
    flipped = 0
    for i in range(len(isns) - 1):
        flipped |= isns[i] ^ isns[i + 1]
    assert flipped == 0xFFFFFFFF
    assert 420 < sum(x >> 31 for x in isns) < 580
    # the peer address and the peer port count as much as the guest port
    assert gen.iss(GUEST, 40000, PEER, 81, now=3.0) != gen.iss(GUEST, 40000, PEER, 80, now=3.0)
    assert gen.iss(GUEST, 40000, GUEST, 80, now=3.0) != gen.iss(GUEST, 40000, PEER, 80, now=3.0)


def test_isn_grows_with_the_4us_clock_for_one_tuple() -> None:
    gen = IssGenerator(random.Random(2).randbytes(16))
    base = gen.iss(GUEST, 40000, PEER, 80, now=0.0)
    assert base == gen.offset(GUEST, 40000, PEER, 80)
    assert gen.iss(GUEST, 40000, PEER, 80, now=1.0) == (base + 250_000) & 0xFFFFFFFF
    assert gen.iss(GUEST, 40000, PEER, 80, now=0.000004) == (base + 1) & 0xFFFFFFFF
    # it wraps modulo 2**32 (5 * 10**9 ticks after 20000 s)
    assert gen.iss(GUEST, 40000, PEER, 80, now=20000.0) == (base + 5 * 10**9) % 2**32


def test_short_secret_refused() -> None:
    with pytest.raises(ValueError):
        IssGenerator(bytes(8))


@pytest.mark.parametrize("mss", [536, 1460, 65480, 65535])
@pytest.mark.parametrize("wscale", [None, 0, 7, 14])
@pytest.mark.parametrize("sack", [False, True])
def test_syn_options_are_the_bytes_of_tcpoptions_pack(mss: int, wscale: int | None,
                                                      sack: bool) -> None:
    expected = TcpOptions(mss=mss, wscale=wscale, sack_permitted=sack).pack()
    got = syn_options(mss, wscale, sack)
    assert got == expected
    assert TcpOptions.parse(got) == TcpOptions(mss=mss, wscale=wscale, sack_permitted=sack)


def test_tcpoptions_still_hash_and_compare_by_value() -> None:
    a = TcpOptions(mss=1460, wscale=7, sack_permitted=True)
    b = TcpOptions.parse(memoryview(a.pack()))
    assert a == b and hash(a) == hash(b)
    assert len({a, b, TcpOptions(mss=1460)}) == 2


def _wscale_by_search(rcv_buf: int) -> int:
    """The definition: the smallest shift whose rounded-up window field fits 16 bits."""
    shift = 0
    while shift < MAX_WSCALE and (rcv_buf + (1 << shift) - 1) >> shift > 0xFFFF:
        shift += 1
    return shift


def test_choose_wscale_closed_form_is_the_smallest_fitting_shift() -> None:
    rng = random.Random(3)
    edges = [v + d for k in range(0, 31) for v in (0xFFFF << k, 1 << (16 + k)) for d in (-1, 0, 1)]
    for rcv_buf in [*range(0, 70000, 7), *edges, *(rng.randrange(1 << 40) for _ in range(5000))]:
        assert choose_wscale(rcv_buf) == _wscale_by_search(rcv_buf), rcv_buf
    assert choose_wscale(4 << 20) == 7 and choose_wscale(0xFFFF) == 0 and choose_wscale(1 << 40) == 14


def test_connection_lifecycle_events_compare_and_hash_by_value() -> None:
    from slirpy.tcpip.events import TcpConnectRequested, TcpEofReceived, TcpFlowClosed
    a = TcpConnectRequested(3, "127.0.0.1", 80, "10.0.2.100", 40000)
    assert a == TcpConnectRequested(3, "127.0.0.1", 80, "10.0.2.100", 40000, False)
    assert a != TcpConnectRequested(3, "127.0.0.1", 80, "10.0.2.100", 40000, True)
    assert len({TcpFlowClosed(1, False), TcpFlowClosed(1, False), TcpFlowClosed(1, True),
                TcpEofReceived(1), TcpEofReceived(1)}) == 3


def test_inbound_connection_close_churn_leaves_no_flow_behind() -> None:
    """HTTP `Connection: close` through a published port, 100 times (perf/runtime_rr.py
    --mode in-close, in the pure Stack): every flow opened is closed once, with one
    TcpFlowClosed each, nothing stays in any table, and every ISS differs."""
    from scapy.layers.inet import IP, TCP

    from slirpy.tcpip import stack as st
    from tests.unit.test_stack import events, out_frames, wire
    from tests.unit.test_stack_inbound import CLIENT, from_guest, make_stack

    s = make_stack()
    isns = set()
    closed: list[int] = []
    rounds = 100
    for i in range(rounds):
        now = 1.0 + i * 0.01
        cport = 20000 + i
        fid = s.tcp_inbound_open(CLIENT, cport, 80, now)
        assert fid is not None
        [(_, syn)] = out_frames(s, now)
        assert syn[TCP].flags == "S"
        isns.add(syn[TCP].seq)
        src, ours = syn[IP].src, syn[TCP].seq + 1
        s.receive_frame(wire(s, from_guest(src, 80, cport, flags="SA", seq=9000, ack=ours,
                                           window=65535, options=[("MSS", 1460)])), now)
        out_frames(s, now)                                  # the handshake's ACK
        s.tcp_host_data(fid, b"GET", now)
        out_frames(s, now)
        s.receive_frame(wire(s, from_guest(src, 80, cport, flags="FPA", seq=9001, ack=ours + 3,
                                           window=65535) / b"OK"), now)
        out_frames(s, now)
        s.tcp_host_eof(fid, now)
        [(_, fin)] = out_frames(s, now)
        assert fin[TCP].flags & 0x01 and fin[TCP].ack == 9004
        s.receive_frame(wire(s, from_guest(src, 80, cport, flags="A", seq=9004, ack=ours + 4,
                                           window=65535)), now)
        out_frames(s, now)
        evs = events(s)
        assert [type(e) for e in evs] == [st.TcpDataReceived, st.TcpEofReceived,
                                          st.TcpFlowClosed]
        assert evs[-1] == st.TcpFlowClosed(fid, False)
        closed.append(fid)
    assert len(set(closed)) == rounds and len(isns) == rounds
    assert s.flows() == [] and s.table.tcp_by_key == {} and s.table.by_id == {}
    assert s.half_open == 0 and s.snd_queued == 0
    c = s.counters
    assert c["tcp.flows.opened"] == c["tcp.flows.closed"] == c["tcp.inbound.opened"] == rounds
    assert c["tcp.flows.established"] == rounds
    assert s.next_deadline() is None                   # no timer left for a closed flow
