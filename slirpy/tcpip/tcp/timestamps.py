"""RFC 7323 timestamps of one connection: negotiation, the option every segment carries,
TS.Recent and PAWS, and RTT samples from the echo.

Why they matter here: a Linux guest takes no RTT sample in loss recovery after an RTO without
them (Karn's rule), so each lost retransmission doubles its RTO again and a transfer through a
lossy link (`--impair`) can wait minutes (perf/NOTES.md, session 9's "--impair stall"). With
them every ACK of new data is a valid sample for the guest, retransmitted or not.

Like `arrival` and `transmit`, these are functions of the connection's state record (its
``_ts_*``, ``_tx_*`` and ``_rxt_ts`` fields); the connection, the receive fast path
(`predict`) and the output rules call them. Our clock is milliseconds from a per-connection
offset (§5.4); all comparisons are modulo 2**32.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from ..wire.tcp import TcpOptions, ts_option

if TYPE_CHECKING:
    from .connection import TcpConnection

MASK: Final = 0xFFFFFFFF
HALF: Final = 1 << 31
TS_RECENT_VALID: Final = 24 * 86400.0     # seconds TS.Recent stays valid (§5.5)


def negotiate(c: TcpConnection, options: TcpOptions) -> None:
    """The peer's SYN (or SYN-ACK): on when it carries timestamps and we offer them (§3.2)."""
    ts = options.timestamp
    if ts is not None and c.params.timestamps:
        c._ts_ok = True
        c._ts_recent = ts[0]
    else:
        c._ts_ok = False


def tsval(c: TcpConnection, now: float) -> int:
    """Our TSval at `now`."""
    return (int(now * 1000.0) + c._ts_offset) & MASK


def refresh_options(c: TcpConnection, now: float) -> None:
    """`c._tx_opts`, the option of this flush's segments: made again only when our clock's
    millisecond or TS.Recent changed (a request/response exchange flushes many times a ms)."""
    ms = int(now * 1000.0)
    if ms != c._tx_ms or c._ts_recent != c._tx_recent:
        c._tx_ms = ms
        c._tx_recent = c._ts_recent
        c._tx_opts = ts_option((ms + c._ts_offset) & MASK, c._ts_recent)


def older(c: TcpConnection, val: int, now: float) -> bool:
    """Whether TSval `val` is older than TS.Recent, while TS.Recent is valid: set less than 24
    days ago (§5.5; past that a peer's clock may have moved on by more than half its range)."""
    return ((val - c._ts_recent) & MASK) >= HALF and now - c._ts_recent_at < TS_RECENT_VALID


def paws_rejects(c: TcpConnection, val: int, now: float) -> bool:
    """PAWS (§5.3 R1) for a segment that carries data or FIN with TSval `val`: True when it is
    older than TS.Recent, an old duplicate whose text must not be taken (it is then counted and
    an ACK owed). Pure ACKs are not checked: a reordered ACK is harmless."""
    if not older(c, val, now):
        return False
    c._ack_needed = True
    c._count("tcp.rx.drop.paws")
    return True


def take_recent(c: TcpConnection, seq: int, val: int, now: float) -> None:
    """§4.3: TS.Recent from a segment at or before Last.ACK.sent (RCV.NXT as our last segment
    carried it) and not older."""
    rcv_acked = c._rcv_acked
    if (seq == rcv_acked or ((rcv_acked - seq) & MASK) < HALF) and not older(c, val, now):
        c._ts_recent = val
        c._ts_recent_at = now


def rtt(c: TcpConnection, tsecr: int, now: float) -> float:
    """The round trip an echo measures (§4.1), in seconds; negative when the echo is not one of
    ours (later than our clock), or older than our last retransmission.

    Such an echo answers an earlier copy of what was sent again: the ACK our retransmission
    drew from the peer was lost, and this one answers a later copy of a segment it already
    had. It would measure the time since that earlier copy, seconds under heavy loss, and the
    RTO would follow (perf/NOTES.md, session 15). Linux's RTTM takes it; we time only the echo
    of a transmission at least as recent as every retransmission (Karn's rule, in TSval terms).
    """
    rxt = c._rxt_ts
    if rxt >= 0 and ((tsecr - rxt) & MASK) >= HALF:
        return -1.0
    d = (tsval(c, now) - tsecr) & MASK
    return d / 1000.0 if d < HALF else -1.0


def retransmitting(c: TcpConnection, now: float) -> None:
    """Something is sent again from `now` on (RTO, fast retransmit, SACK hole, window probe):
    no echo of an earlier copy is timed from here (`rtt`)."""
    c._rxt_ts = tsval(c, now)
