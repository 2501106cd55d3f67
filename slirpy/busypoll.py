"""Busy polling (opt-in: `slirpy run --busy-poll US`, SLIRPY_BUSY_POLL_US): after a burst of
work the event loop polls on for a short window before it sleeps, and the window adapts to the
traffic (the policy of Linux's cpuidle-haltpoll, at the level of one process).

Why (perf/NOTES.md, session 14): a request/response round trip through slirpy wakes slirpy's
process twice, and on a VM whose vCPU has gone idle that wake-up costs more than the work.
Ping-pong on this 2-vCPU VM (session 15): 43-52 us a round with the loop sleeping, 20-35 us
(bimodal) with `--busy-poll 200` or `100`, against slirp4netns's 29-39.  A process that polls
for the answer it is about to get is not woken: it sees the event on its next poll.

Why it is off by default: polling takes CPU.  While a chatty exchange lasts, slirpy keeps one
core busy (sockperf ping-pong: 3.0 CPU seconds in 3 s instead of 1.7), which a laptop's battery
or a shared CI machine pays for.  Per round trip of such an exchange it costs less (36 against
49 us of CPU, session 18), but a steady stream of small messages with gaps under the window
pays for every gap (12,000 messages/s: 0.71 of a core against 0.35), and with every CPU busy
the polling delays the process it waits for (40,000 messages/s: 141 against 59 us).  Bulk
transfers do not pay (`BatchAverage`: their batches are large, so the loop sleeps as without
polling; session 14's version, which lacked that test, ran a bulk upload 19 % slower).  Who
needs the latency more turns it on.

The window (`PollWindow`) follows haltpoll's rules: when the loop slept and the next event came
within `max_s` of it, a longer window would have caught it, so it grows (to `start_s` from
nothing, else doubled, up to `max_s`); when the loop slept longer than `max_s`, polling would
only have burnt the CPU, so it halves, and below `start_s` it is 0: no polling at all.  Traffic
with gaps over `max_s` (an idle sandbox, a health check every second) costs nothing; a chatty
exchange keeps one core busy while it lasts, in return for its latency.  The loop polls only
after brief work (AFTER_WORK_S: a round trip's, not a bulk batch's) while the recent batches
were small (SMALL_BATCH_BYTES), and each poll
first gives the CPU to any task waiting for it (sched_yield): like haltpoll, which polls only in
the idle loop, it takes idle time rather than another process's share.  Nothing polls with a
single usable CPU (the poller would hold up the process it waits for).

`PollWindow` is pure (times in, window out); `BusyPoller` does the polling for the runtime: its
`after_work` ends every flush (runtime.Runtime.flush).
"""

from __future__ import annotations

import os
import time
from typing import Callable, Final

from .sandbox.handoff import several_cpus

DEFAULT_MAX_US = 0         # off unless asked (see above)
SUGGESTED_MAX_US = 200     # haltpoll's default guest_halt_poll_ns is 200 us
START_US = 50              # and its guest_halt_poll_grow_start 50 us
ENV = "SLIRPY_BUSY_POLL_US"
# The loop polls after work that took at most this long (seconds): a round trip's ~10 us, not a
# bulk batch's hundreds (perf/NOTES.md, session 14).
AFTER_WORK_S: Final = 20e-6
# ... and only while its recent batches were small (TAP bytes read and written per flush, on a
# moving average): a request/response exchange moves a few hundred bytes to a few KiB a batch,
# a bulk transfer tens of KiB (a GSO super-frame alone is up to 64 KiB), so the average stays
# high through a bulk transfer's small batches too (its ACKs).
SMALL_BATCH_BYTES: Final = 8192
BATCH_AVERAGE_WEIGHT: Final = 0.125      # of the newest batch (as TCP's SRTT gain)

_monotonic: Final = time.monotonic
_sched_yield: Final = os.sched_yield


class PollWindow:
    """How long the loop polls after its work before it sleeps (seconds; 0: it sleeps at once)."""

    def __init__(self, max_s: float, start_s: float) -> None:
        self.max_s = max_s
        self.start_s = min(start_s, max_s)
        self.window = self.start_s if max_s > 0.0 else 0.0

    def slept(self, seconds: float) -> None:
        """The loop slept `seconds` (its window had run out, or was 0) before the next event."""
        if self.max_s <= 0.0:
            return
        if seconds <= self.max_s:
            self.window = self.start_s if self.window < self.start_s else min(self.max_s, self.window * 2.0)
        else:
            half = self.window / 2.0
            self.window = half if half >= self.start_s else 0.0


class BatchAverage:
    """Bytes moved per batch of work, on an exponentially weighted moving average: whether the
    recent traffic looks like request/response (small batches) rather than bulk."""

    def __init__(self, small: int = SMALL_BATCH_BYTES, weight: float = BATCH_AVERAGE_WEIGHT) -> None:
        self.small = small
        self.weight = weight
        self.average = 0.0

    def small_after(self, nbytes: int) -> bool:
        """Take the batch that moved `nbytes`; True while the average is at most `small`."""
        avg = self.average
        avg += (nbytes - avg) * self.weight
        self.average = avg
        return avg <= self.small


class BusyPoller:
    """The runtime's busy polling: after a flush the loop polls on (a call_soon chain keeps the
    loop's epoll_wait at timeout 0, each step first yielding the CPU) until `window` has passed,
    then sleeps; the sleep's length, measured at the next work, adapts the window."""

    def __init__(self, busy_poll_us: int | None, counters: dict[str, int]) -> None:
        self.window = PollWindow(max_window_us(busy_poll_us) / 1e6, START_US / 1e6)
        self.after_work_max = AFTER_WORK_S
        self.batches = BatchAverage()
        self._counters = counters
        self._call_soon: Callable[..., object] | None = None
        self._until = 0.0
        self._polling = False
        self._slept_at = 0.0
        self._poll_cb: Callable[[], None] = self._poll      # bound once: a step per loop pass

    def attach(self, call_soon: Callable[..., object]) -> None:
        self._call_soon = call_soon

    def after_work(self, now: float, nbytes: int) -> None:
        """The loop's work that began at `now` and moved `nbytes` through the TAP is done:
        account for the sleep it ended, then poll on, or sleep.  Only after brief work on small
        batches (a request's frame, an answer's read): a loop busy with bulk data gains nothing
        from polling, and its batches lose the CPU to it."""
        window = self.window
        if self._slept_at > 0.0:
            window.slept(now - self._slept_at)
            self._slept_at = 0.0
        small = self.batches.small_after(nbytes)
        if (window.window > 0.0 and small and self._call_soon is not None
                and _monotonic() - now <= self.after_work_max):
            self._until = now + window.window
            if not self._polling:
                self._polling = True
                c = self._counters
                c["loop.busy_poll.polls"] = c.get("loop.busy_poll.polls", 0) + 1
                self._call_soon(self._poll_cb)
        elif not self._polling:
            self._slept_at = now

    def _poll(self) -> None:
        now = _monotonic()
        if now < self._until and self._call_soon is not None:
            _sched_yield()          # a task that wants this CPU gets it: polling uses idle time
            self._call_soon(self._poll_cb)
        else:
            self._polling = False
            self._slept_at = now
            c = self._counters
            c["loop.busy_poll.sleeps"] = c.get("loop.busy_poll.sleeps", 0) + 1


def max_window_us(asked: int | None = None) -> int:
    """The window's upper bound in microseconds: `asked` (--busy-poll, checked by its parser),
    else SLIRPY_BUSY_POLL_US, else DEFAULT_MAX_US; 0 when fewer than two CPUs are usable.  A
    malformed or negative SLIRPY_BUSY_POLL_US is reported once (logging) and the default used."""
    if asked is None:
        text = os.environ.get(ENV, "").strip()
        asked = DEFAULT_MAX_US
        if text:
            try:
                asked = int(text)
                if asked < 0:
                    raise ValueError
            except ValueError:
                import logging
                logging.getLogger("slirpy").warning("%s=%r is not a number of microseconds >= 0: "
                                                    "using %d", ENV, text, DEFAULT_MAX_US)
                asked = DEFAULT_MAX_US
    return asked if several_cpus() else 0


def describe() -> str:
    """For `slirpy --version` (and perf/bench's header): the default bound and where it is from."""
    us = max_window_us()
    if us == 0:
        if max_window_us(1) == 0:
            return "off (a single usable CPU)"
        if os.environ.get(ENV, "").strip():
            return f"off ({ENV}=0)"
        return f"off (default; `slirpy run --busy-poll {SUGGESTED_MAX_US}` or {ENV}={SUGGESTED_MAX_US})"
    source = ENV if os.environ.get(ENV, "").strip() else "default"
    return f"adaptive, up to {us} us ({source}; `slirpy run --busy-poll US`)"
