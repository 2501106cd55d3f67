"""DeadlineHeap.move (flow.py) against plain pushes: the same deadlines come out, in the same
order, whatever the flows' timers do; only the stale entries left behind differ."""

from __future__ import annotations

import random

from slirpy.tcpip.flow import DeadlineHeap, Flow


def _flows(n: int) -> dict[int, Flow]:
    return {i: Flow(i, i, b"\0" * 4, i, b"\0" * 4, i, "", 0.0) for i in range(1, n + 1)}


def test_moving_deadlines_gives_what_pushing_gives():
    rng = random.Random(18)
    for n in (1, 2, 5, 40):
        moved, pushed = DeadlineHeap(), DeadlineHeap()
        flows_m, flows_p = _flows(n), _flows(n)
        now = 0.0
        for _ in range(3000):
            fid = rng.randrange(1, n + 1)
            op = rng.random()
            if op < 0.8:                          # a flow's timer moves (or goes)
                t = None if rng.random() < 0.1 else now + rng.choice((0.001, 0.2, rng.random()))
                fm, fp = flows_m[fid], flows_p[fid]
                if t != fm.timer_at:
                    old = fm.timer_at
                    fm.timer_at = fp.timer_at = t
                    moved.move(old, t, fid, flows_m)
                    if t is not None:
                        pushed.push(t, fid, flows_p)
            elif op < 0.9:                        # time passes; due flows fire
                now += rng.random() * 0.05
                due_m = [f.flow_id for f in moved.pop_due(now, flows_m)]
                due_p = [f.flow_id for f in pushed.pop_due(now, flows_p)]
                assert due_m == due_p
            assert moved.next_deadline(flows_m) == pushed.next_deadline(flows_p)
        assert len(moved) <= len(pushed)


def test_one_busy_flow_leaves_no_stale_entries():
    heap, flows = DeadlineHeap(), _flows(1)
    flow = flows[1]
    for i in range(1000):
        t = i * 0.001 + (0.2 if i % 2 else 0.001)
        heap.move(flow.timer_at, t, 1, flows)
        flow.timer_at = t
    assert len(heap) == 1 and heap.next_deadline(flows) == flow.timer_at
