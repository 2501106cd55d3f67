"""The ACK, text and FIN steps of SEGMENT ARRIVES (RFC 9293 §3.10.7.4, fifth to eighth) in
synchronized states, once `TcpConnection.receive_segment` has found the segment acceptable.

They are functions of the connection's state record, one call per arriving segment (the same
count as the methods they were), so the connection module keeps opening, commands, timers and
the acceptability checks. Loss recovery is NewReno (RFC 6582) with a SACK scoreboard; the
window arithmetic is `congestion`'s. Delivery is zero-copy for in-order data; out-of-order
data goes to `reassembly`.

Sequence arithmetic is inlined where it runs per segment (see `transmit`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from ..seqnum import seq_add, seq_ge, seq_gt, seq_sub
from ..wire.tcp import FIN, SYN, TcpSegment
from . import timestamps
from .events import DataReceived, EofReceived
from .reassembly import ReassemblyQueue
from .recovery import sack_update
from .state import CLOSE_TRANSITIONS, CLOSED, CLOSE_WAIT, ESTABLISHED, TIME_WAIT, CloseEvent

if TYPE_CHECKING:
    from .connection import TcpConnection

MASK: Final = 0xFFFFFFFF
HALF: Final = 1 << 31


def process_ack(c: TcpConnection, seg: TcpSegment, ack: int, plen: int, now: float) -> None:
    """Fifth step of §3.10.7.4 for synchronized states, with RFC 5681/6582/6298."""
    una = c.snd_una
    if c._persist_at is not None:
        c._retries = 0                          # the peer answers our probes: it is alive
    if c._sack_ok and seg.options.sack_blocks:
        c._sacked = sack_update(c._sacked, seg.options.sack_blocks, ack, c._snd_max)
    acked = ((ack - una + HALF) & MASK) - HALF           # seq_sub, inlined: a hot path
    if acked > 0:
        mss = c.snd_mss
        c.snd_una = ack
        nxt = c.snd_nxt
        if nxt != ack and ((ack - nxt) & MASK) < HALF:   # seq_lt(snd_nxt, ack)
            c.snd_nxt = ack
        n = ((ack - c._buf_seq + HALF) & MASK) - HALF
        if n > 0:
            blen = len(c._sndbuf)
            if n > blen:
                n = blen
            if n:
                c._sndbuf.consume(n)
                c._buf_seq = (c._buf_seq + n) & MASK
        if c._retries:
            c._retries = 0
            c._rtt.undo_backoff()
        ts = seg.options.timestamp
        sample_rtt(c, ack, ts[1] if ts is not None and c._ts_ok else 0, now)
        if c._in_recovery:
            _ack_in_recovery(c, ack, acked, mss)
        else:
            c._cc.on_ack(acked, mss)
            if seq_gt(ack, c._recover):
                c._recover = seq_add(ack, -1)             # keep "ack > recover" wrap-safe
        c._dupacks = 0
        c._rto_at = None if ack == c._snd_max else now + c._rtt.rto   # RFC 6298 §5.2/5.3
        if c._fin_queued and not c._sndbuf and ack == seq_add(c._buf_seq, 1):
            if _fin_acked(c, now):
                return
    elif ack == una:
        # Duplicate ACK (RFC 5681 §2): no data, no SYN/FIN, same window, data outstanding.
        if (plen == 0 and not seg.flags & (SYN | FIN) and c.snd_nxt != una
                and (seg.window << c._snd_wscale) == c.snd_wnd):
            _duplicate_ack(c, ack)
    update_send_window(c, seg.seq, ack, seg.window)


def sample_rtt(c: TcpConnection, ack: int, tsecr: int, now: float) -> None:
    """An ACK of new data: the RTT from its echo `tsecr` (RFC 7323 §4.1; 0: none, or not a
    timestamps connection), else from the timed segment if the ACK covers it (Karn)."""
    r = timestamps.rtt(c, tsecr, now) if tsecr else -1.0
    if r >= 0:
        c._rtt.sample(r)
        c._rtt_seq = None
        return
    rtt_seq = c._rtt_seq
    if rtt_seq is not None and ((ack - rtt_seq) & MASK) < HALF:   # seq_ge(ack, rtt_seq)
        c._rtt.sample(now - c._rtt_at)
        c._rtt_seq = None


def update_send_window(c: TcpConnection, seq: int, ack: int, window: int) -> None:
    """The window update of §3.10.7.4's fifth step (SND.WL1/SND.WL2): a segment newer than
    the last one that set the window sets it (an open window stops the persist timer)."""
    wl1 = c._snd_wl1
    if (((seq - wl1) & MASK) < HALF and wl1 != seq) or (
            wl1 == seq and ((ack - c._snd_wl2) & MASK) < HALF):
        wnd = window << c._snd_wscale
        c.snd_wnd = wnd
        c._snd_wl1 = seq
        c._snd_wl2 = ack
        if wnd > c._max_snd_wnd:
            c._max_snd_wnd = wnd
        if wnd:
            c._persist_at = None
            c._persist_backoff = 0


def _ack_in_recovery(c: TcpConnection, ack: int, acked: int, mss: int) -> None:
    if seq_ge(ack, c._recover):
        # Full ACK: leave fast recovery (RFC 6582 §3.2 step 3).
        c._cc.on_recovery_exit(seq_sub(c._snd_max, ack), mss)
        c._in_recovery = False
        c._rxt_budget = 0
    else:
        # Partial ACK: retransmit the next hole, deflate (RFC 6582 §3.2 step 4).
        c._rexmit_pending = True
        c._rxt_budget += 1
        c._cc.on_partial_ack(acked, mss)


def _duplicate_ack(c: TcpConnection, ack: int) -> None:
    """RFC 5681 §3.2: inflate during fast recovery; the third one starts it (RFC 6582 §3.2
    step 2: only when the ACK covers more than the last recovery point)."""
    mss = c.snd_mss
    c._dupacks += 1
    if c._in_recovery:
        c._cc.on_recovery_dupack(mss)
        c._rxt_budget += 1                      # one segment left the network
        if c._sacked:
            c._rexmit_pending = True
    elif c._dupacks == 3 and seq_gt(ack, c._recover):
        c._cc.on_fast_retransmit(seq_sub(c._snd_max, ack), mss)
        c._recover = c._snd_max
        c._in_recovery = True
        c._rexmit_pending = True
        c._high_rxt = ack
        c._rxt_budget = 1
        c._rtt_seq = None


def _fin_acked(c: TcpConnection, now: float) -> bool:
    """Our FIN is acknowledged (§3.10.7.4 fifth); True when the connection is now CLOSED."""
    new = CLOSE_TRANSITIONS.get((c.state, CloseEvent.FIN_ACKED))
    if new is None:
        return False
    if new is CLOSED:
        c._close()
        return True
    if new is TIME_WAIT:
        c._enter_time_wait(now)
    else:
        c.state = new
    return False


def receive_text(c: TcpConnection, seq: int, payload: bytes | memoryview, plen: int, fin: int,
                 now: float) -> None:
    """Seventh and eighth steps of §3.10.7.4: deliver, queue out of order, FIN.

    The ACK goes out at once, except with ``params.ack_delay`` for in-order data that
    leaves less than two full-sized segments unacknowledged and no hole (RFC 1122
    §4.2.3.2, RFC 5681 §4.2), and carries no FIN unless the FIN finds us ESTABLISHED:
    then it waits that long for data, or our own FIN, to ride on."""
    rcv_nxt = c.rcv_nxt
    delay = c.params.ack_delay
    if (delay and (not fin or c.state is ESTABLISHED) and seq == rcv_nxt and c._ooo is None
            and ((rcv_nxt + plen - c._rcv_acked) & MASK) < 2 * c.params.mss):
        if c._delack_at is None:
            c._delack_at = now + delay
    else:
        c._ack_needed = True
    start = seq_sub(seq, rcv_nxt)
    end = start + plen
    wnd = seq_sub(c._rcv_adv, rcv_nxt)
    if start < 0 or end > wnd:
        if end > wnd:
            fin = 0                             # a FIN beyond the window is not accepted
            keep_end = wnd
        else:
            keep_end = end
        keep_start = start if start > 0 else 0
        if keep_end > keep_start:
            payload = memoryview(payload)[keep_start - start:keep_end - start]
        else:
            payload = b""
        if fin and end < 0:
            fin = 0
        start = keep_start
        end = keep_start + len(payload)
    if start == 0:
        if end:
            c._events.append(DataReceived(payload))
            c.rcv_nxt = seq_add(rcv_nxt, end)
        if c._ooo is not None:
            _drain_reassembly(c)
        if (fin and seq_add(seq, plen) == c.rcv_nxt) or (
                c._rcv_fin_seq is not None and c._rcv_fin_seq == c.rcv_nxt):
            receive_fin(c, now)
    else:
        if end > start:
            q = c._ooo
            if q is None:
                q = c._ooo = ReassemblyQueue()
            q.insert(rcv_nxt, start, payload)
            c._ooo_acks += 1
            c._sack_last = seq_add(rcv_nxt, start)
        if fin:
            c._rcv_fin_seq = seq_add(rcv_nxt, end)


def _drain_reassembly(c: TcpConnection) -> None:
    q = c._ooo
    assert q is not None
    ready, c.rcv_nxt = q.drain(c.rcv_nxt)
    c._events.extend([DataReceived(d) for d in ready])
    if not len(q):
        c._ooo = None


def receive_fin(c: TcpConnection, now: float) -> None:
    """Eighth step of §3.10.7.4."""
    c.rcv_nxt = seq_add(c.rcv_nxt, 1)
    c._rcv_fin_seq = None
    c._ooo = None
    c._events.append(EofReceived())
    new = CLOSE_TRANSITIONS.get((c.state, CloseEvent.FIN_RECEIVED))
    if new is CLOSE_WAIT:
        c.state = new
        delay = c.params.ack_delay
        if delay and not c._ack_needed:
            # The peer closed first (a server after its answer, `Connection: close`). Like
            # Linux in CLOSE-WAIT, wait ack_delay for our FIN: the host side usually closes
            # within it, and FIN+ACK is then one frame instead of two.
            if c._delack_at is None:
                c._delack_at = now + delay
        else:
            c._ack_needed = True
        return
    c._ack_needed = True
    if new is TIME_WAIT:
        c._enter_time_wait(now)
    elif new is not None:
        c.state = new
