"""Loss recovery's two estimates of the network: round-trip time and what the peer holds.

`RttEstimator` turns round-trip samples into a retransmission timeout (RFC 6298); the
connection decides which segments may be timed (Karn's rule: new data only, one at a time)
and when to back off. The SACK scoreboard (RFC 2018 blocks from the peer, merged and bounded
as in RFC 6675 §5) tells the sender which holes below the highest SACKed byte to resend.
Both are small enough to replace (timestamps-based RTTM, RACK) without touching the
connection's arrival and transmit rules.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..seqnum import seq_gt, seq_le, seq_lt, seq_sub

SACK_SCOREBOARD_MAX = 32        # SACKed ranges remembered from the peer

# Merged [start, end) sequence ranges the peer SACKed, lowest first; None when empty.
Scoreboard = list[list[int]]


class RttEstimator:
    """SRTT, RTTVAR and RTO of RFC 6298 §2, with the §5.5 backoff."""

    __slots__ = ("srtt", "rttvar", "rto", "_rto_initial", "_rto_min", "_rto_max")

    def __init__(self, rto_initial: float, rto_min: float, rto_max: float) -> None:
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.rto = rto_initial
        self._rto_initial = rto_initial
        self._rto_min = rto_min
        self._rto_max = rto_max

    def sample(self, r: float) -> None:
        """A Karn-valid measurement (RFC 6298 §2.2/§2.3), then the RTO from it (§2.4)."""
        if r < 0:
            r = 0.0
        if self.srtt is None:
            self.srtt = r
            self.rttvar = r / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - r)
            self.srtt = 0.875 * self.srtt + 0.125 * r
        self.rto = self.estimate()

    def estimate(self) -> float:
        """SRTT + max(G, 4*RTTVAR) within [rto_min, rto_max] (G = 1 ms); the initial RTO
        before any sample."""
        if self.srtt is None:
            return self._rto_initial
        rto = self.srtt + max(4 * self.rttvar, 0.001)
        return min(max(rto, self._rto_min), self._rto_max)

    def back_off(self) -> None:
        """The timer expired: double the RTO, up to rto_max (RFC 6298 §5.5)."""
        self.rto = min(self.rto * 2, self._rto_max)

    def undo_backoff(self) -> None:
        """New data acknowledged after a timeout: the RTO from SRTT/RTTVAR again (as BSD and
        Linux do) rather than keeping the backoff until the next Karn-valid sample."""
        self.rto = self.estimate()


def sack_update(board: Scoreboard | None, blocks: Iterable[tuple[int, int]], ack: int,
                snd_max: int) -> Scoreboard | None:
    """Merge the peer's SACK blocks into the scoreboard; bounded, and only blocks above the
    cumulative ACK and below SND.MAX count (RFC 6675 §5, D-SACK ignored)."""
    board = board or []
    for left, right in blocks:
        if not (seq_lt(ack, right) and seq_le(right, snd_max) and seq_lt(left, right)):
            continue
        if seq_lt(left, ack):
            left = ack
        board.append([left, right])
    if not board:
        return None
    board.sort(key=lambda r: seq_sub(r[0], ack))
    merged = [board[0]]
    for left, right in board[1:]:
        last = merged[-1]
        if seq_le(left, last[1]):
            if seq_gt(right, last[1]):
                last[1] = right
        else:
            merged.append([left, right])
    return merged[-SACK_SCOREBOARD_MAX:]


def sack_trim(board: Scoreboard, una: int) -> Scoreboard | None:
    """Drop the ranges the cumulative ACK has passed; None once nothing is left."""
    while board and seq_le(board[0][1], una):
        board.pop(0)
    return board or None
