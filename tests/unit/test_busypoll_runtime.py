"""The runtime's busy polling: after a frame's brief work the loop polls on (a call_soon chain),
then sleeps once the window has run out; with --busy-poll 0, after longer work, or while the
recent batches were bulk-sized, it sleeps at once.

A Runtime on a plain asyncio loop, its TAP one end of a SOCK_SEQPACKET pair.  Only the order of
events is asserted (polls, then a sleep), never how fast anything ran."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest
from scapy.layers.l2 import ARP, Ether

from slirpy import busypoll
from slirpy.config import NetConfig

pytestmark = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2,
                                reason="busy polling is off with a single usable CPU")

ARP_WHO_HAS_GATEWAY = Ether(src="02:00:00:00:00:64", dst="ff:ff:ff:ff:ff:ff") / ARP(
    op=1, hwsrc="02:00:00:00:00:64", psrc="10.0.2.100", pdst="10.0.2.2")


@pytest.fixture
def rig(request):
    from slirpy.runtime import Runtime

    loop = asyncio.new_event_loop()
    guest, tap = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    guest.setblocking(False)
    busy_poll_us, after_work = request.param
    runtime = Runtime(NetConfig(), tap.fileno(), vnet_hdr=False, offload=False, busy_poll_us=busy_poll_us)
    runtime.poller.after_work_max = after_work      # how brief the work before a poll must be (seconds)
    runtime.attach(loop)
    yield loop, guest, runtime
    runtime.detach()
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()
    guest.close()
    tap.close()


def _frame_in_and_answer_out(loop, guest):
    guest.send(bytes(ARP_WHO_HAS_GATEWAY))
    raw = loop.run_until_complete(asyncio.wait_for(loop.sock_recv(guest, 65600), 5.0))
    assert ARP in Ether(raw) and Ether(raw)[ARP].op == 2          # the gateway answered
    return raw


@pytest.mark.parametrize("rig", [(200, 1.0)], indirect=True)     # any work counts as brief
def test_after_the_work_the_loop_polls_then_sleeps(rig):
    loop, guest, runtime = rig
    assert runtime.poller.window.window == 50e-6           # busypoll.START_US
    _frame_in_and_answer_out(loop, guest)
    c = runtime.counters
    assert c["loop.busy_poll.polls"] >= 1
    loop.run_until_complete(asyncio.sleep(0.05))      # far past the window: it ran out
    polls = c["loop.busy_poll.polls"]
    assert c["loop.busy_poll.sleeps"] == polls        # every poll ended in a sleep
    # That sleep was longer than the bound: the next frame's work halves the window, and half
    # the start value is off: this work ends in a sleep at once.
    _frame_in_and_answer_out(loop, guest)
    assert runtime.poller.window.window == 0.0
    assert c["loop.busy_poll.polls"] == polls


@pytest.mark.parametrize("rig", [(0, 1.0)], indirect=True)
def test_off_the_loop_sleeps_at_once(rig):
    loop, guest, runtime = rig
    _frame_in_and_answer_out(loop, guest)
    loop.run_until_complete(asyncio.sleep(0.01))
    assert runtime.counters["loop.busy_poll.polls"] == 0
    assert runtime.poller.window.window == 0.0


@pytest.mark.parametrize("rig", [(200, 0.0)], indirect=True)     # no work is brief enough
def test_after_longer_work_the_loop_sleeps_at_once(rig):
    loop, guest, runtime = rig
    _frame_in_and_answer_out(loop, guest)
    loop.run_until_complete(asyncio.sleep(0.01))
    assert runtime.counters["loop.busy_poll.polls"] == 0
    assert runtime.poller.window.window == 50e-6        # unchanged: the gaps still count


@pytest.mark.parametrize("rig", [(200, 1.0)], indirect=True)
def test_the_batch_counts_the_tap_bytes_read_and_written(rig):
    loop, guest, runtime = rig
    answer = _frame_in_and_answer_out(loop, guest)
    moved = len(bytes(ARP_WHO_HAS_GATEWAY)) + len(answer)
    assert runtime.poller.batches.average == pytest.approx(moved * busypoll.BATCH_AVERAGE_WEIGHT)


# a 100 ms bound: the test's own gaps between frames never shut the window
@pytest.mark.parametrize("rig", [(100_000, 1.0)], indirect=True)
def test_while_recent_batches_were_bulk_sized_the_loop_sleeps_at_once(rig):
    loop, guest, runtime = rig
    runtime.poller.batches.average = 64 * 1024.0        # as after a bulk transfer's batches
    _frame_in_and_answer_out(loop, guest)
    assert runtime.counters["loop.busy_poll.polls"] == 0
    # small batches bring the average down: polling resumes (the window is still on)
    for _ in range(40):
        _frame_in_and_answer_out(loop, guest)
        if runtime.counters["loop.busy_poll.polls"]:
            break
    assert runtime.counters["loop.busy_poll.polls"] >= 1
    assert runtime.poller.batches.average <= busypoll.SMALL_BATCH_BYTES
