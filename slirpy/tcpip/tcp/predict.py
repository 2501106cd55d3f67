"""Header prediction (Van Jacobson's fast path, as BSD's and Linux's established-state input
have it): the common segment of an established flow, taken in a few lines.

Why a module: nearly every segment of a request/response exchange or a bulk transfer is the
next one in order, carries only ACK (and PSH), acknowledges new data or brings new data into
an open window, while nothing unusual is going on (no loss recovery, no probes, no FIN queued,
no hole in the receive queue). For such a segment SEGMENT ARRIVES (RFC 9293 §3.10.7.4)
reduces to: advance SND.UNA (RFC 6298 RTT sample and RTO, RFC 5681 congestion window), the
send window update (SND.WL1/SND.WL2), and deliver the text with the ACK owed at once or
delayed (RFC 1122 §4.2.3.2), which is what `receive_predicted` does, with the state record's
fields read once. Every other segment returns False before anything changed, and the caller
hands it to the general path (`TcpConnection.receive_segment`), whose result it must equal:
tests/unit/test_tcp_predict.py feeds both paths the same segments and compares them.

The caller has already checked what the segment itself says: flags exactly ACK or ACK|PSH
(no SYN, FIN, RST, URG, ECE, CWR), no TCP options but the timestamps (which it passes as
`tsval` and `tsecr`, `tsval` -1 when absent), checksum valid or vouched for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from . import timestamps
from .arrival import sample_rtt, update_send_window
from .congestion import NewReno
from .events import DataReceived
from .state import ESTABLISHED

if TYPE_CHECKING:
    from .connection import TcpConnection

MASK: Final = 0xFFFFFFFF
HALF: Final = 1 << 31


def receive_predicted(c: TcpConnection, seq: int, ack: int, window: int, payload: memoryview,
                      plen: int, now: float, tsval: int = -1, tsecr: int = 0) -> bool:
    """Take an ACK or ACK|PSH segment (no options but timestamps) if it is the predicted one;
    True when it was (the connection then holds exactly what `receive_segment` would have
    left), False when nothing was touched and the general path must take it."""
    if (c.state is not ESTABLISHED or seq != c.rcv_nxt or c._persist_at is not None
            or c._in_recovery or c._retries or c._fin_queued):
        return False
    una = c.snd_una
    acked = ((ack - una + HALF) & MASK) - HALF
    snd_max = c._snd_max
    if acked < 0 or ((snd_max - ack + HALF) & MASK) - HALF < 0:
        return False                                # old or unsent data acknowledged
    if acked == 0 and plen == 0:
        return False                                # a duplicate ACK or a window update
    low = (una - c._max_snd_wnd) & MASK
    if ack != low and ((low - ack) & MASK) < HALF:
        return False                                # RFC 5961 §5.2 (cannot hold here; kept exact)
    if plen:
        if c._ooo is not None or c._rcv_fin_seq is not None:
            return False
        if plen > ((c._rcv_adv - seq + HALF) & MASK) - HALF:
            return False                            # beyond the window (or a closed one)
    ts = tsval >= 0 and c._ts_ok
    if ts:
        if plen and timestamps.older(c, tsval, now):
            return False                            # PAWS (RFC 7323 §5.3): the general path drops it
        timestamps.take_recent(c, seq, tsval, now)
    if acked > 0:
        _advance_una(c, ack, acked, snd_max, now, tsecr if ts else 0)
    update_send_window(c, seq, ack, window)          # the fifth step's window update
    if plen:
        # Seventh step, in order and within the window (arrival.receive_text's common case).
        params = c.params
        delay = params.ack_delay
        if delay and ((seq + plen - c._rcv_acked) & MASK) < 2 * params.mss:
            if c._delack_at is None:
                c._delack_at = now + delay
        else:
            c._ack_needed = True
        c._events.append(DataReceived(payload))
        c.rcv_nxt = (seq + plen) & MASK
    return True


def _advance_una(c: TcpConnection, ack: int, acked: int, snd_max: int, now: float,
                 tsecr: int) -> None:
    """New data acknowledged outside recovery, with no retries and no FIN queued; `tsecr` the
    echo of a timestamps connection (0: none)."""
    c.snd_una = ack
    nxt = c.snd_nxt
    if nxt != ack and ((ack - nxt) & MASK) < HALF:
        c.snd_nxt = ack
    n = ((ack - c._buf_seq + HALF) & MASK) - HALF
    if n > 0:
        buf = c._sndbuf
        blen = len(buf)
        if n > blen:
            n = blen
        if n:
            buf.consume(n)
            c._buf_seq = (c._buf_seq + n) & MASK
    sample_rtt(c, ack, tsecr, now)
    cc = c._cc
    if isinstance(cc, NewReno):
        cc.on_ack(acked, c.snd_mss)                 # (a direct call when compiled)
    else:
        cc.on_ack(acked, c.snd_mss)
    recover = c._recover
    if ack != recover and ((ack - recover) & MASK) < HALF:
        c._recover = (ack - 1) & MASK
    c._dupacks = 0
    c._rto_at = None if ack == snd_max else now + c._rtt.rto
