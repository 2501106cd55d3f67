"""RFC 7323 timestamps on one TcpConnection: negotiation, what every segment carries, TS.Recent,
PAWS, and RTT samples from the echo (retransmissions included, which is what lets a peer's
RTO backoff end once recovery progresses). The pair simulation (test_tcp_pair.py) and the
fast path's comparison with the general path (test_tcp_predict.py) run with timestamps too.
"""

from __future__ import annotations

import pytest

from slirpy.tcpip.tcp.connection import TcpConnection
from slirpy.tcpip.tcp.events import DataReceived
from slirpy.tcpip.tcp.params import TcpParams
from slirpy.tcpip.wire.tcp import ACK, PSH, SYN, TS_OPTION_LEN, TcpOptions, TcpSegment, ts_option

ISS = 1000
IRS = 5000
P = TcpParams(rto_min=0.2)
PEER_TS = 70_000                # the peer's TSval in its SYN


def seg(seq, ack=ISS + 1, flags=ACK, payload=b"", ts=None, sack=()):
    opts = TcpOptions(timestamp=ts, sack_blocks=sack)
    return TcpSegment(1234, 80, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, flags, 0xFFFF, 0, opts, payload)


def our_tsval(now: float) -> int:
    return (int(now * 1000) + ISS) & 0xFFFFFFFF


def established(params=P, peer_ts=True):
    """A passive connection after the handshake; returns it and its SYN-ACK's options."""
    syn = TcpSegment(1234, 80, IRS, 0, SYN, 0xFFFF, 0,
                     TcpOptions(mss=1460, wscale=7, sack_permitted=True,
                                timestamp=(PEER_TS, 0) if peer_ts else None), b"")
    c = TcpConnection.passive(syn, ISS, 0.0, params)
    c.accept(0.0)
    [(_, _, flags, _, opts, _)] = c.segments_to_send(0.0)
    assert flags == SYN | ACK
    c.receive_segment(seg(IRS + 1, ts=(PEER_TS + 1, our_tsval(0.0)) if peer_ts else None), 0.0)
    c.take_events()
    assert c.segments_to_send(0.0) == []
    return c, TcpOptions.parse(opts)


def test_negotiated_when_the_peer_offers_them():
    c, synack = established()
    assert synack.timestamp == (our_tsval(0.0), PEER_TS)        # echoes the SYN's TSval
    assert c.snd_mss == 1460 - TS_OPTION_LEN                    # the option comes off the MSS
    c.send(b"x" * 3000)
    out = c.segments_to_send(0.5)
    assert [len(o[5]) for o in out] == [1448, 1448, 104]
    # every segment: NOP NOP TS, our clock, TS.Recent (the handshake ACK's TSval)
    assert all(o[4] == ts_option(our_tsval(0.5), PEER_TS + 1) for o in out)


@pytest.mark.parametrize("ours, theirs", [(True, False), (False, True)])
def test_not_negotiated_unless_both_offer(ours, theirs):
    c, synack = established(TcpParams(timestamps=ours), peer_ts=theirs)
    assert synack.timestamp is None
    assert c.snd_mss == 1460
    c.send(b"y" * 10)
    [out] = c.segments_to_send(0.1)
    assert out[4] == b""


def test_an_active_open_offers_them_and_takes_the_answer():
    c = TcpConnection.active(ISS, 0.25, P)
    [(_, _, flags, _, opts, _)] = c.segments_to_send(0.25)
    assert flags == SYN and TcpOptions.parse(opts).timestamp == (our_tsval(0.25), 0)
    c.receive_segment(TcpSegment(80, 1234, IRS, ISS + 1, SYN | ACK, 0xFFFF, 0,
                                 TcpOptions(mss=1460, wscale=7, timestamp=(PEER_TS, our_tsval(0.25))),
                                 b""), 0.3)
    [(_, _, flags, _, opts, _)] = c.segments_to_send(0.3)
    assert flags == ACK and opts == ts_option(our_tsval(0.3), PEER_TS)


def test_ts_recent_only_from_segments_at_or_before_the_last_ack_sent():
    """RFC 7323 §4.3: with a delayed ACK, the echo is the TSval of the first segment not yet
    acknowledged (so the peer's sample includes the delay), not of the latest one."""
    c, _ = established(TcpParams(ack_delay=0.05))
    c.receive_segment(seg(IRS + 1, payload=b"a" * 100, ts=(PEER_TS + 10, 0)), 1.0)
    c.receive_segment(seg(IRS + 101, payload=b"b" * 100, ts=(PEER_TS + 20, 0)), 1.01)
    assert c._ts_recent == PEER_TS + 10
    assert c.segments_to_send(1.01) == [] and c.get_timer() == 1.05
    c.handle_timer(1.05)
    [ack] = c.segments_to_send(1.05)
    assert ack[1] == IRS + 201 and ack[4] == ts_option(our_tsval(1.05), PEER_TS + 10)
    c.receive_segment(seg(IRS + 201, payload=b"c" * 10, ts=(PEER_TS + 30, 0)), 1.06)
    assert c._ts_recent == PEER_TS + 30


def test_paws_drops_data_with_an_older_timestamp_and_acks():
    counters: dict[str, int] = {}
    c, _ = established(TcpParams(counters=counters))
    c.receive_segment(seg(IRS + 1, payload=b"new", ts=(PEER_TS + 100, 0)), 1.0)
    c.segments_to_send(1.0)
    assert [bytes(e.data) for e in c.take_events() if isinstance(e, DataReceived)] == [b"new"]
    # an old duplicate of later data with a TSval from before: not taken (§5.3 R1)
    c.receive_segment(seg(IRS + 4, payload=b"old", ts=(PEER_TS + 50, 0)), 1.1)
    assert c.take_events() == [] and c.rcv_nxt == IRS + 4
    assert counters["tcp.rx.drop.paws"] == 1
    [ack] = c.segments_to_send(1.1)
    assert ack[1] == IRS + 4 and not ack[5]
    # a pure ACK with an old TSval is not dropped: its ACK still counts
    c.send(b"z" * 10)
    c.segments_to_send(1.2)
    c.receive_segment(seg(IRS + 4, ack=ISS + 11, ts=(PEER_TS + 60, our_tsval(1.2))), 1.3)
    assert c.snd_una == ISS + 11 and counters["tcp.rx.drop.paws"] == 1


def test_ts_recent_expires_after_24_days_idle():
    """§5.5: after 24 days without an update, the peer's clock may have wrapped past half its
    range, so an "older" TSval is taken (and becomes TS.Recent) instead of dropped forever."""
    counters: dict[str, int] = {}
    c, _ = established(TcpParams(counters=counters))
    later = 25 * 86400.0
    wrapped = (PEER_TS - 0x90000000) & 0xFFFFFFFF       # more than half the range "behind"
    c.receive_segment(seg(IRS + 1, payload=b"still here", ts=(wrapped, 0)), later)
    assert [bytes(e.data) for e in c.take_events() if isinstance(e, DataReceived)] == [b"still here"]
    assert c._ts_recent == wrapped and "tcp.rx.drop.paws" not in counters


def test_rtt_sampled_from_the_echo_even_for_a_retransmission():
    """Karn's rule forbids timing a retransmitted segment by its send time; the echo of its
    own TSval identifies which transmission the ACK answers (RFC 7323 §4.1), so a sample is
    taken and the RTO comes from it instead of staying backed off."""
    c, _ = established()
    assert c._rtt.srtt == 0.0                       # the handshake's sample (at once)
    c.send(b"d" * 500)
    c.segments_to_send(1.0)
    c.handle_timer(c.get_timer())                   # RTO: the data goes again, the RTO doubles
    [rx] = [o for o in c.segments_to_send(1.2) if o[5]]
    assert c._rtt.rto == pytest.approx(0.4)
    echo = our_tsval(1.2)
    assert rx[4] == ts_option(echo, PEER_TS + 1)
    c.receive_segment(seg(IRS + 1, ack=ISS + 501, ts=(PEER_TS + 2, echo)), 1.28)
    assert c._rtt.srtt == pytest.approx(0.125 * 0.08, abs=0.0002)     # RFC 6298 §2.3, R = 80 ms
    assert c._rtt.rto == pytest.approx(0.2)         # SRTT + 4 RTTVAR, within rto_min


def test_an_echo_older_than_the_last_retransmission_is_not_timed():
    """The ACK our first retransmission drew is lost; a second one draws an ACK of the same
    data whose echo is still the first retransmission's TSval (the peer had that copy). Timing
    that echo would give seconds under heavy loss and inflate the RTO; only the echo of a copy
    at least as recent as the last retransmission is timed."""
    c, _ = established()
    c.send(b"d" * 500)
    c.segments_to_send(1.0)
    c.handle_timer(1.2)                             # first RTO
    [rx1] = [o for o in c.segments_to_send(1.2) if o[5]]
    c.handle_timer(c.get_timer())                   # its ACK never came: second RTO (1.6)
    [rx2] = [o for o in c.segments_to_send(1.6) if o[5]]
    assert TcpOptions.parse(rx2[4]).timestamp[0] == our_tsval(1.6)
    c.receive_segment(seg(IRS + 1, ack=ISS + 501, ts=(PEER_TS + 2, our_tsval(1.2))), 1.61)
    assert c.snd_una == ISS + 501                   # the ACK counts ...
    assert c._rtt.srtt == 0.0                       # ... but is not timed (0.41 s would be)
    c.send(b"e" * 100)
    c.segments_to_send(1.7)
    c.receive_segment(seg(IRS + 1, ack=ISS + 601, ts=(PEER_TS + 3, our_tsval(1.7))), 1.72)
    assert c._rtt.srtt == pytest.approx(0.125 * 0.02, abs=0.0002)   # a fresh copy's echo is


def test_without_timestamps_a_retransmission_is_not_timed():
    c, _ = established(peer_ts=False)
    c.send(b"d" * 500)
    c.segments_to_send(1.0)
    c.handle_timer(c.get_timer())
    c.segments_to_send(1.2)
    c.receive_segment(seg(IRS + 1, ack=ISS + 501), 1.28)
    assert c._rtt.srtt == 0.0                       # no sample since the handshake's (Karn)


def test_pure_acks_carry_timestamps_and_at_most_three_sack_blocks():
    c, _ = established()
    for i in range(6):                              # six holes
        c.receive_segment(seg(IRS + 11 + 20 * i, payload=b"x" * 10, ts=(PEER_TS + 5, 0)), 1.0)
    out = c.segments_to_send(1.0)
    opts = out[-1][4]
    assert len(opts) <= 40 and opts[:TS_OPTION_LEN] == ts_option(our_tsval(1.0), PEER_TS + 1)
    parsed = TcpOptions.parse(opts)
    assert parsed.timestamp == (our_tsval(1.0), PEER_TS + 1)
    assert len(parsed.sack_blocks) == 3 and parsed.sack_blocks[0] == (IRS + 111, IRS + 121)


def test_a_data_segment_with_psh_keeps_its_timestamps():
    c, _ = established()
    c.send(b"answer")
    [out] = c.segments_to_send(0.7)
    assert out[2] == ACK | PSH and out[4] == ts_option(our_tsval(0.7), PEER_TS + 1)
