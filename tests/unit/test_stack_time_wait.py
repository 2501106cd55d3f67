"""TIME-WAIT flows and the flow bounds: a flow in TIME-WAIT holds no host socket, so it does
not count against `max_tcp_flows` (sized from RLIMIT_NOFILE); `max_time_wait` bounds them
apart, the oldest let go first.

Found with perf/runtime_rr.py under valgrind, whose RLIMIT_NOFILE is ~1000: one new
connection per round, the host closing first, and after ~660 rounds every SYN was refused
(`tcp.rx.drop.flow_limit`) while no flow carried anything: the last 2 s of connections sat
in TIME-WAIT, each keeping its host socket open.
"""

from __future__ import annotations

from scapy.layers.inet import TCP

from slirpy.config import Limits
from slirpy.tcpip import stack as st
from tests.unit.test_stack import (
    _established, _to_time_wait, events, guest_tcp, make_stack, out_frames, wire,
)


def _syn(s: st.Stack, sport: int, now: float = 0.0) -> list:
    s.receive_frame(wire(s, guest_tcp(sport=sport, flags="S", seq=1000,
                                      options=[("MSS", 1460)])), now)
    return [(f[TCP].flags, f[TCP].sport) for _, f in out_frames(s, now)]


def test_time_wait_flows_leave_room_for_new_flows():
    s = make_stack(limits=Limits(max_tcp_flows=2))
    for sport in (41000, 41001):
        fid, iss = _established(s, sport=sport)
        _to_time_wait(s, fid, iss, sport=sport)
    assert s.time_wait == 2 and len(s.flows()) == 2
    assert _syn(s, 41002) == []                        # SYN-ACK waits for the host connect
    [ev] = events(s)
    assert isinstance(ev, st.TcpConnectRequested)
    assert "tcp.rx.drop.flow_limit" not in s.counters
    # The flows with a host socket are still bounded: one more opens, the next is refused.
    assert _syn(s, 41003) == [] and len(events(s)) == 1
    assert _syn(s, 41004) == [("RA", 80)]
    assert s.counters["tcp.rx.drop.flow_limit"] == 1 and events(s) == []
    assert len(s.flows()) == 4


def test_inbound_flows_get_the_same_room():
    s = make_stack(limits=Limits(max_tcp_flows=1))
    fid, iss = _established(s)
    _to_time_wait(s, fid, iss)
    assert s.tcp_inbound_open("203.0.113.9", 5000, 80, 0.0) is not None
    assert s.tcp_inbound_open("203.0.113.9", 5001, 80, 0.0) is None
    assert s.counters["tcp.inbound.drop.flow_limit"] == 1


def test_time_wait_is_bounded_oldest_first():
    s = make_stack(limits=Limits(max_time_wait=2))
    ids = []
    for sport in (41000, 41001, 41002):
        fid, iss = _established(s, sport=sport)
        ids.append(fid)
        _to_time_wait(s, fid, iss, sport=sport)      # one TcpFlowClosed each, checked there
    assert [f.flow_id for f in s.flows()] == ids[1:]
    assert s.counters["tcp.time_wait.evicted"] == 1 and s.time_wait == 2
    assert events(s) == []                          # the evicted flow's host socket is closed already
    # The guest's FIN again: the flow let go answers with RST, one still in TIME-WAIT with an ACK.
    s.receive_frame(wire(s, guest_tcp(sport=41000, flags="FA", seq=1001, ack=1)), 0.1)
    s.receive_frame(wire(s, guest_tcp(sport=41002, flags="FA", seq=1001, ack=1)), 0.1)
    answers = sorted((f[TCP].dport, str(f[TCP].flags)) for _, f in out_frames(s, 0.1))
    assert answers == [(41000, "R"), (41002, "A")]


def test_time_wait_expiry_says_nothing_more_to_the_runtime():
    s = make_stack()
    fid, iss = _established(s)
    _to_time_wait(s, fid, iss)
    deadline = s.next_deadline()
    assert deadline is not None and deadline <= 0.0 + s.config.limits.tcp_time_wait + 0.01
    s.handle_timer(deadline)
    out_frames(s, deadline)
    assert s.flows() == [] and s.time_wait == 0 and events(s) == []
    assert s.counters["tcp.flows.closed"] == 1


def test_time_wait_ends_on_a_slot_so_that_flows_closing_together_expire_together():
    from slirpy.tcpip.tcp.params import TIME_WAIT_SLOT, time_wait_end
    assert time_wait_end(1.0, 2.0) == 3.0                       # on a slot already
    assert time_wait_end(1.001, 2.0) == 3.0 + TIME_WAIT_SLOT
    assert time_wait_end(1.06, 2.0) == 3.0 + TIME_WAIT_SLOT
    for now in (0.0, 0.01, 7.3, 12345.678):
        end = time_wait_end(now, 2.0)
        assert now + 2.0 <= end < now + 2.0 + TIME_WAIT_SLOT
        assert (end / TIME_WAIT_SLOT).is_integer()
    # Two flows entering TIME-WAIT 10 ms apart end at one deadline: one timer callback.
    s = make_stack()
    fids = []
    for sport, now in ((41000, 0.02), (41001, 0.03)):
        fid, iss = _established(s, sport=sport)
        fids.append(fid)
        _to_time_wait(s, fid, iss, sport=sport, now=now)
    assert s.next_deadline() == time_wait_end(0.03, s.config.limits.tcp_time_wait)
    s.handle_timer(s.next_deadline())
    out_frames(s, s.next_deadline() or 0.0)
    assert s.flows() == [] and s.counters["tcp.flows.closed"] == 2
