"""busypoll: the adaptive polling window (haltpoll's rules), and where its bound comes from."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given, strategies as st

from slirpy import busypoll
from slirpy.busypoll import BatchAverage, PollWindow

MAX, START = 200e-6, 50e-6


def test_it_starts_at_the_start_value_and_grows_by_doubling_up_to_the_bound():
    w = PollWindow(MAX, START)
    assert w.window == START
    seen = []
    for _ in range(4):
        w.slept(150e-6)             # the event came after a sleep a longer window would have spared
        seen.append(w.window)
    assert seen == [100e-6, 200e-6, 200e-6, 200e-6]


def test_long_sleeps_halve_it_and_below_the_start_value_it_is_off():
    w = PollWindow(MAX, START)
    for _ in range(2):
        w.slept(100e-6)
    assert w.window == MAX
    seen = []
    for _ in range(4):
        w.slept(1.0)                # an idle gap: polling would only have burnt the CPU
        seen.append(w.window)
    assert seen == [100e-6, 50e-6, 0.0, 0.0]


def test_off_it_comes_back_at_the_start_value_when_gaps_get_short_again():
    w = PollWindow(MAX, START)
    w.slept(1.0)
    assert w.window == 0.0
    w.slept(30e-6)
    assert w.window == START


def test_a_zero_bound_never_polls():
    w = PollWindow(0.0, START)
    for gap in (1e-6, 1.0, 10e-6):
        w.slept(gap)
        assert w.window == 0.0


@given(st.lists(st.floats(min_value=0.0, max_value=5.0), max_size=60))
def test_the_window_is_always_off_or_between_the_start_value_and_the_bound(gaps):
    w = PollWindow(MAX, START)
    for gap in gaps:
        w.slept(gap)
        assert w.window == 0.0 or START <= w.window <= MAX


@pytest.fixture
def two_cpus(monkeypatch):
    monkeypatch.setattr(busypoll.os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.delenv(busypoll.ENV, raising=False)


def test_the_bound_is_the_option_then_the_environment_then_the_default(two_cpus, monkeypatch):
    assert busypoll.max_window_us() == busypoll.DEFAULT_MAX_US == 0        # off unless asked
    monkeypatch.setenv(busypoll.ENV, "75")
    assert busypoll.max_window_us() == 75
    assert busypoll.max_window_us(0) == 0
    assert busypoll.max_window_us(500) == 500


def test_one_usable_cpu_turns_it_off(monkeypatch):
    monkeypatch.setattr(busypoll.os, "sched_getaffinity", lambda pid: {3})
    monkeypatch.setenv(busypoll.ENV, "100")
    assert busypoll.max_window_us(500) == 0
    assert busypoll.max_window_us() == 0


@pytest.mark.parametrize("text", ["fast", "-5", "1.5"])
def test_a_bad_environment_value_is_reported_and_the_default_used(two_cpus, monkeypatch, caplog, text):
    monkeypatch.setenv(busypoll.ENV, text)
    with caplog.at_level(logging.WARNING, logger="slirpy"):
        assert busypoll.max_window_us() == busypoll.DEFAULT_MAX_US
    assert busypoll.ENV in caplog.text and repr(text) in caplog.text


def test_describe_says_where_the_bound_is_from(two_cpus, monkeypatch):
    assert busypoll.describe().startswith("off (default; `slirpy run --busy-poll 200`")
    monkeypatch.setenv(busypoll.ENV, "80")
    assert busypoll.describe().startswith(f"adaptive, up to 80 us ({busypoll.ENV};")
    monkeypatch.setenv(busypoll.ENV, "0")
    assert busypoll.describe() == f"off ({busypoll.ENV}=0)"
    monkeypatch.setattr(busypoll.os, "sched_getaffinity", lambda pid: {0})
    assert busypoll.describe() == "off (a single usable CPU)"


def test_request_response_batches_are_small_and_a_bulk_transfers_are_not():
    b = BatchAverage()
    assert all(b.small_after(150) for _ in range(50))          # ping-pong: a frame each way
    # bulk download: a 64 KiB super-frame, then the guest's ACK, over and over
    verdicts = [b.small_after(65_600 if i % 2 == 0 else 66) for i in range(40)]
    assert not any(verdicts[2:])                                 # its ACKs do not look small
    # the transfer ends, small exchanges again: small once the average has decayed
    after = [b.small_after(300) for _ in range(40)]
    assert not after[0] and after[-1]
    assert after.index(True) < 25


@given(st.lists(st.integers(min_value=0, max_value=200_000), max_size=80))
def test_the_batch_average_stays_between_the_smallest_and_largest_batch(sizes):
    b = BatchAverage()
    for n in sizes:
        b.small_after(n)
        assert 0.0 <= b.average <= max(sizes)
