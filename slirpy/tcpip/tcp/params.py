"""The settings a `TcpConnection` is made with, and the protocol limits that bound them.

The owner (the stack) builds one `TcpParams` from its configuration and shares it between
all connections; a connection never changes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

MAX_DUPACKS_PER_FLUSH: Final = 16      # duplicate ACKs emitted for one batch of out-of-order arrivals
DEFAULT_MSS: Final = 536             # RFC 9293 §3.7.1 when the SYN carries no MSS option
MIN_MSS: Final = 64                  # a hostile MSS of 1 would make every segment a byte
MAX_WSCALE: Final = 14               # RFC 7323 §2.3
TIME_WAIT_SLOT: Final = 0.0625        # s: TIME-WAIT ends on a multiple of this (time_wait_end)


@dataclass(frozen=True, slots=True)
class TcpParams:
    mss: int = 1460              # MSS we advertise and the cap on what we send in one IP packet
    rcv_buf: int = 4 << 20       # our receive window at most (the window-scale shift comes from it)
    gso_max: int = 0             # >0: a data segment may carry this much (GSO super-segment)
    time_wait: float = 2.0
    rto_initial: float = 1.0
    rto_min: float = 0.2
    rto_max: float = 60.0
    max_retransmits: int = 12    # consecutive RTO expiries on one segment before Reset('timeout')
    syn_timeout: float = 75.0    # passive open not completed
    # >0: an in-order data segment is acknowledged this much later (RFC 9293 §3.8.6.3 / RFC 1122
    # §4.2.3.2), so that the answer the host sends back meanwhile carries the ACK; 0: at once.
    ack_delay: float = 0.0
    # Offer and accept RFC 7323 timestamps: the peer then takes an RTT sample from every ACK
    # of new data, retransmitted or not, so its RTO backoff ends as soon as recovery progresses.
    timestamps: bool = True
    # Where drops and challenge ACKs are counted (the owner's dotted counters), or None.
    counters: dict[str, int] | None = field(default=None, compare=False, hash=False, repr=False)


def choose_wscale(rcv_buf: int) -> int:
    """Smallest shift whose rounded-up window field still fits 16 bits (RFC 7323 §2.3), at
    most MAX_WSCALE: ceil(rcv_buf / 2**shift) <= 0xFFFF exactly when 2**shift is at least
    ceil(rcv_buf / 0xFFFF). (Closed form: every new connection asks.)"""
    if rcv_buf <= 0xFFFF:
        return 0
    shift = (-(-rcv_buf // 0xFFFF) - 1).bit_length()
    return shift if shift < MAX_WSCALE else MAX_WSCALE


def time_wait_end(now: float, time_wait: float) -> float:
    """When a TIME-WAIT entered at `now` ends: `time_wait` later, rounded up to a multiple of
    TIME_WAIT_SLOT. It needs no precision, and the flows that enter it within one slot then
    end together, in one timer callback of the runtime, instead of one callback each: a busy
    `Connection: close` client ends thousands a second. (A binary fraction: the multiple is
    exact.)"""
    return -(-(now + time_wait) // TIME_WAIT_SLOT) * TIME_WAIT_SLOT
