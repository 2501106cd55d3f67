"""Congestion control, apart from the state machine that decides when it is consulted.

The connection knows *when* something happened (new data acknowledged, the third duplicate
ACK, a partial ACK during recovery, a retransmission timeout); the algorithm decides how
many bytes may be in flight (`cwnd`). Keeping that behind `CongestionControl` lets another
algorithm (CUBIC, or a fixed window for tests) replace `NewReno` without touching the
connection. Windows are in bytes.

`NewReno`: RFC 5681 (slow start, congestion avoidance by byte counting as RFC 3465),
IW = 10*SMSS (RFC 6928), fast recovery with NewReno's partial ACKs (RFC 6582). The entry and
exit of fast recovery, and the retransmissions, stay with the connection (`arrival`).
"""

from __future__ import annotations

from typing import Final, Protocol

CWND_MAX: Final = 1 << 30
SSTHRESH_INITIAL: Final = 1 << 30
INITIAL_WINDOW_SEGMENTS: Final = 10             # RFC 6928


class CongestionControl(Protocol):
    cwnd: int          # bytes that may be in flight
    ssthresh: int

    def on_mss(self, mss: int) -> None:
        """SND.MSS is known (the peer's SYN): the initial window."""

    def on_syn_lost(self, mss: int) -> None:
        """The SYN or SYN-ACK was retransmitted before the handshake completed."""

    def on_ack(self, acked: int, mss: int) -> None:
        """`acked` new bytes acknowledged outside fast recovery."""

    def on_fast_retransmit(self, flight: int, mss: int) -> None:
        """The third duplicate ACK: entering fast recovery."""

    def on_recovery_dupack(self, mss: int) -> None:
        """A further duplicate ACK during fast recovery: one segment left the network."""

    def on_partial_ack(self, acked: int, mss: int) -> None:
        """New data acknowledged during fast recovery, below the recovery point."""

    def on_recovery_exit(self, flight: int, mss: int) -> None:
        """The ACK covered the recovery point: fast recovery ends."""

    def on_timeout(self, flight: int, mss: int) -> None:
        """The retransmission timer expired with `flight` bytes outstanding."""


class NewReno:
    __slots__ = ("cwnd", "ssthresh", "_acc")

    def __init__(self, mss: int) -> None:
        self.cwnd = INITIAL_WINDOW_SEGMENTS * mss
        self.ssthresh = SSTHRESH_INITIAL
        self._acc = 0                   # bytes acknowledged toward the next SMSS (RFC 3465)

    def on_mss(self, mss: int) -> None:
        self.cwnd = INITIAL_WINDOW_SEGMENTS * mss                # RFC 6928

    def on_syn_lost(self, mss: int) -> None:
        self.cwnd = mss                                          # RFC 5681 §3.1: IW = 1 SMSS

    def on_ack(self, acked: int, mss: int) -> None:
        cwnd = self.cwnd
        if cwnd < self.ssthresh:
            cwnd += acked                                        # slow start (RFC 5681 §3.1)
        else:
            acc = self._acc + acked                              # congestion avoidance
            if acc >= cwnd:
                acc -= cwnd
                cwnd += mss
            self._acc = acc
        self.cwnd = cwnd if cwnd < CWND_MAX else CWND_MAX

    def on_fast_retransmit(self, flight: int, mss: int) -> None:
        self.ssthresh = max(flight // 2, 2 * mss)               # RFC 5681 §3.2 step 2, eq. (4)
        self.cwnd = self.ssthresh + 3 * mss                      # step 3

    def on_recovery_dupack(self, mss: int) -> None:
        self.cwnd += mss                                         # RFC 5681 §3.2 step 4: inflate

    def on_partial_ack(self, acked: int, mss: int) -> None:
        self.cwnd = max(self.cwnd - acked + mss, mss)            # RFC 6582 §3.2 step 4: deflate

    def on_recovery_exit(self, flight: int, mss: int) -> None:
        self.cwnd = min(self.ssthresh, max(flight, mss) + mss)   # RFC 6582 §3.2 step 3

    def on_timeout(self, flight: int, mss: int) -> None:
        self.ssthresh = max(flight // 2, 2 * mss)               # RFC 5681 §3.1 eq. (4)
        self.cwnd = mss                                          # loss window
        self._acc = 0
