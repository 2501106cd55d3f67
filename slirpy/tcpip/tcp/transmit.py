"""What a connection sends: the advertised window, retransmissions, probes and new data.

These are the rules of RFC 9293 §3.8.6 (window management, SWS avoidance, zero-window
probes), RFC 5681/6582 (fast retransmit, NewReno partial ACKs) and RFC 6675's NextSeg in a
simple form (with a SACK scoreboard, the holes below the highest SACKed byte are resent, one
segment per duplicate ACK). They are functions of the connection's state record, called from
`TcpConnection.segments_to_send` once per flush: the connection stays one `__slots__` object
(no per-segment indirection), its rules are split by what they decide.

Sequence arithmetic is inlined where it runs per segment: ``((a - b + HALF) & MASK) - HALF``
is `seq_sub(a, b)`, ``a != b and ((b - a) & MASK) < HALF`` is `seq_lt(a, b)`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from ..sendbuf import Gather
from ..seqnum import seq_add, seq_gt, seq_le, seq_lt, seq_sub
from ..wire.tcp import ACK, FIN, PSH, SYN, TcpOptions, syn_options
from . import timestamps
from .reassembly import SACK_MAX_BLOCKS_TS
from .recovery import sack_trim
from .state import SYN_RECEIVED, SYN_SENT

if TYPE_CHECKING:
    from .connection import Segment, TcpConnection
    from .state import TcpState

MASK: Final = 0xFFFFFFFF
HALF: Final = 1 << 31


def window_field(c: TcpConnection) -> int:
    """The window field for a non-SYN segment; moves the advertised right edge, never left
    (RFC 9293 §3.8.6.2.2: the field is rounded *up* to the scale unit)."""
    shift = c._rcv_wscale
    rcv_nxt = c.rcv_nxt
    adv = c._rcv_adv
    cur = ((adv - rcv_nxt + HALF) & MASK) - HALF          # seq_sub, inlined
    if cur < 0:
        cur = 0
    wnd = cur
    if not c._rcv_paused:
        buf = c._rcv_wnd
        if buf > cur:
            wnd = buf
    field = (wnd + (1 << shift) - 1) >> shift
    if field > 0xFFFF:
        field = 0xFFFF
    edge = (rcv_nxt + (field << shift)) & MASK
    if edge != adv and ((edge - adv) & MASK) < HALF:      # seq_gt(edge, adv)
        c._rcv_adv = edge
    return field


def ack_options(c: TcpConnection) -> bytes:
    """A pure ACK's options: the timestamps (when on), then SACK blocks for the out-of-order
    queue (RFC 2018 §4; three fit beside timestamps, four without). Data segments carry no SACK
    blocks: their size is cut to SND.MSS less the timestamps."""
    q = c._ooo
    if not q or not c._sack_ok:
        return c._tx_opts
    if c._ts_ok:
        return c._tx_opts + TcpOptions(sack_blocks=q.sack_blocks(c._sack_last, SACK_MAX_BLOCKS_TS)).pack()
    return TcpOptions(sack_blocks=q.sack_blocks(c._sack_last)).pack()


def emit_handshake(c: TcpConnection, out: list[Segment], state: TcpState, now: float) -> None:
    """Our SYN or SYN-ACK (§3.10.7.2/3), or the ACK of a repeated SYN once accepted."""
    params = c.params
    if c._syn_pending:
        c._syn_pending = False
        c._ack_needed = False
        if state is SYN_SENT:
            opts = syn_options(params.mss, c._rcv_wscale, True,
                               (timestamps.tsval(c, now), 0) if params.timestamps else None)
            out.append((c.iss, 0, SYN, min(params.rcv_buf, 0xFFFF), opts, b""))
        else:
            opts = syn_options(params.mss, c._rcv_wscale if c._ws_ok else None, c._sack_ok,
                               (timestamps.tsval(c, now), c._ts_recent) if c._ts_ok else None)
            out.append((c.iss, c.rcv_nxt, SYN | ACK, min(params.rcv_buf, 0xFFFF), opts, b""))
        c.snd_nxt = c._snd_max = seq_add(c.iss, 1)
        c._rcv_acked = c.rcv_nxt
        if c._rto_at is None:
            c._rto_at = now + c._rtt.rto
    elif c._ack_needed:
        c._ack_needed = False
        if state is SYN_RECEIVED and c._accepted:
            out.append((c._snd_max, c.rcv_nxt, ACK, min(params.rcv_buf, 0xFFFF), c._tx_opts, b""))


def emit_data(c: TcpConnection, out: list[Segment], now: float, rcv_nxt: int, wnd_field: int,
              fin_ok: bool) -> bool:
    """Append retransmissions, probes and new data; return whether anything went out.
    `fin_ok`: our FIN is queued and the state lets it go."""
    sent = (c._rexmit_pending or c._probe_pending) and _emit_repairs(c, out, now, rcv_nxt,
                                                                    wnd_field, fin_ok)
    buf = c._sndbuf
    blen = len(buf)
    buf_seq = c._buf_seq
    una = c.snd_una
    nxt = c.snd_nxt
    off = ((nxt - buf_seq + HALF) & MASK) - HALF          # seq_sub, inlined
    flight = ((nxt - una + HALF) & MASK) - HALF
    snd_max = c._snd_max
    wnd_room_base = (((una - buf_seq + HALF) & MASK) - HALF) + c.snd_wnd   # right edge, as a buffer offset
    cap = c._seg_cap
    cwnd = c._cc.cwnd
    dupacks = c._dupacks
    if dupacks and dupacks <= 2 and not c._in_recovery:
        # Limited transmit (RFC 3042): a new segment per each of the first two duplicate ACKs,
        # so a loss with few segments in flight can still bring the third (fast retransmit)
        # rather than wait for the RTO.
        cwnd += dupacks * c.snd_mss
    opts = c._tx_opts
    while True:
        avail = blen - off
        if avail <= 0:
            if fin_ok and avail == 0:           # FIN needs no window (it carries no data)
                out.append((nxt, rcv_nxt, ACK | FIN, wnd_field, opts, b""))
                sent = True
                nxt = seq_add(nxt, 1)
            break
        room = wnd_room_base - off
        if cwnd - flight < room:
            room = cwnd - flight
        if cap < room:
            room = cap
        n = avail if avail < room else room
        if n <= 0:
            break
        if n < avail and n < c.snd_mss and flight > 0:
            break                               # sender SWS avoidance (§3.8.6.2.1)
        seq = (buf_seq + off) & MASK
        flags = ACK if n < avail else (ACK | PSH | FIN if fin_ok else ACK | PSH)   # FIN rides on the last
        out.append((seq, rcv_nxt, flags, wnd_field, opts, buf.get(off, n)))
        sent = True
        if c._rtt_seq is None and seq == snd_max:
            c._rtt_seq = (seq + n) & MASK        # time new data only (Karn)
            c._rtt_at = now
        off += n
        flight += n
        nxt = (nxt + n) & MASK
        if flags & FIN:
            nxt = (nxt + 1) & MASK
            break
    c.snd_nxt = nxt
    if nxt != snd_max and ((nxt - snd_max) & MASK) < HALF:     # seq_gt(nxt, snd_max)
        c._snd_max = nxt
    if sent and c._rto_at is None and nxt != una:
        c._rto_at = now + c._rtt.rto
    # Persist timer: unsent data, nothing in flight, no RTO pending -> window is closed.
    if off < blen and nxt == una and c._rto_at is None:
        if c._persist_at is None:
            arm_persist(c, now)
    else:
        c._persist_at = None
    return sent


def _emit_repairs(c: TcpConnection, out: list[Segment], now: float, rcv_nxt: int,
                  wnd_field: int, fin_ok: bool) -> bool:
    """What a loss or a closed window asks for, ahead of new data: the holes of the SACK
    scoreboard, else one fast retransmission; a zero-window probe."""
    sent = False
    if c._rexmit_pending:
        c._rexmit_pending = False
        if c._sacked:
            sent = emit_holes(c, out, now, rcv_nxt, wnd_field, c._buf_seq, len(c._sndbuf))
        else:
            sent = _emit_fast_retransmit(c, out, now, rcv_nxt, wnd_field, fin_ok)
    if c._probe_pending:
        c._probe_pending = False
        nxt = c.snd_nxt
        off = seq_sub(nxt, c._buf_seq)
        if nxt == c.snd_una and 0 <= off < len(c._sndbuf):
            _emit_probe(c, out, rcv_nxt, wnd_field, nxt, off)
            sent = True
    return sent


def arm_persist(c: TcpConnection, now: float) -> None:
    """The persist timer with exponential backoff (RFC 9293 §3.8.6.1)."""
    c._persist_at = now + min(c._rtt.rto * (1 << min(c._persist_backoff, 30)), c.params.rto_max)


def _emit_probe(c: TcpConnection, out: list[Segment], rcv_nxt: int, wnd_field: int, nxt: int,
                off: int) -> None:
    """Zero-window probe: one byte at SND.UNA when nothing is in flight (§3.8.6.1)."""
    out.append((nxt, rcv_nxt, ACK, wnd_field, c._tx_opts, c._sndbuf.get(off, 1)))
    if seq_lt(c._snd_max, seq_add(nxt, 1)):
        c._snd_max = seq_add(nxt, 1)


def _emit_fast_retransmit(c: TcpConnection, out: list[Segment], now: float, rcv_nxt: int,
                          wnd_field: int, fin_ok: bool) -> bool:
    """Fast retransmit / NewReno partial ACK: one SMSS at SND.UNA (RFC 5681 §3.2, RFC 6582)."""
    buf = c._sndbuf
    blen = len(buf)
    buf_seq = c._buf_seq
    una = c.snd_una
    off = seq_sub(una, buf_seq)
    n = min(blen - off, c.snd_mss)
    fin_unacked = fin_ok and seq_gt(c._snd_max, seq_add(buf_seq, blen))
    flags = ACK
    payload: bytes | memoryview | Gather = b""
    if n > 0:
        payload = buf.get(off, n)
        if fin_unacked and off + n == blen:
            flags |= FIN
    elif fin_unacked and off == blen:
        flags |= FIN
    else:
        return False
    out.append((una, rcv_nxt, flags, wnd_field, c._tx_opts, payload))
    c._rtt_seq = None                       # Karn: never time a retransmission
    timestamps.retransmitting(c, now)       # nor an echo of what came before it
    if c._rto_at is None:
        c._rto_at = now + c._rtt.rto
    return True


def emit_holes(c: TcpConnection, out: list[Segment], now: float, rcv_nxt: int, wnd_field: int,
               buf_seq: int, blen: int) -> bool:
    """Retransmit up to `_rxt_budget` un-SACKed segments between HighRxt and the highest
    SACKed byte; a pending retransmission stays pending while budget and holes remain."""
    una = c.snd_una
    board = c._sacked = sack_trim(c._sacked, una) if c._sacked else None
    if not board:
        return False
    mss = c.snd_mss
    h = c._high_rxt
    if seq_lt(h, una):
        h = una
    sent = False
    top = board[-1][1]
    i = 0
    while c._rxt_budget > 0 and seq_lt(h, top):
        while i < len(board) and seq_le(board[i][1], h):
            i += 1
        if i < len(board) and seq_le(board[i][0], h):
            h = board[i][1]                         # inside a SACKed block: skip it
            continue
        hole_end = board[i][0] if i < len(board) else top
        n = min(seq_sub(hole_end, h), mss)
        off = seq_sub(h, buf_seq)
        if n <= 0 or off < 0 or off + n > blen:
            break
        out.append((h, rcv_nxt, ACK, wnd_field, c._tx_opts, c._sndbuf.get(off, n)))
        sent = True
        h = seq_add(h, n)
        c._rxt_budget -= 1
    c._high_rxt = h
    if sent:
        c._rtt_seq = None                           # Karn: never time a retransmission
        timestamps.retransmitting(c, now)           # nor an echo of what came before it
        if c._rto_at is None:
            c._rto_at = now + c._rtt.rto
    return sent
