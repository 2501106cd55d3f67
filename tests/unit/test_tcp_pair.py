"""Two TcpConnections (active <-> passive) over a seeded fake link.

The link carries the tuples from `segments_to_send`, rebuilt as `TcpSegment`s (options via
`TcpOptions.parse`), and may lose, delay (reorder) and duplicate them. Time is simulated:
the loop jumps to the next delivery or timer deadline, so nothing sleeps.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field

import pytest

from slirpy.tcpip.sendbuf import Gather
from slirpy.tcpip.wire.tcp import NO_OPTIONS, TS_OPTION_LEN, TcpOptions, TcpSegment
from slirpy.tcpip.tcp.connection import TcpConnection
from slirpy.tcpip.tcp.events import Closed, DataReceived, EofReceived, Established, Reset
from slirpy.tcpip.tcp.params import TcpParams
from slirpy.tcpip.tcp.state import TcpState


MSS_TS = 1460 - TS_OPTION_LEN       # a segment's payload at most, beside the timestamps option


@dataclass
class Impairment:
    loss: float = 0.0
    dup: float = 0.0
    delay: float = 0.005
    jitter: float = 0.0      # extra uniform delay: > 0 reorders
    rate: float = 0.0        # bytes/s of a bottleneck per direction (0: infinite)
    queue: int = 0           # drop-tail queue of the bottleneck, bytes


@dataclass
class Endpoint:
    name: str
    port: int
    params: TcpParams
    payload: bytes                        # what this side sends
    conn: TcpConnection | None = None
    sent: int = 0
    received: bytearray = field(default_factory=bytearray)
    events: list = field(default_factory=list)
    eof: bool = False
    closed: bool = False
    shut: bool = False


def to_segment(t, sport: int, dport: int) -> TcpSegment:
    seq, ack, flags, window, options, payload = t
    assert 0 <= seq < 2**32 and 0 <= ack < 2**32 and 0 <= window <= 0xFFFF
    assert type(payload) is bytes or (type(payload) is memoryview and payload.readonly) or (
        type(payload) is Gather and all(type(p) is memoryview and p.readonly for p in payload.parts))
    payload = bytes(payload)
    opts = TcpOptions.parse(options) if options else NO_OPTIONS
    return TcpSegment(sport, dport, seq, ack, flags, window, 0, opts, payload)


def run_pair(
    seed: int,
    size_a: int,
    size_b: int,
    imp: Impairment,
    params_a: TcpParams = TcpParams(),
    params_b: TcpParams = TcpParams(),
    send_bound: int = 256 * 1024,
    chunk: int = 50_000,
    pause_b: bool = False,
    iss_a: int | None = None,
    iss_b: int | None = None,
    time_limit: float = 3000.0,
):
    rng = random.Random(seed)
    a = Endpoint("a", 40000, params_a, rng.randbytes(size_a))
    b = Endpoint("b", 80, params_b, rng.randbytes(size_b))
    now = 0.0
    a.conn = TcpConnection.active(rng.getrandbits(32) if iss_a is None else iss_a, now, params_a)
    iss_b = rng.getrandbits(32) if iss_b is None else iss_b
    wire: list = []      # heap of (deliver_at, counter, dst_name, segment)
    counter = 0
    stats = {"sent": 0, "lost": 0, "dup": 0, "max_payload_a": 0, "max_payload_b": 0, "steps": 0,
             "queue_drops": 0, "recoveries": 0, "rexmit": 0}
    link_free = {"a": 0.0, "b": 0.0}      # when each direction's bottleneck is idle again
    highest = {"a": None, "b": None}      # highest sequence sent so far, per sender

    def transmit(src: Endpoint, dst: Endpoint):
        nonlocal counter
        if src.conn is None:
            return
        for t in src.conn.segments_to_send(now):
            stats["sent"] += 1
            stats["max_payload_" + src.name] = max(stats["max_payload_" + src.name], len(t[5]))
            seg = to_segment(t, src.port, dst.port)
            end = (t[0] + len(t[5])) & 0xFFFFFFFF
            if t[5]:
                hi = highest[src.name]
                if hi is not None and ((hi - end) & 0xFFFFFFFF) < 2**31:
                    stats["rexmit"] += 1
                else:
                    highest[src.name] = end
            at0 = now
            if imp.rate:
                size = len(t[5]) + 40
                free = max(link_free[src.name], now)
                if (free - now) * imp.rate + size > imp.queue:
                    stats["queue_drops"] += 1
                    continue
                link_free[src.name] = free + size / imp.rate
                at0 = link_free[src.name]
            copies = 2 if rng.random() < imp.dup else 1
            stats["dup"] += copies - 1
            for _ in range(copies):
                if rng.random() < imp.loss:
                    stats["lost"] += 1
                    continue
                at = at0 + imp.delay + (rng.random() * imp.jitter if imp.jitter else 0.0)
                counter += 1
                heapq.heappush(wire, (at, counter, dst.name, seg))

    def pump(ep: Endpoint):
        conn = ep.conn
        if conn is None:
            return
        while (ev := conn.next_event()) is not None:
            assert not ep.closed, f"{ep.name}: event {ev!r} after Closed"
            ep.events.append(ev)
            if isinstance(ev, DataReceived):
                assert not ep.eof
                ep.received += ev.data
            elif isinstance(ev, EofReceived):
                ep.eof = True
            elif isinstance(ev, Closed):
                ep.closed = True
            elif isinstance(ev, Reset):
                raise AssertionError(f"{ep.name}: unexpected {ev!r} at {now}")
        if conn.state in (TcpState.ESTABLISHED, TcpState.CLOSE_WAIT):
            while ep.sent < len(ep.payload) and conn.send_buffered < send_bound:
                n = min(chunk, len(ep.payload) - ep.sent, send_bound - conn.send_buffered)
                conn.send(memoryview(ep.payload)[ep.sent:ep.sent + n])
                ep.sent += n
            if ep.sent == len(ep.payload) and not ep.shut:
                conn.shutdown_write(now)
                ep.shut = True
        if ep is b and pause_b and conn.state not in (TcpState.CLOSED, TcpState.SYN_RECEIVED):
            # consumer alternately saturated and draining, driven by the seeded rng
            conn.set_receive_paused(rng.random() < 0.3, now)

    eps = {"a": a, "b": b}
    in_recovery = {"a": False, "b": False}
    while not (a.closed and b.closed):
        stats["steps"] += 1
        assert stats["steps"] < 2_000_000
        # deliver everything due now (a batch), then flush both sides once
        while wire and wire[0][0] <= now:
            _, _, dst_name, seg = heapq.heappop(wire)
            dst = eps[dst_name]
            if dst.conn is None:
                dst.conn = TcpConnection.passive(seg, iss_b, now, params_b)
                dst.conn.accept(now)
            else:
                dst.conn.receive_segment(seg, now)
        for ep in (a, b):
            conn = ep.conn
            if conn is not None:
                t = conn.get_timer()
                if t is not None and t <= now:
                    conn.handle_timer(now)
        for ep in (a, b):
            pump(ep)
        transmit(a, b)
        transmit(b, a)
        for ep in (a, b):
            pump(ep)
        transmit(a, b)
        transmit(b, a)
        for ep in (a, b):
            # white-box: count entries into fast recovery to prove the path is exercised
            rec = ep.conn is not None and ep.conn._in_recovery
            if rec and not in_recovery[ep.name]:
                stats["recoveries"] += 1
            in_recovery[ep.name] = rec
        nexts = [wire[0][0]] if wire else []
        for ep in (a, b):
            if ep.conn is not None and (t := ep.conn.get_timer()) is not None:
                nexts.append(t)
        if not nexts:
            break
        now = max(now, min(nexts))
        assert now < time_limit, f"no progress: {a.conn!r} {b.conn!r}"

    assert a.closed and b.closed, f"stuck: {a.conn!r} {b.conn!r}"
    for ep, other in ((a, b), (b, a)):
        assert bytes(ep.received) == other.payload, f"{ep.name} received {len(ep.received)} of {len(other.payload)}"
        assert ep.eof
        assert isinstance(ep.events[0], Established)
        assert isinstance(ep.events[-1], Closed)
        assert sum(isinstance(e, Closed) for e in ep.events) == 1
    stats["now"] = now
    return stats


def test_clean_link_small_transfer_both_ways():
    stats = run_pair(1, 10_000, 20_000, Impairment())
    assert stats["lost"] == 0


def test_clean_link_bulk_a_few_mib_both_ways():
    stats = run_pair(2, 3 << 20, 1 << 20, Impairment(), send_bound=1 << 20)
    assert stats["lost"] == 0
    assert stats["max_payload_a"] == MSS_TS


def test_without_timestamps_on_one_side_segments_carry_the_whole_mss():
    """Timestamps only when both SYNs offer them (RFC 7323 §3.2): then no option bytes come
    off the MSS, and the lossy link still recovers on Karn's samples."""
    stats = run_pair(4, 300_000, 200_000, Impairment(loss=0.05, dup=0.03, delay=0.01, jitter=0.01),
                     params_a=TcpParams(timestamps=False))
    assert stats["lost"] > 0
    assert stats["max_payload_a"] == stats["max_payload_b"] == 1460


def test_empty_transfer_closes_both_ways():
    run_pair(3, 0, 0, Impairment())


@pytest.mark.parametrize("seed", [11, 12, 13, 14, 15, 16])
def test_lossy_reordering_duplicating_link(seed):
    stats = run_pair(seed, 300_000, 200_000, Impairment(loss=0.05, dup=0.03, delay=0.01, jitter=0.01))
    assert stats["lost"] > 0 and stats["dup"] > 0


@pytest.mark.parametrize("seed", [21, 22])
def test_heavy_loss(seed):
    stats = run_pair(seed, 100_000, 50_000, Impairment(loss=0.2, dup=0.05, delay=0.01, jitter=0.02))
    assert stats["lost"] > 0


def test_lossy_bulk_mib():
    run_pair(31, 2 << 20, 64_000, Impairment(loss=0.01, dup=0.01, delay=0.02, jitter=0.005), send_bound=1 << 20)


@pytest.mark.parametrize("seed", [41, 42])
def test_gso_sender_lossy(seed):
    params_a = TcpParams(gso_max=65000)
    stats = run_pair(seed, 2 << 20, 100_000, Impairment(loss=0.02, dup=0.01, delay=0.01, jitter=0.004),
                     params_a=params_a, send_bound=1 << 20)
    # 65000 rounded down to a multiple of the MSS (1460 less 12 bytes of timestamps)
    assert stats["max_payload_a"] == 44 * MSS_TS
    assert stats["max_payload_b"] <= MSS_TS


def test_gso_sender_clean():
    stats = run_pair(43, 1 << 20, 0, Impairment(), params_a=TcpParams(gso_max=65000), send_bound=1 << 20)
    assert stats["max_payload_a"] == 44 * MSS_TS


@pytest.mark.parametrize("seed", [51, 52])
def test_small_receive_buffer_and_paused_consumer(seed):
    # small windows, no scaling needed, receiver pausing at random: exercises zero windows
    params_b = TcpParams(rcv_buf=8192, mss=536)
    run_pair(seed, 200_000, 30_000, Impairment(loss=0.03, delay=0.01, jitter=0.005),
             params_b=params_b, pause_b=True)


def test_isns_near_wrap_lossy():
    run_pair(61, 500_000, 500_000, Impairment(loss=0.03, dup=0.02, delay=0.01, jitter=0.01),
             iss_a=2**32 - 1000, iss_b=2**32 - 300_000)


def test_different_mss_and_no_window_scale():
    # rcv_buf <= 65535 on both sides: shift 0
    p = TcpParams(mss=1000, rcv_buf=60_000)
    run_pair(71, 150_000, 150_000, Impairment(loss=0.02, delay=0.01, jitter=0.01), params_a=p, params_b=p)


@pytest.mark.parametrize("seed", [81, 82, 83])
def test_bottleneck_queue_drops_drive_reno(seed):
    # 10 MB/s, 64 KB drop-tail queue, 20 ms RTT (+ a little jitter so seeds differ): slow start
    # overflows the queue; fast recovery and RTO go-back repair it
    imp = Impairment(delay=0.01, jitter=0.0002, rate=10e6, queue=64_000)
    stats = run_pair(seed, 4 << 20, 100_000, imp, send_bound=1 << 20)
    assert stats["queue_drops"] > 0
    assert stats["recoveries"] > 0
    assert stats["rexmit"] >= stats["queue_drops"]


def test_bottleneck_with_gso_sender():
    imp = Impairment(delay=0.005, rate=50e6, queue=256_000)
    stats = run_pair(84, 4 << 20, 0, imp, params_a=TcpParams(gso_max=65000), send_bound=2 << 20)
    assert stats["queue_drops"] > 0 and stats["max_payload_a"] == 44 * MSS_TS
