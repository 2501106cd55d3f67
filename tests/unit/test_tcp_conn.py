"""TcpConnection, one (state, input) pair at a time, with exact seq/ack/flags/window values."""

from __future__ import annotations

import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slirpy.tcpip.wire.tcp import ACK, FIN, NO_OPTIONS, PSH, RST, SYN, TcpOptions, TcpSegment
from slirpy.tcpip.tcp.connection import TcpConnection
from slirpy.tcpip.tcp.events import Closed, DataReceived, EofReceived, Established, Reset
from slirpy.tcpip.tcp.params import TcpParams, time_wait_end
from slirpy.tcpip.tcp.state import TcpState

ISS = 1000
IRS = 5000
# rto_min = 1.0: the helpers' handshakes take 0 s, so RTO stays at 1.0 and deadlines read plainly
P = TcpParams(rto_min=1.0)
W = 32768            # our window field once established: 4 MiB >> 7
SYN_OPTS = TcpOptions(mss=1460, wscale=7).pack()


def active_syn_opts(now: float = 0.0) -> bytes:
    """Our SYN's options: we always offer SACK and timestamps (TSval: ms clock + ISS)."""
    return TcpOptions(mss=1460, wscale=7, sack_permitted=True,
                      timestamp=((int(now * 1000) + ISS) & 0xFFFFFFFF, 0)).pack()


def seg(seq, ack=0, flags=ACK, window=0xFFFF, payload=b"", options=NO_OPTIONS):
    return TcpSegment(1234, 80, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, flags, window, 0, options, payload)


def events(c):
    out = []
    while (e := c.next_event()) is not None:
        out.append(e)
    return out


def passive(iss=ISS, irs=IRS, params=P, mss=1460, ws=7, window=0xFFFF):
    syn = seg(irs, 0, SYN, window, options=TcpOptions(mss=mss, wscale=ws))
    return TcpConnection.passive(syn, iss, 0.0, params)


def established(iss=ISS, irs=IRS, params=P, mss=1460, ws=0, window=0xFFFF, now=0.0):
    """A passive connection after the handshake; the peer's window is `window` << `ws`."""
    c = passive(iss, irs, params, mss, ws, window)
    c.accept(now)
    c.segments_to_send(now)
    c.receive_segment(seg(irs + 1, iss + 1, ACK, window), now)
    assert events(c) == [Established()]
    assert c.segments_to_send(now) == []
    return c


# ------------------------------------------------------------------------------- passive open


def test_passive_silent_until_accept_then_syn_ack():
    c = passive()
    assert c.state is TcpState.SYN_RECEIVED
    assert (c.irs, c.rcv_nxt, c.snd_mss, c.snd_wnd) == (IRS, IRS + 1, 1460, 0xFFFF)
    assert c.segments_to_send(0.0) == []
    assert c.get_timer() == 75.0                      # syn_timeout only
    c.accept(0.5)
    assert c.segments_to_send(0.5) == [(ISS, IRS + 1, SYN | ACK, 0xFFFF, SYN_OPTS, b"")]
    assert c.get_timer() == 1.5
    c.receive_segment(seg(IRS + 1, ISS + 1, ACK, 100), 0.6)
    assert c.state is TcpState.ESTABLISHED
    assert events(c) == [Established()]
    assert (c.snd_una, c.snd_nxt, c.snd_wnd) == (ISS + 1, ISS + 1, 100 << 7)
    assert c.get_timer() is None
    assert c.segments_to_send(0.6) == []              # nothing to ACK


def test_passive_without_window_scale_or_mss():
    c = passive(ws=None, mss=None)
    assert c.snd_mss == 536
    c.accept(0.0)
    [(seq, ack, flags, wnd, opts, payload)] = c.segments_to_send(0.0)
    assert TcpOptions.parse(opts) == TcpOptions(mss=1460)            # no WS: the peer offered none
    c.receive_segment(seg(IRS + 1, ISS + 1, ACK, 1000), 0.0)
    assert c.snd_wnd == 1000                                         # not scaled
    c.receive_segment(seg(IRS + 1, ISS + 1, ACK, 1000, b"x"), 0.0)
    assert c.segments_to_send(0.0) == [(ISS + 1, IRS + 2, ACK, 0xFFFF, b"", b"")]


@pytest.mark.parametrize("peer_mss, expect", [(9000, 1460), (1000, 1000), (1, 64)])
def test_mss_negotiation(peer_mss, expect):
    assert passive(mss=peer_mss).snd_mss == expect


def test_window_scale_shift_capped_at_14():
    c = established(ws=20, window=2)
    assert c.snd_wnd == 2 << 14


def test_retransmitted_syn_before_and_after_accept():
    c = passive()
    c.receive_segment(seg(IRS, 0, SYN, options=TcpOptions(mss=1460, wscale=7)), 0.1)
    assert c.segments_to_send(0.1) == []
    c.accept(0.2)
    assert len(c.segments_to_send(0.2)) == 1
    c.receive_segment(seg(IRS, 0, SYN, options=TcpOptions(mss=1460, wscale=7)), 0.3)
    assert c.segments_to_send(0.3) == [(ISS, IRS + 1, SYN | ACK, 0xFFFF, SYN_OPTS, b"")]
    assert c.state is TcpState.SYN_RECEIVED


def test_lost_syn_ack_is_retransmitted_with_backoff():
    c = passive()
    c.accept(0.0)
    c.segments_to_send(0.0)
    assert c.get_timer() == 1.0
    c.handle_timer(1.0)
    assert c.segments_to_send(1.0) == [(ISS, IRS + 1, SYN | ACK, 0xFFFF, SYN_OPTS, b"")]
    assert c.get_timer() == 3.0
    c.handle_timer(3.0)
    assert len(c.segments_to_send(3.0)) == 1
    assert c.get_timer() == 7.0


def test_lost_final_ack_data_segment_completes_handshake():
    c = passive()
    c.accept(0.0)
    c.segments_to_send(0.0)
    c.receive_segment(seg(IRS + 1, ISS + 1, ACK | PSH, 0xFFFF, b"hello"), 0.1)
    assert c.state is TcpState.ESTABLISHED
    assert events(c) == [Established(), DataReceived(b"hello")]
    assert c.segments_to_send(0.1) == [(ISS + 1, IRS + 6, ACK, W, b"", b"")]


def test_syn_received_bad_ack_gets_rst():
    c = passive()
    c.accept(0.0)
    c.segments_to_send(0.0)
    c.receive_segment(seg(IRS + 1, ISS + 7, ACK), 0.1)
    assert c.segments_to_send(0.1) == [(ISS + 7, 0, RST, 0, b"", b"")]
    assert c.state is TcpState.SYN_RECEIVED


def test_syn_timeout_when_never_accepted():
    c = passive()
    c.handle_timer(74.9)
    assert events(c) == []
    c.handle_timer(75.0)
    assert events(c) == [Reset("syn_timeout"), Closed()]
    assert c.state is TcpState.CLOSED and c.get_timer() is None


def test_syn_ack_gives_up_after_max_retransmits():
    c = passive(params=TcpParams(max_retransmits=2, syn_timeout=1000))
    c.accept(0.0)
    c.segments_to_send(0.0)
    for t in (1.0, 3.0):
        c.handle_timer(t)
        assert len(c.segments_to_send(t)) == 1
    c.handle_timer(7.0)
    assert events(c) == [Reset("timeout"), Closed()]


def test_refuse():
    c = passive()
    c.refuse()
    assert c.segments_to_send(0.0) == [(0, IRS + 1, RST | ACK, 0, b"", b"")]
    assert events(c) == [Closed()]
    assert c.state is TcpState.CLOSED
    c.receive_segment(seg(IRS, 0, SYN), 0.1)
    assert c.segments_to_send(0.1) == [] and events(c) == []


def test_rst_before_accept():
    c = passive()
    c.receive_segment(seg(IRS + 1, 0, RST, 0), 0.1)
    assert events(c) == [Reset("reset"), Closed()]


# -------------------------------------------------------------------------------- active open


def test_active_handshake():
    c = TcpConnection.active(ISS, 0.0, P)
    assert c.state is TcpState.SYN_SENT
    assert c.segments_to_send(0.0) == [(ISS, 0, SYN, 0xFFFF, active_syn_opts(), b"")]
    assert c.get_timer() == 1.0
    c.receive_segment(seg(IRS, ISS + 1, SYN | ACK, 500, options=TcpOptions(mss=1400, wscale=2)), 0.1)
    assert c.state is TcpState.ESTABLISHED
    assert events(c) == [Established()]
    assert (c.snd_mss, c.snd_wnd, c.irs, c.rcv_nxt) == (1400, 500, IRS, IRS + 1)   # SYN window unscaled
    assert c.segments_to_send(0.1) == [(ISS + 1, IRS + 1, ACK, W, b"", b"")]
    assert c.get_timer() is None
    c.receive_segment(seg(IRS + 1, ISS + 1, ACK, 500), 0.2)
    assert c.snd_wnd == 2000


def test_active_peer_without_window_scale():
    c = TcpConnection.active(ISS, 0.0, P)
    c.segments_to_send(0.0)
    c.receive_segment(seg(IRS, ISS + 1, SYN | ACK, 500, options=TcpOptions(mss=1400)), 0.1)
    assert c.segments_to_send(0.1) == [(ISS + 1, IRS + 1, ACK, 0xFFFF, b"", b"")]


def test_active_lost_syn_backoff_and_give_up():
    c = TcpConnection.active(ISS, 0.0, TcpParams(max_retransmits=3))
    c.segments_to_send(0.0)
    for t in (1.0, 3.0, 7.0):
        c.handle_timer(t)
        assert c.segments_to_send(t) == [(ISS, 0, SYN, 0xFFFF, active_syn_opts(t), b"")]
    assert c.get_timer() == 15.0
    c.handle_timer(15.0)
    assert events(c) == [Reset("timeout"), Closed()]
    assert c.segments_to_send(15.0) == []


def test_active_refused_by_rst():
    c = TcpConnection.active(ISS, 0.0, P)
    c.segments_to_send(0.0)
    c.receive_segment(seg(0, ISS + 2, RST | ACK, 0), 0.1)       # unacceptable ACK: ignored
    assert events(c) == [] and c.segments_to_send(0.1) == []
    c.receive_segment(seg(0, ISS + 1, RST | ACK, 0), 0.1)
    assert events(c) == [Reset("reset"), Closed()]


def test_active_syn_ack_with_bad_ack_gets_rst():
    c = TcpConnection.active(ISS, 0.0, P)
    c.segments_to_send(0.0)
    c.receive_segment(seg(IRS, ISS + 50, SYN | ACK), 0.1)
    assert c.segments_to_send(0.1) == [(ISS + 50, 0, RST, 0, b"", b"")]
    assert c.state is TcpState.SYN_SENT


def test_simultaneous_open():
    c = TcpConnection.active(ISS, 0.0, P)
    c.segments_to_send(0.0)
    c.receive_segment(seg(IRS, 0, SYN, 0xFFFF, options=TcpOptions(mss=1460, wscale=7)), 0.1)
    assert c.state is TcpState.SYN_RECEIVED
    assert c.segments_to_send(0.1) == [(ISS, IRS + 1, SYN | ACK, 0xFFFF, SYN_OPTS, b"")]
    c.receive_segment(seg(IRS, ISS + 1, SYN | ACK, 0xFFFF, options=TcpOptions(mss=1460, wscale=7)), 0.2)
    assert c.state is TcpState.ESTABLISHED
    assert events(c) == [Established()]
    assert c.segments_to_send(0.2) == [(ISS + 1, IRS + 1, ACK, W, b"", b"")]


# ------------------------------------------------------------------------------------ data in


def test_data_in_order_zero_copy_and_one_coalesced_ack():
    c = established()
    buf = memoryview(bytearray(b"abcdefgh"))
    c.receive_segment(seg(IRS + 1, ISS + 1, ACK, 0xFFFF, buf[:4]), 1.0)
    c.receive_segment(seg(IRS + 5, ISS + 1, ACK, 0xFFFF, buf[4:]), 1.0)
    evs = events(c)
    assert evs == [DataReceived(b"abcd"), DataReceived(b"efgh")]
    assert evs[0].data.obj is buf.obj                     # the payload object itself, not a copy
    assert c.segments_to_send(1.0) == [(ISS + 1, IRS + 9, ACK, W, b"", b"")]
    assert c.segments_to_send(1.0) == []


D = TcpParams(rto_min=1.0, ack_delay=0.002)      # delayed ACKs on (the Stack's default is 1 ms)


def test_delayed_ack_rides_on_the_answer():
    c = established(params=D)
    c.receive_segment(seg(IRS + 1, ISS + 1, ACK | PSH, 0xFFFF, b"request"), 1.0)
    assert events(c) == [DataReceived(b"request")]
    assert c.segments_to_send(1.0) == []                 # no pure ACK of its own ...
    assert c.get_timer() == 1.002
    c.send(b"answer")
    assert c.segments_to_send(1.0005) == [(ISS + 1, IRS + 8, ACK | PSH, W, b"", b"answer")]
    assert c.get_timer() == 1.0005 + 1.0                 # ... the answer carried it: only the RTO
    c.handle_timer(1.002)
    assert c.segments_to_send(1.002) == []


def test_delayed_ack_sent_when_its_timer_fires():
    c = established(params=D)
    c.receive_segment(seg(IRS + 1, ISS + 1, ACK | PSH, 0xFFFF, b"abc"), 1.0)
    c.receive_segment(seg(IRS + 4, ISS + 1, ACK | PSH, 0xFFFF, b"def"), 1.001)
    assert c.segments_to_send(1.001) == []
    assert c.get_timer() == 1.002                        # from the first unacknowledged segment
    c.handle_timer(1.0019)
    assert c.segments_to_send(1.0019) == []              # not due yet
    c.handle_timer(1.002)
    assert c.segments_to_send(1.002) == [(ISS + 1, IRS + 7, ACK, W, b"", b"")]
    assert c.get_timer() is None


def test_a_fin_that_finds_us_established_waits_for_our_fin_to_carry_its_ack():
    c = established(params=D)
    c.receive_segment(seg(IRS + 1, ISS + 1, ACK | FIN, 0xFFFF, b"bye"), 1.0)
    assert events(c) == [DataReceived(b"bye"), EofReceived()]
    assert c.state is TcpState.CLOSE_WAIT
    assert c.segments_to_send(1.0) == [] and c.get_timer() == 1.002
    c.shutdown_write(1.0005)                             # the host side closes too
    assert c.segments_to_send(1.0005) == [(ISS + 1, IRS + 5, ACK | FIN, W, b"", b"")]
    assert c.get_timer() == 1.0005 + 1.0                 # the FIN's RTO; no delayed ACK owed
    # without our FIN, the ACK leaves on its own when the delay is up
    c = established(params=D)
    c.receive_segment(seg(IRS + 1, ISS + 1, ACK | FIN, 0xFFFF, b""), 1.0)
    c.handle_timer(1.002)
    assert c.segments_to_send(1.002) == [(ISS + 1, IRS + 2, ACK, W, b"", b"")]


@pytest.mark.parametrize("why", ["two_full_segments", "out_of_order", "fin_after_ours", "hole_filled"])
def test_ack_not_delayed(why):
    c = established(params=D)
    if why == "two_full_segments":                       # RFC 5681 §4.2: every second full segment
        c.receive_segment(seg(IRS + 1, ISS + 1, ACK, 0xFFFF, b"a" * 1460), 1.0)
        assert c.segments_to_send(1.0) == []
        c.receive_segment(seg(IRS + 1461, ISS + 1, ACK, 0xFFFF, b"b" * 1460), 1.0)
        expect = [(ISS + 1, IRS + 2921, ACK, W, b"", b"")]
    elif why == "out_of_order":
        c.receive_segment(seg(IRS + 11, ISS + 1, ACK, 0xFFFF, b"late"), 1.0)
        expect = [(ISS + 1, IRS + 1, ACK, W, b"", b"")]
    elif why == "fin_after_ours":                        # we closed first: nothing left to ride on
        c.shutdown_write(1.0)
        assert c.segments_to_send(1.0) == [(ISS + 1, IRS + 1, ACK | FIN, W, b"", b"")]
        c.receive_segment(seg(IRS + 1, ISS + 2, ACK | FIN, 0xFFFF, b"bye"), 1.0)
        assert c.state is TcpState.TIME_WAIT
        expect = [(ISS + 2, IRS + 5, ACK, W, b"", b"")]
    else:
        c.receive_segment(seg(IRS + 4, ISS + 1, ACK, 0xFFFF, b"def"), 1.0)
        c.segments_to_send(1.0)                          # its duplicate ACK
        c.receive_segment(seg(IRS + 1, ISS + 1, ACK, 0xFFFF, b"abc"), 1.0)
        expect = [(ISS + 1, IRS + 7, ACK, W, b"", b"")]
    assert c.segments_to_send(1.0) == expect
    # no delayed ACK pending (TIME-WAIT has its own timer)
    assert c.get_timer() == (1.0 + D.time_wait if why == "fin_after_ours" else None)


def test_retransmitted_overlap_is_trimmed():
    c = established()
    c.receive_segment(seg(IRS + 1, ISS + 1, ACK, 0xFFFF, b"abcd"), 1.0)
    c.receive_segment(seg(IRS + 3, ISS + 1, ACK, 0xFFFF, b"cdef"), 1.0)
    assert [bytes(e.data) for e in events(c)] == [b"abcd", b"ef"]
    assert c.rcv_nxt == IRS + 7


def test_out_of_order_then_hole_fill():
    c = established()
    c.receive_segment(seg(IRS + 11, ISS + 1, ACK, 0xFFFF, b"KLMNO"), 1.0)
    c.receive_segment(seg(IRS + 21, ISS + 1, ACK, 0xFFFF, b"UVW"), 1.0)
    assert events(c) == []
    # one duplicate ACK per out-of-order segment (RFC 5681 §4.2), even within one batch
    assert c.segments_to_send(1.0) == [(ISS + 1, IRS + 1, ACK, W, b"", b"")] * 2
    c.receive_segment(seg(IRS + 1, ISS + 1, ACK, 0xFFFF, b"ABCDEFGHIJ"), 1.1)
    assert [bytes(e.data) for e in events(c)] == [b"ABCDEFGHIJ", b"KLMNO"]
    assert c.segments_to_send(1.1) == [(ISS + 1, IRS + 16, ACK, W, b"", b"")]
    c.receive_segment(seg(IRS + 16, ISS + 1, ACK, 0xFFFF, b"PQRSTUVWXY"), 1.2)   # overlaps the queued UVW
    assert [bytes(e.data) for e in events(c)] == [b"PQRSTUVWXY"]
    assert c.rcv_nxt == IRS + 26


def test_out_of_order_beyond_window_dropped():
    c = established(params=TcpParams(rcv_buf=1000))
    assert c.rcv_wnd == 1000
    c.receive_segment(seg(IRS + 991, ISS + 1, ACK, 0xFFFF, b"0123456789X"), 1.0)  # 1 byte past the edge
    c.receive_segment(seg(IRS + 1, ISS + 1, ACK, 0xFFFF, b"a" * 990), 1.0)
    assert b"".join(bytes(e.data) for e in events(c)) == b"a" * 990 + b"0123456789"
    assert c.rcv_nxt == IRS + 1001


def test_out_of_order_fin_delivered_after_hole():
    c = established()
    c.receive_segment(seg(IRS + 4, ISS + 1, ACK | FIN, 0xFFFF, b"def"), 1.0)
    assert events(c) == [] and c.state is TcpState.ESTABLISHED
    c.receive_segment(seg(IRS + 1, ISS + 1, ACK, 0xFFFF, b"abc"), 1.0)
    assert [type(e) for e in events(c)] == [DataReceived, DataReceived, EofReceived]
    assert c.state is TcpState.CLOSE_WAIT
    assert c.segments_to_send(1.0) == [(ISS + 1, IRS + 8, ACK, W, b"", b"")]


def test_unacceptable_segment_gets_ack():
    c = established()
    c.receive_segment(seg(IRS - 100, ISS + 1, ACK, 0xFFFF, b"old"), 1.0)    # entirely old
    assert events(c) == []
    assert c.segments_to_send(1.0) == [(ISS + 1, IRS + 1, ACK, W, b"", b"")]
    c.receive_segment(seg(IRS + 1 + (4 << 20) + 10, ISS + 1, ACK, 0xFFFF, b"far"), 1.0)   # beyond window
    assert events(c) == []
    assert c.segments_to_send(1.0) == [(ISS + 1, IRS + 1, ACK, W, b"", b"")]


# ------------------------------------------------------------------- receive pause / windows


def test_set_receive_paused_window_falls_to_zero_then_reopens():
    c = established(params=TcpParams(rcv_buf=8192))          # shift 0
    assert c.segments_to_send(0.0) == []
    c.set_receive_paused(True, 1.0)
    c.receive_segment(seg(IRS + 1, ISS + 1, ACK, 0xFFFF, b"x" * 3000), 1.0)
    assert c.segments_to_send(1.0) == [(ISS + 1, IRS + 3001, ACK, 5192, b"", b"")]
    c.receive_segment(seg(IRS + 3001, ISS + 1, ACK, 0xFFFF, b"y" * 5192), 1.1)
    assert c.segments_to_send(1.1) == [(ISS + 1, IRS + 8193, ACK, 0, b"", b"")]
    assert c.rcv_wnd == 0
    # zero window: data at RCV.NXT is not accepted, but ACKed
    c.receive_segment(seg(IRS + 8193, ISS + 1, ACK, 0xFFFF, b"z"), 1.2)
    assert [type(e) for e in events(c)] == [DataReceived, DataReceived]
    assert c.segments_to_send(1.2) == [(ISS + 1, IRS + 8193, ACK, 0, b"", b"")]
    c.set_receive_paused(False, 1.3)
    assert c.segments_to_send(1.3) == [(ISS + 1, IRS + 8193, ACK, 8192, b"", b"")]


def test_scaled_window_never_shrinks_right_edge():
    # shift 7: unaligned arrivals while paused must not pull the advertised edge left
    c = established()
    c.set_receive_paused(True, 0.0)
    edge = IRS + 1 + (4 << 20)
    got = 0
    for n in (1000, 333, 128, 4097):
        c.receive_segment(seg(IRS + 1 + got, ISS + 1, ACK, 0xFFFF, b"q" * n), 1.0)
        got += n
        [(_, ack, _, field, _, _)] = c.segments_to_send(1.0)
        assert ack == IRS + 1 + got
        new_edge = ack + (field << 7)                       # the peer's view of the edge
        assert edge <= new_edge < edge + 128                # never left; right by < 1 scale unit
        edge = new_edge
    assert events(c)


def test_a_smaller_receive_window_narrows_as_data_arrives_and_never_pulls_the_edge_left():
    c = established(params=TcpParams(rcv_buf=8192))          # shift 0
    c.receive_segment(seg(IRS + 1, ISS + 1, ACK, 0xFFFF, b"a" * 1000), 1.0)
    assert c.segments_to_send(1.0) == [(ISS + 1, IRS + 1001, ACK, 8192, b"", b"")]
    edge = IRS + 1001 + 8192
    c.set_receive_window(2048)
    # the edge already offered stays: the window shrinks only by what arrives
    c.receive_segment(seg(IRS + 1001, ISS + 1, ACK, 0xFFFF, b"b" * 3000), 1.1)
    assert c.segments_to_send(1.1) == [(ISS + 1, IRS + 4001, ACK, edge - (IRS + 4001), b"", b"")]
    c.receive_segment(seg(IRS + 4001, ISS + 1, ACK, 0xFFFF, b"c" * 4500), 1.2)
    # edge - RCV.NXT is now 692 < 2048: the edge moves right again, to RCV.NXT + 2048
    assert c.segments_to_send(1.2) == [(ISS + 1, IRS + 8501, ACK, 2048, b"", b"")]
    assert [type(e) for e in events(c)] == [DataReceived] * 3


@pytest.mark.parametrize("size", [1 << 20, 0, -5])
def test_a_receive_window_above_rcv_buf_or_not_positive_means_rcv_buf(size):
    c = established(params=TcpParams(rcv_buf=8192))          # the scale was chosen for 8192
    c.set_receive_window(size)
    c.receive_segment(seg(IRS + 1, ISS + 1, ACK, 0xFFFF, b"a" * 100), 1.0)
    assert c.segments_to_send(1.0) == [(ISS + 1, IRS + 101, ACK, 8192, b"", b"")]


def test_window_scale_choice():
    from slirpy.tcpip.tcp.params import choose_wscale as _choose_wscale
    assert _choose_wscale(65535) == 0
    assert _choose_wscale(65536) == 1
    assert _choose_wscale(4 << 20) == 7
    assert _choose_wscale(1 << 40) == 14


# ----------------------------------------------------------------------------------- data out


def test_send_segments_by_mss_psh_on_last():
    c = established(mss=1000)
    c.send(b"a" * 2500)
    assert c.send_buffered == 2500
    out = c.segments_to_send(1.0)
    assert [(s, a, f, w, len(p)) for s, a, f, w, _, p in out] == [
        (ISS + 1, IRS + 1, ACK, W, 1000),
        (ISS + 1001, IRS + 1, ACK, W, 1000),
        (ISS + 2001, IRS + 1, ACK | PSH, W, 500),
    ]
    # payloads are the queued bytes, zero-copy: bytes or read-only views of immutable chunks
    assert all(type(p) is bytes or (type(p) is memoryview and p.readonly) for *_, p in out)
    assert b"".join(bytes(p) for *_, p in out) == b"a" * 2500
    assert c.snd_nxt == ISS + 2501 and c.get_timer() == 2.0
    c.receive_segment(seg(IRS + 1, ISS + 1001, ACK), 1.1)
    assert c.send_buffered == 1500
    c.receive_segment(seg(IRS + 1, ISS + 2501, ACK), 1.1)
    assert c.send_buffered == 0 and c.get_timer() is None
    assert c.segments_to_send(1.1) == []


def test_initial_window_is_ten_mss():
    c = established(mss=100, ws=7, window=1000)
    c.send(b"b" * 5000)
    out = c.segments_to_send(1.0)
    assert len(out) == 10 and c.snd_nxt == ISS + 1001


def test_gso_segments_rounded_to_mss_multiple():
    c = established(params=TcpParams(gso_max=65000), ws=7, window=0xFFFF)
    c.send(b"g" * 100_000)
    out = c.segments_to_send(1.0)
    assert [len(p) for *_, p in out] == [14600]           # IW = 10 * 1460 fits in one super-segment
    c.receive_segment(seg(IRS + 1, ISS + 14601, ACK, 0xFFFF), 1.1)
    out = c.segments_to_send(1.1)
    assert [len(p) for *_, p in out] == [29200]           # cwnd 29200 after slow start, < 44 * 1460


def test_peer_window_limits_sending_and_sws_avoidance():
    c = established(window=3000)
    c.send(b"w" * 10_000)
    out = c.segments_to_send(1.0)
    assert [len(p) for *_, p in out] == [1460, 1460]      # the 80-byte tail waits (SWS avoidance)
    c.receive_segment(seg(IRS + 1, ISS + 2921, ACK, 3000), 1.1)
    assert [len(p) for *_, p in c.segments_to_send(1.1)] == [1460, 1460]


def test_zero_window_persist_probes_with_backoff_then_resume():
    c = established(window=1000)
    c.send(b"0123456789" * 200)
    assert [len(p) for *_, p in c.segments_to_send(0.0)] == [1000]
    c.receive_segment(seg(IRS + 1, ISS + 1001, ACK, 0), 0.1)        # all acked, window closed
    assert c.snd_wnd == 0
    assert c.segments_to_send(0.1) == []
    assert c.get_timer() == pytest.approx(1.1)                       # persist, first interval = RTO
    c.handle_timer(1.1)
    assert c.segments_to_send(1.1) == [(ISS + 1001, IRS + 1, ACK, W, b"", b"0")]
    assert c.get_timer() == pytest.approx(1.1 + 2 * c._rtt.rto)          # backed off
    c.receive_segment(seg(IRS + 1, ISS + 1001, ACK, 0), 1.2)       # probe refused
    assert c.snd_una == ISS + 1001 and c.send_buffered == 1000
    t = c.get_timer()
    c.handle_timer(t)
    assert c.segments_to_send(t) == [(ISS + 1001, IRS + 1, ACK, W, b"", b"0")]
    c.receive_segment(seg(IRS + 1, ISS + 1002, ACK, 500), t + 0.1)  # probe taken, window opens
    out = c.segments_to_send(t + 0.1)
    assert [(s, len(p)) for s, _, _, _, _, p in out] == [(ISS + 1002, 500)]
    assert out[0][5] == b"1234567890" * 50
    assert c.get_timer() == pytest.approx(t + 0.1 + c._rtt.rto)         # RTO, not persist


def test_persist_gives_up_when_peer_silent():
    c = established(window=1000, params=TcpParams(max_retransmits=2))
    c.send(b"x" * 2000)
    c.segments_to_send(0.0)
    c.receive_segment(seg(IRS + 1, ISS + 1001, ACK, 0), 0.1)
    c.segments_to_send(0.1)
    for _ in range(2):
        t = c.get_timer()
        c.handle_timer(t)
        assert len(c.segments_to_send(t)) == 1
    c.handle_timer(c.get_timer())
    assert events(c) == [Reset("timeout"), Closed()]


# --------------------------------------------------------------------- loss recovery and RTO


def _ten_segments_in_flight():
    c = established(mss=1000, ws=7, window=0xFFFF)
    c.send(bytes(range(256)) * 40)                             # 10240 bytes
    out = c.segments_to_send(0.0)
    assert [len(p) for *_, p in out] == [1000] * 10
    return c


def test_three_dup_acks_fast_retransmit_newreno():
    c = _ten_segments_in_flight()
    c.receive_segment(seg(IRS + 1, ISS + 1001, ACK), 0.1)     # first segment arrives; cwnd 10000 -> 11000
    assert c._cc.cwnd == 11000
    assert [len(p) for *_, p in c.segments_to_send(0.1)] == [240]
    for i in range(2):
        c.receive_segment(seg(IRS + 1, ISS + 1001, ACK), 0.2)
        assert c.segments_to_send(0.2) == []
    c.receive_segment(seg(IRS + 1, ISS + 1001, ACK), 0.2)     # third duplicate
    out = c.segments_to_send(0.2)
    assert [(s, f, len(p)) for s, _, f, _, _, p in out] == [(ISS + 1001, ACK, 1000)]
    assert out[0][5] == (bytes(range(256)) * 40)[1000:2000]
    assert c._cc.ssthresh == 4620 and c._cc.cwnd == 4620 + 3000      # flight 9240 / 2, + 3 SMSS
    c.receive_segment(seg(IRS + 1, ISS + 1001, ACK), 0.2)     # 4th dup: inflate
    assert c._cc.cwnd == 8620
    # partial ACK (up to the 4th segment): retransmit the next hole at once
    c.receive_segment(seg(IRS + 1, ISS + 4001, ACK), 0.3)
    assert c._cc.cwnd == 8620 - 3000 + 1000                       # deflate by the bytes acked, + SMSS
    out = c.segments_to_send(0.3)
    assert [(s, len(p)) for s, *_, p in out] == [(ISS + 4001, 1000)]
    assert c._in_recovery
    # full ACK ends recovery: cwnd = min(ssthresh, max(FlightSize, SMSS) + SMSS)
    c.receive_segment(seg(IRS + 1, ISS + 10241, ACK), 0.4)
    assert not c._in_recovery
    assert c._cc.cwnd == 2000


def test_limited_transmit_sends_a_new_segment_per_first_two_duplicate_acks():
    """RFC 3042: with more data queued than the window allows, each of the first two duplicate
    ACKs lets one new segment out, so a loss among few segments in flight still draws the
    third duplicate ACK (fast retransmit) instead of waiting for the RTO."""
    c = established(mss=1000, ws=7, window=0xFFFF)
    c.send(b"L" * 20000)
    assert [len(p) for *_, p in c.segments_to_send(0.0)] == [1000] * 10     # the initial window
    for i in range(2):
        c.receive_segment(seg(IRS + 1, ISS + 1, ACK), 0.1)                # nothing new acked
        out = c.segments_to_send(0.1)
        assert [(s - ISS - 1, len(p)) for s, *_, p in out] == [(10000 + 1000 * i, 1000)]
    assert c._cc.cwnd == 10000                                          # the window itself is unchanged
    c.receive_segment(seg(IRS + 1, ISS + 1, ACK), 0.1)                    # the third: fast retransmit
    out = c.segments_to_send(0.1)
    assert [(s - ISS - 1, len(p)) for s, *_, p in out] == [(0, 1000)]
    assert c._in_recovery


def test_rtt_samples_set_rto():
    c = TcpConnection.active(ISS, 10.0, TcpParams())
    c.segments_to_send(10.0)
    c.receive_segment(seg(IRS, ISS + 1, SYN | ACK, 0xFFFF, options=TcpOptions(mss=1460, wscale=7)), 10.1)
    # first sample R=0.1: SRTT=0.1 RTTVAR=0.05 RTO=0.1+4*0.05=0.3 (RFC 6298 §2.2)
    assert c._rtt.rto == pytest.approx(0.3)
    c.send(b"r" * 100)
    c.segments_to_send(11.0)
    assert c.get_timer() == pytest.approx(11.3)
    c.receive_segment(seg(IRS + 1, ISS + 101, ACK), 11.3)
    # R=0.3: RTTVAR=0.75*0.05+0.25*0.2=0.0875 SRTT=0.875*0.1+0.125*0.3=0.125 RTO=0.125+0.35 (§2.3)
    assert c._rtt.rto == pytest.approx(0.475)


def test_rto_go_back_backoff_and_give_up():
    c = established(mss=1000, ws=7, params=TcpParams(max_retransmits=3, rto_min=1.0))
    c.send(b"t" * 5000)
    assert len(c.segments_to_send(0.0)) == 5
    assert c.get_timer() == 1.0
    c.handle_timer(1.0)
    out = c.segments_to_send(1.0)
    assert [(s, len(p)) for s, *_, p in out] == [(ISS + 1, 1000)]          # cwnd = 1 SMSS from SND.UNA
    assert (c._cc.cwnd, c._cc.ssthresh) == (1000, 2500)
    assert c.get_timer() == 3.0
    c.handle_timer(3.0)
    assert [(s, len(p)) for s, *_, p in c.segments_to_send(3.0)] == [(ISS + 1, 1000)]
    assert c.get_timer() == 7.0
    c.handle_timer(7.0)
    c.segments_to_send(7.0)
    c.handle_timer(15.0)
    assert events(c) == [Reset("timeout"), Closed()]
    assert c.state is TcpState.CLOSED and c.get_timer() is None


def test_rto_then_ack_resumes_slow_start_without_rtt_sample():
    c = established(mss=1000, ws=7)
    c.send(b"t" * 3000)
    c.segments_to_send(0.0)
    c.handle_timer(1.0)
    c.segments_to_send(1.0)
    c.receive_segment(seg(IRS + 1, ISS + 1001, ACK), 1.5)
    assert c._rtt.srtt == 0.0                                  # Karn: no sample from a retransmission
    assert c._rtt.rto == 1.0                                   # backoff undone: new data was acknowledged
    assert c._cc.cwnd == 2000
    out = c.segments_to_send(1.5)
    assert [(s, len(p)) for s, *_, p in out] == [(ISS + 1001, 1000), (ISS + 2001, 1000)]


def test_ack_of_unsent_data_is_acked_and_dropped():
    c = established()
    c.send(b"abc")
    c.segments_to_send(0.0)
    c.receive_segment(seg(IRS + 1, ISS + 100, ACK, 0xFFFF, b"data"), 0.1)
    assert events(c) == [] and c.snd_una == ISS + 1
    assert c.segments_to_send(0.1) == [(ISS + 4, IRS + 1, ACK, W, b"", b"")]


# ------------------------------------------------------------------------ RST and SYN checks


def test_rst_exact_resets():
    c = established()
    c.receive_segment(seg(IRS + 1, 0, RST, 0), 1.0)
    assert events(c) == [Reset("reset"), Closed()]
    assert c.segments_to_send(1.0) == []


def test_rst_in_window_gets_challenge_ack():
    c = established()
    c.receive_segment(seg(IRS + 100, 0, RST, 0), 1.0)
    assert events(c) == [] and c.state is TcpState.ESTABLISHED
    assert c.segments_to_send(1.0) == [(ISS + 1, IRS + 1, ACK, W, b"", b"")]


def test_rst_out_of_window_ignored():
    c = established()
    c.receive_segment(seg(IRS - 5, 0, RST, 0), 1.0)
    c.receive_segment(seg(IRS + 1 + (4 << 20), 0, RST, 0), 1.0)
    assert events(c) == [] and c.segments_to_send(1.0) == []


def test_syn_in_established_gets_challenge_ack():
    c = established()
    c.receive_segment(seg(IRS + 50, 0, SYN, options=TcpOptions(mss=1460)), 1.0)
    assert c.state is TcpState.ESTABLISHED and events(c) == []
    assert c.segments_to_send(1.0) == [(ISS + 1, IRS + 1, ACK, W, b"", b"")]
    c.receive_segment(seg(IRS, 0, SYN), 1.0)            # the original SYN again (out of window)
    assert c.segments_to_send(1.0) == [(ISS + 1, IRS + 1, ACK, W, b"", b"")]


def test_abort_sends_rst_and_closes_without_reset_event():
    c = established()
    c.send(b"abc")
    c.segments_to_send(0.0)
    c.abort(0.1)
    assert c.segments_to_send(0.1) == [(ISS + 4, IRS + 1, RST | ACK, 0, b"", b"")]
    assert events(c) == [Closed()]
    c.abort(0.2)
    assert events(c) == [] and c.segments_to_send(0.2) == []


def test_abort_in_syn_sent_sends_nothing():
    c = TcpConnection.active(ISS, 0.0, P)
    c.segments_to_send(0.0)
    c.abort(0.1)
    assert c.segments_to_send(0.1) == [] and events(c) == [Closed()]


# --------------------------------------------------------------------------------- FIN / close


def test_fin_in_established_then_we_close_last_ack():
    c = established()
    c.receive_segment(seg(IRS + 1, ISS + 1, ACK | FIN, 0xFFFF, b"bye"), 1.0)
    assert events(c) == [DataReceived(b"bye"), EofReceived()]
    assert c.state is TcpState.CLOSE_WAIT
    assert c.segments_to_send(1.0) == [(ISS + 1, IRS + 5, ACK, W, b"", b"")]
    # half-close: we keep sending after the peer's FIN
    c.send(b"still here")
    c.shutdown_write(1.1)
    assert c.state is TcpState.LAST_ACK
    assert c.segments_to_send(1.1) == [(ISS + 1, IRS + 5, ACK | PSH | FIN, W, b"", b"still here")]
    c.receive_segment(seg(IRS + 1, ISS + 1, ACK | FIN, 0xFFFF, b"bye"), 1.2)     # retransmitted FIN
    assert events(c) == []
    assert c.segments_to_send(1.2) == [(ISS + 12, IRS + 5, ACK, W, b"", b"")]
    c.receive_segment(seg(IRS + 5, ISS + 12, ACK), 1.3)
    assert c.state is TcpState.CLOSED
    assert events(c) == [Closed()]


def test_active_close_fin_wait_1_2_time_wait():
    c = established()
    c.shutdown_write(1.0)
    assert c.state is TcpState.FIN_WAIT_1
    assert c.segments_to_send(1.0) == [(ISS + 1, IRS + 1, ACK | FIN, W, b"", b"")]
    c.send(b"ignored after shutdown")
    assert c.send_buffered == 0
    c.receive_segment(seg(IRS + 1, ISS + 2, ACK), 1.1)
    assert c.state is TcpState.FIN_WAIT_2 and c.get_timer() is None
    # half-close the other way: the peer keeps sending to us
    c.receive_segment(seg(IRS + 1, ISS + 2, ACK, 0xFFFF, b"more"), 1.2)
    assert events(c) == [DataReceived(b"more")]
    assert c.segments_to_send(1.2) == [(ISS + 2, IRS + 5, ACK, W, b"", b"")]
    c.receive_segment(seg(IRS + 5, ISS + 2, ACK | FIN), 1.3)
    assert c.state is TcpState.TIME_WAIT
    assert events(c) == [EofReceived()]
    assert c.segments_to_send(1.3) == [(ISS + 2, IRS + 6, ACK, W, b"", b"")]
    assert c.get_timer() == time_wait_end(1.3, 2.0) == 3.3125   # 2 s, rounded up to a slot
    # the peer's FIN again (our ACK was lost): re-ACK and restart the timer
    c.receive_segment(seg(IRS + 5, ISS + 2, ACK | FIN), 2.0)
    assert c.segments_to_send(2.0) == [(ISS + 2, IRS + 6, ACK, W, b"", b"")]
    assert c.get_timer() == pytest.approx(4.0)
    c.receive_segment(seg(IRS + 6, 0, RST, 0), 2.1)              # RFC 1337: ignored
    assert c.state is TcpState.TIME_WAIT
    c.handle_timer(3.9)
    assert events(c) == []
    c.handle_timer(4.0)
    assert events(c) == [Closed()]
    assert c.state is TcpState.CLOSED and c.get_timer() is None
    c.handle_timer(10.0)
    assert events(c) == []


def test_fin_ack_and_peer_fin_together_fin_wait_1_to_time_wait():
    c = established()
    c.shutdown_write(1.0)
    c.segments_to_send(1.0)
    c.receive_segment(seg(IRS + 1, ISS + 2, ACK | FIN), 1.1)
    assert c.state is TcpState.TIME_WAIT
    assert events(c) == [EofReceived()]


def test_simultaneous_close_closing_state():
    c = established()
    c.shutdown_write(1.0)
    assert c.segments_to_send(1.0) == [(ISS + 1, IRS + 1, ACK | FIN, W, b"", b"")]
    c.receive_segment(seg(IRS + 1, ISS + 1, ACK | FIN), 1.1)    # the peer's FIN, not acking ours
    assert c.state is TcpState.CLOSING
    assert events(c) == [EofReceived()]
    assert c.segments_to_send(1.1) == [(ISS + 2, IRS + 2, ACK, W, b"", b"")]
    c.receive_segment(seg(IRS + 2, ISS + 2, ACK), 1.2)
    assert c.state is TcpState.TIME_WAIT
    c.handle_timer(3.2)
    assert events(c) == []
    c.handle_timer(time_wait_end(1.2, 2.0))
    assert events(c) == [Closed()]


def test_fin_retransmitted_on_rto():
    c = established()
    c.shutdown_write(0.0)
    c.segments_to_send(0.0)
    c.handle_timer(1.0)
    assert c.segments_to_send(1.0) == [(ISS + 1, IRS + 1, ACK | FIN, W, b"", b"")]


def test_fin_rides_on_last_data_segment_and_data_retransmitted_in_fin_wait_1():
    c = established(mss=1000, ws=7)
    c.send(b"d" * 1500)
    c.shutdown_write(0.0)
    out = c.segments_to_send(0.0)
    assert [(s, f, len(p)) for s, _, f, _, _, p in out] == [(ISS + 1, ACK, 1000), (ISS + 1001, ACK | PSH | FIN, 500)]
    assert c.snd_nxt == ISS + 1502
    c.handle_timer(1.0)
    assert [(s, f, len(p)) for s, _, f, _, _, p in c.segments_to_send(1.0)] == [(ISS + 1, ACK, 1000)]
    c.receive_segment(seg(IRS + 1, ISS + 1001, ACK), 1.1)
    assert [(s, f, len(p)) for s, _, f, _, _, p in c.segments_to_send(1.1)] == [(ISS + 1001, ACK | PSH | FIN, 500)]
    c.receive_segment(seg(IRS + 1, ISS + 1502, ACK), 1.2)
    assert c.state is TcpState.FIN_WAIT_2


def test_shutdown_before_established_sends_fin_after_handshake():
    c = TcpConnection.active(ISS, 0.0, P)
    c.segments_to_send(0.0)
    c.send(b"early")
    c.shutdown_write(0.0)
    c.receive_segment(seg(IRS, ISS + 1, SYN | ACK, 0xFFFF, options=TcpOptions(mss=1460, wscale=7)), 0.1)
    assert c.state is TcpState.FIN_WAIT_1
    assert c.segments_to_send(0.1) == [(ISS + 1, IRS + 1, ACK | PSH | FIN, W, b"", b"early")]


def test_data_after_peer_fin_is_ignored():
    c = established()
    c.receive_segment(seg(IRS + 1, ISS + 1, ACK | FIN), 1.0)
    events(c)
    c.receive_segment(seg(IRS + 2, ISS + 1, ACK, 0xFFFF, b"late"), 1.1)
    assert events(c) == []
    assert c.rcv_nxt == IRS + 2


# ----------------------------------------------------------------------------- sequence wrap


def test_isn_near_wrap_both_directions():
    iss, irs = 2**32 - 700, 2**32 - 3
    c = established(iss=iss, irs=irs, mss=1000, ws=7)
    assert c.snd_una == 2**32 - 699 and c.rcv_nxt == 2**32 - 2
    c.send(b"s" * 2500)
    out = c.segments_to_send(0.0)
    assert [(s, len(p)) for s, *_, p in out] == [(2**32 - 699, 1000), (301, 1000), (1301, 500)]
    c.receive_segment(seg(irs + 1, 1801, ACK, 0xFFFF, b"0123456789"), 0.1)
    assert c.snd_una == 1801 and c.send_buffered == 0 and c.get_timer() is None
    assert c.rcv_nxt == 8
    assert events(c) == [DataReceived(b"0123456789")]
    assert c.segments_to_send(0.1) == [(1801, 8, ACK, W, b"", b"")]
    # out-of-order across the wrap
    c2 = established(iss=iss, irs=irs)
    c2.receive_segment(seg(irs + 4, iss + 1, ACK, 0xFFFF, b"456"), 0.1)
    c2.receive_segment(seg(irs + 1, iss + 1, ACK, 0xFFFF, b"123"), 0.1)
    assert b"".join(bytes(e.data) for e in events(c2)) == b"123456"
    assert c2.rcv_nxt == 4


# ---------------------------------------------------------------------- robustness / memory


_FLAGS = st.sampled_from([ACK, ACK | PSH, ACK | FIN, RST, RST | ACK, SYN, SYN | ACK, FIN, 0, ACK | SYN | FIN | RST])


@settings(database=None, deadline=None)
@given(
    st.sampled_from(["active", "passive", "established"]),
    st.lists(
        st.tuples(
            st.sampled_from(["seg", "seg", "seg", "timer", "send", "shut", "pause", "resume", "abort", "flush"]),
            _FLAGS,
            st.one_of(st.integers(-2, 2), st.integers(-3000, 3000)),    # seq - RCV.NXT
            st.one_of(st.integers(-2, 2), st.integers(-3000, 3000)),    # ack - SND.UNA
            st.integers(0, 0xFFFF),
            st.binary(max_size=2000),
            st.one_of(st.none(), st.integers(0, 20)),
            st.floats(0, 5),
        ),
        max_size=40,
    ),
)
def test_hostile_sequences_never_raise(start, steps):
    now = 0.0
    if start == "active":
        c = TcpConnection.active(2**32 - 50, now, TcpParams(max_retransmits=3))
    elif start == "established":
        c = established(iss=2**32 - 50, irs=2**32 - 10, params=TcpParams(rcv_buf=3000, max_retransmits=3),
                        window=2500)
    else:
        c = passive(iss=2**32 - 50, irs=2**32 - 10)
        c.accept(now)
    closed = 0
    for kind, flags, dseq, dack, wnd, data, ws, dt in steps:
        now += dt
        if kind == "seg":
            base_seq = c.rcv_nxt if c.rcv_nxt else 2**32 - 10
            c.receive_segment(seg(base_seq + dseq, c.snd_una + dack, flags, wnd, data,
                                  TcpOptions(mss=dack & 0xFFFF, wscale=ws)), now)
        elif kind == "timer":
            t = c.get_timer()
            c.handle_timer(now if t is None else max(now, t))
        elif kind == "send":
            c.send(data)
        elif kind == "shut":
            c.shutdown_write(now)
        elif kind in ("pause", "resume"):
            c.set_receive_paused(kind == "pause", now)
        elif kind == "abort":
            c.abort(now)
        for s, a, f, w, o, p in c.segments_to_send(now):
            assert 0 <= s < 2**32 and 0 <= a < 2**32 and 0 <= w <= 0xFFFF
            assert len(p) <= 1460
        for e in events(c):
            assert closed == 0, "event after Closed"
            closed += isinstance(e, Closed)
        assert c.send_buffered <= 2000 * 40
        assert c._ooo is None or len(c._ooo) <= 256
    assert closed == (c.state is TcpState.CLOSED)


def test_idle_connections_are_small():
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        conns = [established(iss=i, irs=i * 7) for i in range(2000)]
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    per_conn = (after - before) / len(conns)
    assert per_conn < 2048, per_conn


# ------------------------------------------------------------------ SACK (receiver side, RFC 2018)

def _sack_established(sack: bool):
    syn = seg(IRS, 0, SYN, 0xFFFF, options=TcpOptions(mss=1460, wscale=7, sack_permitted=sack))
    c = TcpConnection.passive(syn, ISS, 0.0, P)
    c.accept(0.0)
    [(_, _, flags, _, opts, _)] = c.segments_to_send(0.0)
    assert flags == SYN | ACK
    assert TcpOptions.parse(opts).sack_permitted is sack
    c.receive_segment(seg(IRS + 1, ISS + 1, ACK, 0xFFFF), 0.0)
    c.segments_to_send(0.0)
    events(c)
    return c


def test_sack_blocks_on_duplicate_acks_most_recent_first():
    c = _sack_established(True)
    c.receive_segment(seg(IRS + 21, ISS + 1, ACK, 0xFFFF, b"B" * 10), 1.0)   # hole at IRS+1..21
    c.receive_segment(seg(IRS + 41, ISS + 1, ACK, 0xFFFF, b"D" * 10), 1.0)   # second hole
    c.receive_segment(seg(IRS + 31, ISS + 1, ACK, 0xFFFF, b"C" * 10), 1.0)   # joins B and D
    out = c.segments_to_send(1.0)
    assert len(out) == 3 and all(o[:3] == (ISS + 1, IRS + 1, ACK) and o[5] == b"" for o in out)
    assert TcpOptions.parse(out[0][4]).sack_blocks == ((IRS + 21, IRS + 51),)
    c.receive_segment(seg(IRS + 71, ISS + 1, ACK, 0xFFFF, b"F" * 10), 1.0)
    [ack] = c.segments_to_send(1.0)
    assert TcpOptions.parse(ack[4]).sack_blocks == ((IRS + 71, IRS + 81), (IRS + 21, IRS + 51))
    # the hole fills: everything up to the second hole is delivered, one block is left
    c.receive_segment(seg(IRS + 1, ISS + 1, ACK, 0xFFFF, b"A" * 20), 1.0)
    [ack] = c.segments_to_send(1.0)
    assert ack[1] == IRS + 51
    assert TcpOptions.parse(ack[4]).sack_blocks == ((IRS + 71, IRS + 81),)
    assert b"".join(bytes(e.data) for e in events(c)) == b"A" * 20 + b"B" * 10 + b"C" * 10 + b"D" * 10
    c.receive_segment(seg(IRS + 51, ISS + 1, ACK, 0xFFFF, b"E" * 20), 1.0)
    [ack] = c.segments_to_send(1.0)
    assert ack[1] == IRS + 81 and ack[4] == b""


def test_at_most_four_sack_blocks():
    c = _sack_established(True)
    for i in range(6):
        c.receive_segment(seg(IRS + 11 + 20 * i, ISS + 1, ACK, 0xFFFF, b"x" * 10), 1.0)
    out = c.segments_to_send(1.0)
    blocks = TcpOptions.parse(out[-1][4]).sack_blocks
    assert len(blocks) == 4 and blocks[0] == (IRS + 111, IRS + 121)
    assert len(out[-1][4]) <= 40



def test_sack_blocks_after_the_first_are_the_most_recently_reported():
    """RFC 2018 §4: with more holes than blocks, the blocks after the first repeat the ones
    reported last (each block then reaches the sender in several ACKs), not the lowest ones."""
    c = _sack_established(True)
    reported = []
    for i in range(6):                                  # six holes, one ACK per arrival
        c.receive_segment(seg(IRS + 11 + 20 * i, ISS + 1, ACK, 0xFFFF, b"x" * 10), 1.0)
        [ack] = c.segments_to_send(1.0)
        reported.append([b[0] - IRS for b in TcpOptions.parse(ack[4]).sack_blocks])
    assert reported == [[11], [31, 11], [51, 31, 11], [71, 51, 31, 11], [91, 71, 51, 31],
                        [111, 91, 71, 51]]
    # an arrival that grows a block not reported lately puts it first, the rest follow
    c.receive_segment(seg(IRS + 21, ISS + 1, ACK, 0xFFFF, b"y" * 5), 1.0)
    [ack] = c.segments_to_send(1.0)
    assert TcpOptions.parse(ack[4]).sack_blocks == (
        (IRS + 11, IRS + 26), (IRS + 111, IRS + 121), (IRS + 91, IRS + 101), (IRS + 71, IRS + 81))
    # the first hole fills: delivered blocks leave the report, the others stay in order
    c.receive_segment(seg(IRS + 1, ISS + 1, ACK, 0xFFFF, b"z" * 10), 1.0)
    [ack] = c.segments_to_send(1.0)
    assert ack[1] == IRS + 26
    assert TcpOptions.parse(ack[4]).sack_blocks == (
        (IRS + 111, IRS + 121), (IRS + 91, IRS + 101), (IRS + 71, IRS + 81), (IRS + 31, IRS + 41))

def test_no_sack_blocks_unless_the_peer_offered_sack():
    c = _sack_established(False)
    c.receive_segment(seg(IRS + 21, ISS + 1, ACK, 0xFFFF, b"B" * 10), 1.0)
    [ack] = c.segments_to_send(1.0)
    assert ack[4] == b""


def test_sack_scoreboard_retransmits_only_the_holes():
    """Sender side: with SACK, fast recovery resends the un-SACKed holes (one segment per
    duplicate ACK), never the SACKed data, and NewReno's single resend at SND.UNA is not used."""
    syn = seg(IRS, 0, SYN, 0xFFFF, options=TcpOptions(mss=100, wscale=7, sack_permitted=True))
    c = TcpConnection.passive(syn, ISS, 0.0, P)
    c.accept(0.0)
    c.segments_to_send(0.0)
    c.receive_segment(seg(IRS + 1, ISS + 1, ACK, 0xFFFF), 0.0)
    c.segments_to_send(0.0)
    data = bytes(range(256)) * 4                    # 1024 bytes: segments of 100
    c.send(data)
    sent = c.segments_to_send(0.0)
    base = ISS + 1
    # initial window 10 * SMSS: ten 100-byte segments
    assert [(o[0] - base, len(o[5])) for o in sent] == [(off, 100) for off in range(0, 1000, 100)]
    # segments at offsets 0 and 300 are lost; the peer SACKs 100..300 and 400..700
    def dup(blocks):
        opts = TcpOptions(sack_blocks=tuple((base + a, base + b) for a, b in blocks))
        c.receive_segment(seg(IRS + 1, base, ACK, 0xFFFF, options=opts), 1.0)
    dup([(100, 200)])
    dup([(100, 300)])
    dup([(400, 500), (100, 300)])
    out = c.segments_to_send(1.0)
    assert [(o[0] - base, len(o[5])) for o in out if o[5]][:1] == [(0, 100)]
    dup([(400, 600), (100, 300)])
    out = c.segments_to_send(1.0)
    resent = [(o[0] - base, len(o[5])) for o in out if o[5] and seq_lt_ok(o[0], base + 700)]
    assert resent == [(300, 100)]          # the second hole, not the SACKed 100..300
    assert bytes(out[0][5]) == data[300:400]


def seq_lt_ok(a, b):
    return ((b - a) & 0xFFFFFFFF) < (1 << 31) and a != b
