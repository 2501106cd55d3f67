"""TcpConnection: the RFC 9293 TCP state machine, sans-I/O.

Theory of operation
===================

One `TcpConnection` is one TCP endpoint (the slirpy side of a guest flow). It never touches a
socket or a clock: the owner (``Stack``) feeds it parsed `TcpSegment`s and commands with an
explicit ``now``, then drains three outputs:

* ``segments_to_send(now)`` -- tuples ``(seq, ack, flags, window_field, options, payload)``
  ready to be wrapped in IP headers. Call it once per batch of inputs: the pure ACK for
  everything received in the batch is coalesced into at most one segment, and into none when
  a data segment already carries it.
* ``next_event()``, or ``take_events()`` for all of them at once -- `Established`,
  `DataReceived`, `EofReceived`, `Reset`, `Closed` (always exactly once, always last).
* ``get_timer()`` -- the earliest deadline; call ``handle_timer(now)`` when it is reached.

What it implements
------------------
* The eleven states and the "SEGMENT ARRIVES" rules of RFC 9293 §3.10.7 in every state,
  active and passive open (the passive side emits nothing until ``accept()``: the stack
  opens the host socket first), simultaneous open and close, half-close both ways,
  TIME-WAIT (``params.time_wait``, short but present; RST is ignored there, RFC 1337).
* Segment acceptability (§3.10.7.4, zero windows included), RST/SYN/ACK hardening of
  RFC 5961 (§3.2 exact-RST, §4 SYN -> challenge ACK, §5.2 ACK range).
* MSS (536 when absent, RFC 9293 §3.7.1) and window scaling (RFC 7323 §2, only when both
  SYNs carry it, shift capped at 14). The right edge of the window we advertise never
  moves left (RFC 9293 §3.8.6.2.2): the window field is rounded *up* to the scale unit.
* Retransmission timeout per RFC 6298 with Karn's rule (one timed segment at a time,
  samples from retransmitted data discarded) and exponential backoff, undone once new data
  is acknowledged (BSD/Linux practice; RFC 6298 §5.7 keeps it until a new sample); after
  ``max_retransmits`` consecutive expiries the connection gives up with ``Reset('timeout')``.
* Reno congestion control in bytes (RFC 5681): IW = 10*SMSS (RFC 6928), slow start,
  congestion avoidance by byte counting, fast retransmit on the third duplicate ACK and
  NewReno fast recovery with partial ACKs (RFC 6582). An RTO goes back to SND.UNA
  (go-back-N with cwnd = 1 SMSS, ssthresh = max(FlightSize/2, 2*SMSS)).
* Zero-window probing (RFC 9293 §3.8.6.1): a persist timer with exponential backoff sends
  a one-byte probe at SND.UNA; it never gives up while the peer keeps answering.
* Receive side: in-order data is delivered at once and zero-copy (the event carries the
  segment's own payload object, or a memoryview slice of it when trimmed); out-of-order data
  is copied into a small queue bounded by the advertised window and by
  ``OOO_MAX_SEGMENTS``, and delivered when the hole fills. Every arrival that carries data
  is acknowledged: at once, or with ``params.ack_delay`` after that delay when it was
  in order, left less than two full-sized segments unacknowledged and carried no FIN, or a
  FIN that found us ESTABLISHED (so a request's ACK rides on the host's answer, and the ACK
  of a peer's FIN on our own FIN, instead of costing a frame of its own). Each
  out-of-order arrival gets its own duplicate ACK (RFC 5681 §4.2), carrying SACK blocks
  (RFC 2018) when both SYNs offered SACK, so the guest's kernel repairs losses within a
  round trip. ``set_receive_paused`` freezes the right edge so the window drains to zero
  while the consumer is saturated.
* Sender-side silly-window avoidance (RFC 9293 §3.8.6.2.1): a short segment is held back
  while data is in flight.
* GSO: with ``params.gso_max`` a data segment may carry up to ``gso_max`` bytes (rounded
  down to a multiple of SND.MSS); the kernel cuts it into MSS-sized packets.

What it deliberately does not do
--------------------------------
RFC 6675's full pipe accounting (sender-side SACK here is simpler: during fast recovery the
holes below the highest SACKed byte are resent one segment per duplicate ACK, NewReno
otherwise), RACK-TLP and limited transmit (a loss with few segments in flight waits for
the RTO), timestamps (so no PAWS and no RTTM on retransmissions), ECN, urgent data (URG is
ignored), data carried on SYNs (ignored; the peer retransmits it), Nagle,
keep-alives, challenge-ACK rate limiting (RFC 5961 §7: the per-flush coalescing bounds it),
a LISTEN state (the stack demultiplexes SYNs itself; ``TcpState.LISTEN`` exists for names
only), and ``FIN_WAIT_2`` timeouts (the flow table's idle expiry covers an absent peer).

Limits
------
State is bounded: the send buffer is whatever the owner queued (it bounds it with
``send_buffered``); the out-of-order queue holds at most the advertised window and at most
``OOO_MAX_SEGMENTS`` entries; at most one pending RST. An idle connection is a few hundred
bytes (``__slots__``, no preallocated buffers). No input segment sequence raises.
Sequence numbers are compared modulo 2**32 (`seqnum`), valid while windows stay < 2**30.

Zero-copy contract: a ``DataReceived.data`` memoryview aliases the buffer the segment was
parsed from; the consumer must use it (or copy it) before that buffer is reused.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from .sendbuf import SendBuffer
from .seqnum import seq_add, seq_between, seq_ge, seq_gt, seq_le, seq_lt, seq_sub
from .wire.tcp import ACK, FIN, PSH, RST, SYN, TcpOptions, TcpSegment

SACK_SCOREBOARD_MAX = 32        # SACKed ranges remembered from the peer
MAX_DUPACKS_PER_FLUSH = 16      # duplicate ACKs emitted for one batch of out-of-order arrivals
OOO_MAX_SEGMENTS = 256        # out-of-order entries kept; more are dropped (the peer resends)
DEFAULT_MSS = 536             # RFC 9293 §3.7.1 when the SYN carries no MSS option
MIN_MSS = 64                  # a hostile MSS of 1 would make every segment a byte
MAX_WSCALE = 14               # RFC 7323 §2.3
_CWND_MAX = 1 << 30
_MASK = 0xFFFFFFFF            # sequence arithmetic inlined in the per-segment paths (seqnum.py)
_HALF = 1 << 31
_SSTHRESH_INITIAL = 1 << 30


class TcpState(enum.Enum):
    CLOSED = "CLOSED"
    LISTEN = "LISTEN"
    SYN_SENT = "SYN-SENT"
    SYN_RECEIVED = "SYN-RECEIVED"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN-WAIT-1"
    FIN_WAIT_2 = "FIN-WAIT-2"
    CLOSE_WAIT = "CLOSE-WAIT"
    CLOSING = "CLOSING"
    LAST_ACK = "LAST-ACK"
    TIME_WAIT = "TIME-WAIT"

    # Members are singletons compared by identity: hash them the same way, in C. (Enum's own
    # __hash__ is Python code, and every `state in _SEND_STATES` paid for it.)
    __hash__ = object.__hash__


_CLOSED = TcpState.CLOSED
_SYN_SENT = TcpState.SYN_SENT
_SYN_RECEIVED = TcpState.SYN_RECEIVED
_ESTABLISHED = TcpState.ESTABLISHED
_FIN_WAIT_1 = TcpState.FIN_WAIT_1
_FIN_WAIT_2 = TcpState.FIN_WAIT_2
_CLOSE_WAIT = TcpState.CLOSE_WAIT
_CLOSING = TcpState.CLOSING
_LAST_ACK = TcpState.LAST_ACK
_TIME_WAIT = TcpState.TIME_WAIT

# States in which queued data may still be (re)transmitted.
_SEND_STATES = frozenset({_ESTABLISHED, _CLOSE_WAIT, _FIN_WAIT_1, _CLOSING, _LAST_ACK})
# States in which the peer may still send us data (RFC 9293 §3.10.7.4, seventh).
_RECV_STATES = frozenset({_ESTABLISHED, _FIN_WAIT_1, _FIN_WAIT_2})
# States in which our FIN has been queued and may be (re)sent.
_FIN_STATES = frozenset({_FIN_WAIT_1, _CLOSING, _LAST_ACK})


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
    # Where drops and challenge ACKs are counted (the owner's dotted counters), or None.
    counters: dict | None = field(default=None, compare=False, hash=False, repr=False)


# ---------------------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Established:
    """The three-way handshake completed."""


@dataclass(slots=True)        # not frozen, unlike the other events: one per data segment, and a
class DataReceived:          # frozen dataclass's __init__ costs about twice as much
    """In-order payload from the peer (zero-copy: the segment's payload object or a view of it)."""

    data: bytes | memoryview


@dataclass(frozen=True, slots=True)
class EofReceived:
    """The peer's FIN, after all of its data."""


@dataclass(frozen=True, slots=True)
class Reset:
    """The peer reset the connection ('reset') or we gave up ('timeout', 'syn_timeout')."""

    reason: str


@dataclass(frozen=True, slots=True)
class Closed:
    """Reached CLOSED; the owner may forget the connection. Always the last event."""


def _choose_wscale(rcv_buf: int) -> int:
    """Smallest shift whose rounded-up window field still fits 16 bits (RFC 7323 §2.3)."""
    shift = 0
    while shift < MAX_WSCALE and (rcv_buf + (1 << shift) - 1) >> shift > 0xFFFF:
        shift += 1
    return shift


Segment = tuple  # (seq, ack, flags, window_field, options_bytes, payload)


class TcpConnection:
    __slots__ = (
        "params", "state", "iss", "irs",
        "snd_una", "snd_nxt", "snd_wnd", "snd_mss", "rcv_nxt",
        "_snd_max", "_snd_wl1", "_snd_wl2", "_max_snd_wnd", "_snd_wscale", "_rcv_wscale",
        "_seg_cap", "_rcv_adv", "_rcv_paused", "_rcv_wnd",
        "_sndbuf", "_buf_seq", "_fin_queued",
        "_cwnd", "_ssthresh", "_cwnd_acc", "_dupacks", "_recover", "_in_recovery",
        "_rexmit_pending", "_probe_pending",
        "_srtt", "_rttvar", "_rto", "_rtt_seq", "_rtt_at", "_retries", "_persist_backoff",
        "_rto_at", "_persist_at", "_tw_at", "_syn_at",
        "_accepted", "_syn_pending", "_ws_ok", "_ack_needed", "_rst_out",
        "_ooo", "_rcv_fin_seq", "_events", "_ooo_acks", "_sack_ok", "_sack_last",
        "_sacked", "_high_rxt", "_rxt_budget", "_delack_at", "_rcv_acked",
    )

    def __init__(self, iss: int, now: float, params: TcpParams) -> None:
        self.params = params
        self.state = _CLOSED
        self.iss = iss & 0xFFFFFFFF
        self.irs = 0
        self.snd_una = self.iss
        self.snd_nxt = self.iss
        self._snd_max = self.iss
        self.snd_wnd = 0
        self.snd_mss = DEFAULT_MSS
        self.rcv_nxt = 0
        self._snd_wl1 = 0
        self._snd_wl2 = 0
        self._max_snd_wnd = 0
        self._snd_wscale = 0
        self._rcv_wscale = _choose_wscale(params.rcv_buf)
        self._seg_cap = DEFAULT_MSS
        self._rcv_adv = 0
        self._rcv_paused = False
        self._rcv_wnd = params.rcv_buf      # what we advertise past RCV.NXT (set_receive_window)
        self._sndbuf = SendBuffer()
        self._buf_seq = seq_add(self.iss, 1)
        self._fin_queued = False
        self._cwnd = 10 * DEFAULT_MSS
        self._ssthresh = _SSTHRESH_INITIAL
        self._cwnd_acc = 0
        self._dupacks = 0
        self._recover = self.iss
        self._in_recovery = False
        self._rexmit_pending = False
        self._probe_pending = False
        self._srtt: float | None = None
        self._rttvar = 0.0
        self._rto = params.rto_initial
        self._rtt_seq: int | None = None
        self._rtt_at = 0.0
        self._retries = 0
        self._persist_backoff = 0
        self._rto_at: float | None = None
        self._persist_at: float | None = None
        self._tw_at: float | None = None
        self._syn_at: float | None = None
        self._accepted = False
        self._syn_pending = False
        self._ws_ok = False
        self._ack_needed = False
        self._ooo_acks = 0                 # out-of-order arrivals since the last flush
        self._sack_ok = False              # both SYNs carried SACK-permitted (RFC 2018)
        self._sack_last = 0                # start of the most recent out-of-order arrival
        self._sacked: list | None = None   # scoreboard: merged [start, end) the peer SACKed
        self._high_rxt = 0                 # holes below this were retransmitted (RFC 6675 HighRxt)
        self._rxt_budget = 0               # hole retransmissions allowed now (one per dup ACK)
        self._rst_out: tuple | None = None
        self._delack_at: float | None = None   # a delayed ACK is due then
        self._rcv_acked = 0                    # RCV.NXT as carried by the last segment we sent
        self._ooo: list | None = None
        self._rcv_fin_seq: int | None = None
        self._events: list = []

    # ------------------------------------------------------------------------------- opening

    @classmethod
    def passive(cls, syn: TcpSegment, iss: int, now: float, params: TcpParams) -> "TcpConnection":
        """A connection from the peer's SYN, in SYN-RECEIVED; silent until `accept()`."""
        self = cls(iss, now, params)
        self.state = _SYN_RECEIVED
        self.irs = syn.seq
        self.rcv_nxt = seq_add(syn.seq, 1)
        self._peer_syn_options(syn.options)
        self.snd_wnd = syn.window                     # never scaled in a SYN (RFC 7323 §2.2)
        self._max_snd_wnd = self.snd_wnd
        self._snd_wl1 = syn.seq
        self._snd_wl2 = self.iss
        self._rcv_adv = seq_add(self.rcv_nxt, min(params.rcv_buf, 0xFFFF))
        self._syn_at = now + params.syn_timeout
        return self

    def accept(self, now: float) -> None:
        """The host side is ready: answer with SYN-ACK (retransmitted on RTO)."""
        if self.state is not _SYN_RECEIVED or self._accepted:
            return
        self._accepted = True
        self._syn_pending = True
        self._rtt_seq = seq_add(self.iss, 1)
        self._rtt_at = now
        self._rto_at = now + self._rto

    def refuse(self) -> None:
        """The host refused: RST|ACK <SEQ=0><ACK=IRS+1>, then CLOSED."""
        if self.state is not _SYN_RECEIVED:
            return
        self._rst_out = (0, self.rcv_nxt, RST | ACK, 0, b"", b"")
        self._close()

    @classmethod
    def active(cls, iss: int, now: float, params: TcpParams) -> "TcpConnection":
        """An active open: SYN-SENT, a SYN with MSS and window scale is pending."""
        self = cls(iss, now, params)
        self.state = _SYN_SENT
        self._syn_pending = True
        self._rtt_seq = seq_add(self.iss, 1)
        self._rtt_at = now
        self._rto_at = now + self._rto
        return self

    def _peer_syn_options(self, options: TcpOptions) -> None:
        mss = options.mss if options.mss is not None else DEFAULT_MSS
        self._set_snd_mss(mss)
        if options.wscale is not None:                # RFC 7323 §2.2: both SYNs must carry it
            self._ws_ok = True
            self._snd_wscale = min(options.wscale, MAX_WSCALE)
        else:
            self._ws_ok = False
            self._snd_wscale = 0
            self._rcv_wscale = 0
        self._sack_ok = options.sack_permitted

    def _set_snd_mss(self, peer_mss: int) -> None:
        mss = min(max(peer_mss, MIN_MSS), self.params.mss)
        self.snd_mss = mss
        gso = self.params.gso_max
        self._seg_cap = max(mss, gso // mss * mss) if gso > 0 else mss
        self._cwnd = 10 * mss                         # RFC 6928 initial window

    # ------------------------------------------------------------------------------ commands

    def send(self, data: bytes | memoryview) -> None:
        """Queue data for the peer. Ignored once the write side is shut or the connection died."""
        if self._fin_queued or self.state not in (_ESTABLISHED, _CLOSE_WAIT, _SYN_SENT, _SYN_RECEIVED):
            return
        self._sndbuf.append(data)

    @property
    def send_buffered(self) -> int:
        """Bytes queued: unsent plus sent but not yet acknowledged."""
        return len(self._sndbuf)

    @property
    def rcv_wnd(self) -> int:
        """The receive window as last advertised (right edge minus RCV.NXT)."""
        w = seq_sub(self._rcv_adv, self.rcv_nxt)
        return w if w > 0 else 0

    def shutdown_write(self, now: float) -> None:
        """Send FIN after all queued data (RFC 9293 §3.10.4 CLOSE); we keep receiving."""
        state = self.state
        if self._fin_queued or state in (_CLOSED, _TIME_WAIT):
            return
        if state is _ESTABLISHED:
            self.state = _FIN_WAIT_1
        elif state is _CLOSE_WAIT:
            self.state = _LAST_ACK
        elif state not in (_SYN_SENT, _SYN_RECEIVED):
            return
        # In SYN-SENT / SYN-RECEIVED the FIN waits for ESTABLISHED (§3.10.4).
        self._fin_queued = True

    def abort(self, now: float) -> None:
        """RST the peer (if synchronized) and go to CLOSED without a Reset event (§3.10.5)."""
        state = self.state
        if state is _CLOSED:
            return
        if state in _SEND_STATES or state is _FIN_WAIT_2 or (state is _SYN_RECEIVED and self._accepted):
            self._rst_out = (self._snd_max, self.rcv_nxt, RST | ACK, 0, b"", b"")
        self._close()

    def set_receive_paused(self, paused: bool, now: float) -> None:
        """Freeze (True) or reopen (False) the right edge of our receive window."""
        if paused == self._rcv_paused:
            return
        self._rcv_paused = paused
        if not paused and self.state in _RECV_STATES:
            self._ack_needed = True                   # window update at once

    def set_receive_window(self, size: int) -> None:
        """Advertise at most `size` bytes past RCV.NXT from now on, within [1, params.rcv_buf]
        (the window scale was chosen for rcv_buf). A smaller size never moves the advertised
        right edge left (RFC 9293 §3.8.6.2.2): the window narrows as data arrives."""
        cap = self.params.rcv_buf
        self._rcv_wnd = size if 0 < size < cap else cap

    # ------------------------------------------------------------------------------- outputs

    def next_event(self) -> object | None:
        events = self._events
        return events.pop(0) if events else None

    def take_events(self) -> list:
        """All pending events, oldest first (the same as calling `next_event` until None)."""
        events = self._events
        if events:
            self._events = []
        return events

    def get_timer(self) -> float | None:
        best = self._rto_at
        t = self._delack_at
        if t is not None and (best is None or t < best):
            best = t
        if self._persist_at is not None or self._tw_at is not None or self._syn_at is not None:
            for t in (self._persist_at, self._tw_at, self._syn_at):
                if t is not None and (best is None or t < best):
                    best = t
        return best

    def _close(self) -> None:
        if self.state is _CLOSED:
            return
        self.state = _CLOSED
        self._rto_at = self._persist_at = self._tw_at = self._syn_at = self._delack_at = None
        self._sndbuf = SendBuffer()
        self._ooo = None
        self._syn_pending = self._rexmit_pending = self._probe_pending = self._ack_needed = False
        self._rcv_fin_seq = None
        self._events.append(Closed())

    def _reset(self, reason: str) -> None:
        self._events.append(Reset(reason))
        self._close()

    def _window_field(self) -> int:
        """The window field for a non-SYN segment; moves the advertised right edge, never left."""
        shift = self._rcv_wscale
        rcv_nxt = self.rcv_nxt
        adv = self._rcv_adv
        cur = ((adv - rcv_nxt + _HALF) & _MASK) - _HALF       # seq_sub, inlined: a hot path
        if cur < 0:
            cur = 0
        wnd = cur
        if not self._rcv_paused:
            buf = self._rcv_wnd
            if buf > cur:
                wnd = buf
        field = (wnd + (1 << shift) - 1) >> shift
        if field > 0xFFFF:
            field = 0xFFFF
        edge = (rcv_nxt + (field << shift)) & _MASK
        if edge != adv and ((edge - adv) & _MASK) < _HALF:    # seq_gt(edge, adv)
            self._rcv_adv = edge
        return field

    def segments_to_send(self, now: float) -> list[tuple[int, int, int, int, bytes, bytes]]:
        out: list = []
        if self._rst_out is not None:
            out.append(self._rst_out)
            self._rst_out = None
        state = self.state
        if state is _CLOSED:
            return out
        if state is _SYN_SENT or state is _SYN_RECEIVED:
            if self._syn_pending:
                self._syn_pending = False
                self._ack_needed = False
                params = self.params
                if state is _SYN_SENT:
                    opts = TcpOptions(mss=params.mss, wscale=self._rcv_wscale, sack_permitted=True).pack()
                    out.append((self.iss, 0, SYN, min(params.rcv_buf, 0xFFFF), opts, b""))
                else:
                    opts = TcpOptions(mss=params.mss, wscale=self._rcv_wscale if self._ws_ok else None,
                                      sack_permitted=self._sack_ok).pack()
                    out.append((self.iss, self.rcv_nxt, SYN | ACK, min(params.rcv_buf, 0xFFFF), opts, b""))
                self.snd_nxt = self._snd_max = seq_add(self.iss, 1)
                self._rcv_acked = self.rcv_nxt
                if self._rto_at is None:
                    self._rto_at = now + self._rto
            elif self._ack_needed:
                self._ack_needed = False
                if state is _SYN_RECEIVED and self._accepted:
                    out.append((self._snd_max, self.rcv_nxt, ACK, min(self.params.rcv_buf, 0xFFFF), b"", b""))
            return out

        rcv_nxt = self.rcv_nxt
        wnd_field = self._window_field()
        sent = False
        if state in _SEND_STATES:
            sent = self._emit_data(out, now, rcv_nxt, wnd_field, state in _FIN_STATES)
        if self._ack_needed:
            self._ack_needed = False
            dups = self._ooo_acks
            if dups:
                # RFC 5681 §4.2: one immediate duplicate ACK per out-of-order segment, so a
                # peer without SACK reaches its fast-retransmit threshold (3) within one
                # batch. A data segment is not a duplicate ACK; bounded per flush.
                self._ooo_acks = 0
                ack = (self._snd_max, rcv_nxt, ACK, wnd_field, self._sack_option(), b"")
                out.extend([ack] * min(dups, MAX_DUPACKS_PER_FLUSH))
            elif not sent:
                out.append((self._snd_max, rcv_nxt, ACK, wnd_field, self._sack_option(), b""))
            sent = True
        if sent:
            # Whatever went out carries RCV.NXT: no delayed ACK is owed any more.
            self._rcv_acked = rcv_nxt
            self._delack_at = None
        return out

    def _sack_option(self) -> bytes:
        """SACK blocks for the out-of-order queue (RFC 2018 §4), on pure ACKs only.

        Data segments carry none: their size is cut to SND.MSS without options. The first
        block holds the most recent arrival; then the others, lowest first; at most four
        (no timestamps, so 36 of the 40 option bytes)."""
        q = self._ooo
        if not q or not self._sack_ok:
            return b""
        blocks: list[list[int]] = []
        for s, d in q:
            e = seq_add(s, len(d))
            if blocks and blocks[-1][1] == s:
                blocks[-1][1] = e
            else:
                blocks.append([s, e])
        last = self._sack_last
        first = 0
        for i, (s, e) in enumerate(blocks):
            if seq_le(s, last) and seq_lt(last, e):
                first = i
                break
        ordered = [blocks[first]] + blocks[:first] + blocks[first + 1:]
        return TcpOptions(sack_blocks=tuple((s, e) for s, e in ordered[:4])).pack()

    def _count(self, name: str) -> None:
        c = self.params.counters
        if c is not None:
            c[name] = c.get(name, 0) + 1

    def _update_scoreboard(self, blocks, ack: int) -> None:
        """Merge the peer's SACK blocks (RFC 2018) into the scoreboard; bounded, and only
        blocks above the cumulative ACK and below SND.MAX count (RFC 6675 §5, D-SACK ignored)."""
        board = self._sacked or []
        snd_max = self._snd_max
        for left, right in blocks:
            if not (seq_lt(ack, right) and seq_le(right, snd_max) and seq_lt(left, right)):
                continue
            if seq_lt(left, ack):
                left = ack
            board.append([left, right])
        if not board:
            self._sacked = None
            return
        board.sort(key=lambda r: seq_sub(r[0], ack))
        merged = [board[0]]
        for left, right in board[1:]:
            last = merged[-1]
            if seq_le(left, last[1]):
                if seq_gt(right, last[1]):
                    last[1] = right
            else:
                merged.append([left, right])
        self._sacked = merged[-SACK_SCOREBOARD_MAX:]

    def _emit_holes(self, out: list, now: float, rcv_nxt: int, wnd_field: int, buf_seq: int,
                    blen: int) -> bool:
        """Retransmit up to `_rxt_budget` un-SACKed segments between HighRxt and the highest
        SACKed byte; a pending retransmission stays pending while budget and holes remain."""
        una = self.snd_una
        board = self._sacked
        mss = self.snd_mss
        # drop what the cumulative ACK has passed
        while board and seq_le(board[0][1], una):
            board.pop(0)
        if not board:
            self._sacked = None
            return False
        h = self._high_rxt
        if seq_lt(h, una):
            h = una
        sent = False
        top = board[-1][1]
        i = 0
        while self._rxt_budget > 0 and seq_lt(h, top):
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
            out.append((h, rcv_nxt, ACK, wnd_field, b"", self._sndbuf.get(off, n)))
            sent = True
            h = seq_add(h, n)
            self._rxt_budget -= 1
        self._high_rxt = h
        if sent:
            self._rtt_seq = None                        # Karn: never time a retransmission
            if self._rto_at is None:
                self._rto_at = now + self._rto
        return sent

    def _emit_data(self, out: list, now: float, rcv_nxt: int, wnd_field: int, fin_ok: bool) -> bool:
        """Append retransmissions, probes and new data; return whether anything went out."""
        buf = self._sndbuf
        blen = len(buf)
        buf_seq = self._buf_seq
        una = self.snd_una
        mss = self.snd_mss
        fin_ok = fin_ok and self._fin_queued
        sent = False
        # With a SACK scoreboard: retransmit the holes below the highest SACKed byte, one
        # segment per duplicate ACK (a simple form of RFC 6675's NextSeg rule 1).
        if self._rexmit_pending and self._sacked:
            self._rexmit_pending = False
            sent = self._emit_holes(out, now, rcv_nxt, wnd_field, buf_seq, blen)
        # Fast retransmit / NewReno partial ACK: one SMSS at SND.UNA (RFC 5681 §3.2, RFC 6582).
        elif self._rexmit_pending:
            self._rexmit_pending = False
            off = seq_sub(una, buf_seq)
            n = min(blen - off, mss)
            flags = ACK
            if n > 0:
                payload = buf.get(off, n)
                if fin_ok and off + n == blen and seq_gt(self._snd_max, seq_add(buf_seq, blen)):
                    flags |= FIN
            elif fin_ok and off == blen and seq_gt(self._snd_max, seq_add(buf_seq, blen)):
                payload = b""
                flags |= FIN
            else:
                flags = 0
            if flags:
                out.append((una, rcv_nxt, flags, wnd_field, b"", payload))
                sent = True
                self._rtt_seq = None                # Karn: never time a retransmission
                if self._rto_at is None:
                    self._rto_at = now + self._rto

        nxt = self.snd_nxt
        off = ((nxt - buf_seq + _HALF) & _MASK) - _HALF       # seq_sub, inlined: a hot path
        flight = ((nxt - una + _HALF) & _MASK) - _HALF

        # Zero-window probe: one byte at SND.UNA when nothing is in flight (§3.8.6.1).
        if self._probe_pending:
            self._probe_pending = False
            if flight == 0 and off < blen and off >= 0:
                out.append((nxt, rcv_nxt, ACK, wnd_field, b"", buf.get(off, 1)))
                sent = True
                if seq_lt(self._snd_max, seq_add(nxt, 1)):
                    self._snd_max = seq_add(nxt, 1)

        snd_max = self._snd_max
        wnd_room_base = (((una - buf_seq + _HALF) & _MASK) - _HALF) + self.snd_wnd   # right edge, as a buffer offset
        cap = self._seg_cap
        cwnd = self._cwnd
        while True:
            avail = blen - off
            if avail <= 0:
                if fin_ok and avail == 0:           # FIN needs no window (it carries no data)
                    out.append((nxt, rcv_nxt, ACK | FIN, wnd_field, b"", b""))
                    sent = True
                    nxt = seq_add(nxt, 1)
                break
            room = wnd_room_base - off
            c = cwnd - flight
            if c < room:
                room = c
            if cap < room:
                room = cap
            n = avail if avail < room else room
            if n <= 0:
                break
            if n < avail and n < mss and flight > 0:
                break                               # sender SWS avoidance (§3.8.6.2.1)
            seq = (buf_seq + off) & _MASK
            flags = ACK
            if n == avail:
                flags = ACK | PSH
                if fin_ok:
                    flags = ACK | PSH | FIN         # FIN rides on the last data segment
            out.append((seq, rcv_nxt, flags, wnd_field, b"", buf.get(off, n)))
            sent = True
            if self._rtt_seq is None and seq == snd_max:
                self._rtt_seq = (seq + n) & _MASK    # time new data only (Karn)
                self._rtt_at = now
            off += n
            flight += n
            nxt = (nxt + n) & _MASK
            if flags & FIN:
                nxt = (nxt + 1) & _MASK
                break

        self.snd_nxt = nxt
        if nxt != snd_max and ((nxt - snd_max) & _MASK) < _HALF:     # seq_gt(nxt, snd_max)
            self._snd_max = nxt
        if sent and self._rto_at is None and nxt != una:
            self._rto_at = now + self._rto
        # Persist timer: unsent data, nothing in flight, no RTO pending -> window is closed.
        if off < blen and nxt == una and self._rto_at is None:
            if self._persist_at is None:
                self._persist_at = now + min(self._rto * (1 << min(self._persist_backoff, 30)), self.params.rto_max)
        else:
            self._persist_at = None
        return sent

    # -------------------------------------------------------------------------------- timers

    def handle_timer(self, now: float) -> None:
        if self.state is _CLOSED:
            return
        params = self.params
        if self._tw_at is not None and now >= self._tw_at:
            self._close()                            # TIME-WAIT expired (§3.10.8)
            return
        if self._syn_at is not None and now >= self._syn_at and self.state is _SYN_RECEIVED:
            self._reset("syn_timeout")
            return
        if self._delack_at is not None and now >= self._delack_at:
            self._delack_at = None
            self._ack_needed = True
        if self._rto_at is not None and now >= self._rto_at:
            self._retries += 1
            if self._retries > params.max_retransmits:
                self._reset("timeout")
                return
            self._rto = min(self._rto * 2, params.rto_max)      # RFC 6298 §5.5 back off
            self._rtt_seq = None                                # Karn
            state = self.state
            if state is _SYN_SENT or state is _SYN_RECEIVED:
                self._syn_pending = True
                self._rto_at = now + self._rto
            else:
                una = self.snd_una
                flight = seq_sub(self._snd_max, una)
                # RFC 5681 §3.1 eq. (4) and go-back-N from SND.UNA with cwnd = 1 SMSS.
                self._ssthresh = max(flight // 2, 2 * self.snd_mss)
                self._cwnd = self.snd_mss
                self._cwnd_acc = 0
                self._in_recovery = False
                self._dupacks = 0
                self._recover = self._snd_max                    # RFC 6582 §3.2 step 4
                self._rexmit_pending = False
                self._sacked = None                              # RFC 6675 §5.1: start over
                self._rxt_budget = 0
                self.snd_nxt = una
                if self.snd_wnd == 0:
                    self._rto_at = None                          # closed window: persist instead
                else:
                    self._rto_at = now + self._rto
        if self._persist_at is not None and now >= self._persist_at:
            self._retries += 1
            if self._retries > params.max_retransmits:
                self._reset("timeout")
                return
            self._probe_pending = True
            self._persist_backoff += 1
            self._persist_at = now + min(self._rto * (1 << min(self._persist_backoff, 30)), params.rto_max)

    def _rtt_sample(self, r: float) -> None:
        """RFC 6298 §2."""
        if r < 0:
            r = 0.0
        if self._srtt is None:
            self._srtt = r
            self._rttvar = r / 2
        else:
            self._rttvar = 0.75 * self._rttvar + 0.25 * abs(self._srtt - r)
            self._srtt = 0.875 * self._srtt + 0.125 * r
        self._rto = self._rto_from_estimate()

    def _rto_from_estimate(self) -> float:
        params = self.params
        if self._srtt is None:
            return params.rto_initial
        rto = self._srtt + max(4 * self._rttvar, 0.001)
        return min(max(rto, params.rto_min), params.rto_max)

    # ------------------------------------------------------------------------ segment arrives

    def receive_segment(self, seg: TcpSegment, now: float) -> None:
        """RFC 9293 §3.10.7 SEGMENT ARRIVES."""
        state = self.state
        if state is _CLOSED:
            return
        if state is _SYN_SENT:
            self._receive_in_syn_sent(seg, now)
            return
        flags = seg.flags
        seq = seg.seq
        if state is _SYN_RECEIVED:
            if flags & SYN and not flags & RST and seq == self.irs:
                # The peer's SYN again (our SYN-ACK was lost), or its SYN-ACK in a simultaneous open.
                if flags & ACK and self._accepted and seg.ack == self._snd_max == seq_add(self.iss, 1):
                    self._establish(seg, now)
                    self._ack_needed = True
                elif self._accepted:
                    self._syn_pending = True
                return
            if not self._accepted:
                if flags & RST and seq == self.rcv_nxt:
                    self._reset("reset")
                return

        payload = seg.payload
        plen = len(payload)
        seg_len = plen + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
        rcv_nxt = self.rcv_nxt
        wnd = seq_sub(self._rcv_adv, rcv_nxt)
        if wnd < 0:
            wnd = 0

        # first: sequence number acceptability (§3.10.7.4)
        if seq == rcv_nxt:                          # the common case, decided at once
            ok = seg_len == 0 or wnd > 0
        elif seg_len == 0:
            ok = wnd > 0 and ((seq - rcv_nxt) & _MASK) < wnd
        elif wnd == 0:
            ok = False
        else:
            ok = (((seq - rcv_nxt) & _MASK) < wnd
                  or ((seq + seg_len - 1 - rcv_nxt) & _MASK) < wnd)
        drop_text = False
        if not ok:
            if flags & RST:
                self._count("tcp.rx.drop.rst_out_of_window")
                return
            if wnd == 0 and seq == rcv_nxt and not flags & SYN:
                # A bare FIN at a closed window's edge is taken; a zero-window probe's ACK and
                # window still count, its text does not (§3.10.7.4: "valid ACKs ... processed").
                ok = True
                if plen:
                    drop_text = True
                    self._ack_needed = True
            if not ok:
                self._ack_needed = True
                self._count("tcp.rx.drop.out_of_window")
                if state is _TIME_WAIT and flags & FIN:
                    self._tw_at = now + self.params.time_wait    # the peer's FIN again (§3.10.7.4)
                return

        # second: RST (RFC 5961 §3.2)
        if flags & RST:
            if seq == rcv_nxt:
                if state is not _TIME_WAIT:          # RFC 1337: no TIME-WAIT assassination
                    self._reset("reset")
            else:
                self._ack_needed = True             # challenge ACK
                self._count("tcp.rx.challenge_ack.rst")
            return

        # fourth: SYN in a synchronized state (RFC 5961 §4)
        if flags & SYN:
            self._ack_needed = True
            self._count("tcp.rx.challenge_ack.syn")
            return

        # fifth: ACK
        if not flags & ACK:
            return
        ack = seg.ack
        if state is _SYN_RECEIVED:
            if seq_lt(self.snd_una, ack) and seq_le(ack, self._snd_max):
                self._establish(seg, now)
                state = self.state
            else:
                if self._rst_out is None:
                    self._rst_out = (ack, 0, RST, 0, b"", b"")
                return
        if seq_gt(ack, self._snd_max):
            self._ack_needed = True                 # ACK of data never sent (RFC 5961 §5.2)
            self._count("tcp.rx.challenge_ack.ack")
            return
        if seq_lt(ack, seq_add(self.snd_una, -self._max_snd_wnd)):
            self._count("tcp.rx.drop.old_ack")
            self._ack_needed = True
            return
        if state is _TIME_WAIT:
            if flags & FIN:
                self._ack_needed = True
                self._tw_at = now + self.params.time_wait
            return
        self._process_ack(seg, ack, plen, now)
        state = self.state
        if state is _CLOSED or state is _TIME_WAIT:
            return

        # seventh and eighth: text and FIN
        if drop_text:
            return
        if state in _RECV_STATES:
            if plen or flags & FIN:
                self._receive_text(seq, payload, plen, flags & FIN, now)
        elif plen or flags & FIN:
            self._ack_needed = True                 # after the peer's FIN: ignore the text (§3.10.7.4)

    def _receive_in_syn_sent(self, seg: TcpSegment, now: float) -> None:
        """§3.10.7.3."""
        flags = seg.flags
        iss = self.iss
        if flags & ACK:
            ack = seg.ack
            if not (seq_lt(iss, ack) and seq_le(ack, self._snd_max)):
                if not flags & RST and self._rst_out is None:
                    self._rst_out = (ack, 0, RST, 0, b"", b"")
                return
            if flags & RST:
                self._reset("reset")                # connection refused
                return
        elif flags & RST:
            return
        if not flags & SYN:
            return
        self.irs = seg.seq
        self.rcv_nxt = seq_add(seg.seq, 1)
        self._peer_syn_options(seg.options)
        self._rcv_adv = seq_add(self.rcv_nxt, min(self.params.rcv_buf, 0xFFFF))
        self.snd_wnd = seg.window                   # unscaled in SYNs (RFC 7323 §2.2)
        self._max_snd_wnd = self.snd_wnd
        self._snd_wl1 = seg.seq
        self._snd_wl2 = seg.ack if flags & ACK else iss
        if flags & ACK:
            self._establish(seg, now)
            self._ack_needed = True
        else:
            # Simultaneous open (§3.5 figure 8): SYN-RECEIVED, SYN-ACK from our ISS.
            self.state = _SYN_RECEIVED
            self._accepted = True
            self._syn_pending = True
            self._rtt_seq = None

    def _establish(self, seg: TcpSegment, now: float) -> None:
        ack = seg.ack
        if self._rtt_seq is not None and seq_ge(ack, self._rtt_seq):
            self._rtt_sample(now - self._rtt_at)
        self._rtt_seq = None
        if self._retries:
            self._cwnd = self.snd_mss                # RFC 5681 §3.1: IW = 1 SMSS after a lost SYN
        self._retries = 0
        self.snd_una = ack
        if seq_lt(self.snd_nxt, ack):
            self.snd_nxt = ack
        self._recover = seq_add(ack, -1)
        self._syn_at = None
        self._rto_at = None
        self._syn_pending = False
        self.state = _FIN_WAIT_1 if self._fin_queued else _ESTABLISHED
        self._events.append(Established())

    def _process_ack(self, seg: TcpSegment, ack: int, plen: int, now: float) -> None:
        """Fifth step of §3.10.7.4 for synchronized states, with RFC 5681/6582/6298."""
        una = self.snd_una
        mss = self.snd_mss
        if self._persist_at is not None:
            self._retries = 0                       # the peer answers our probes: it is alive
        if self._sack_ok and seg.options.sack_blocks:
            self._update_scoreboard(seg.options.sack_blocks, ack)
        acked = ((ack - una + _HALF) & _MASK) - _HALF         # seq_sub, inlined: a hot path
        if acked > 0:
            self.snd_una = ack
            nxt = self.snd_nxt
            if nxt != ack and ((ack - nxt) & _MASK) < _HALF:   # seq_lt(snd_nxt, ack)
                self.snd_nxt = ack
            n = ((ack - self._buf_seq + _HALF) & _MASK) - _HALF
            if n > 0:
                blen = len(self._sndbuf)
                if n > blen:
                    n = blen
                if n:
                    self._sndbuf.consume(n)
                    self._buf_seq = (self._buf_seq + n) & _MASK
            if self._retries:
                # New data acknowledged after a timeout: undo the backoff from SRTT/RTTVAR (as BSD
                # and Linux do) rather than keep it until the next Karn-valid sample.
                self._retries = 0
                self._rto = self._rto_from_estimate()
            rtt_seq = self._rtt_seq
            if rtt_seq is not None and ((ack - rtt_seq) & _MASK) < _HALF:   # seq_ge(ack, rtt_seq)
                self._rtt_sample(now - self._rtt_at)
                self._rtt_seq = None
            if self._in_recovery:
                if seq_ge(ack, self._recover):
                    # Full ACK: leave fast recovery (RFC 6582 §3.2 step 3).
                    flight = seq_sub(self._snd_max, ack)
                    self._cwnd = min(self._ssthresh, max(flight, mss) + mss)
                    self._in_recovery = False
                    self._rxt_budget = 0
                else:
                    # Partial ACK: retransmit the next hole, deflate (RFC 6582 §3.2 step 4).
                    self._rexmit_pending = True
                    self._rxt_budget += 1
                    self._cwnd = max(self._cwnd - acked + mss, mss)
            else:
                if self._cwnd < self._ssthresh:
                    self._cwnd += acked                      # slow start (byte counting, RFC 3465)
                else:
                    self._cwnd_acc += acked                  # congestion avoidance
                    if self._cwnd_acc >= self._cwnd:
                        self._cwnd_acc -= self._cwnd
                        self._cwnd += mss
                if self._cwnd > _CWND_MAX:
                    self._cwnd = _CWND_MAX
                if seq_gt(ack, self._recover):
                    self._recover = seq_add(ack, -1)         # keep "ack > recover" wrap-safe
            self._dupacks = 0
            self._rto_at = None if ack == self._snd_max else now + self._rto   # RFC 6298 §5.2/5.3
            # Our FIN acknowledged?
            if self._fin_queued and not self._sndbuf and ack == seq_add(self._buf_seq, 1):
                state = self.state
                if state is _FIN_WAIT_1:
                    self.state = _FIN_WAIT_2
                elif state is _CLOSING:
                    self._enter_time_wait(now)
                elif state is _LAST_ACK:
                    self._close()
                    return
        elif ack == una:
            # Duplicate ACK (RFC 5681 §2): no data, no SYN/FIN, same window, data outstanding.
            if (plen == 0 and not seg.flags & (SYN | FIN) and self.snd_nxt != una
                    and (seg.window << self._snd_wscale) == self.snd_wnd):
                self._dupacks += 1
                if self._in_recovery:
                    self._cwnd += mss                        # inflate (RFC 5681 §3.2 step 4)
                    self._rxt_budget += 1                    # one segment left the network
                    if self._sacked:
                        self._rexmit_pending = True
                elif self._dupacks == 3 and seq_gt(ack, self._recover):
                    flight = seq_sub(self._snd_max, una)
                    self._ssthresh = max(flight // 2, 2 * mss)
                    self._cwnd = self._ssthresh + 3 * mss
                    self._recover = self._snd_max
                    self._in_recovery = True
                    self._rexmit_pending = True
                    self._high_rxt = una
                    self._rxt_budget = 1
                    self._rtt_seq = None
        # Window update (§3.10.7.4 fifth, SND.WL1/SND.WL2).
        seq = seg.seq
        wl1 = self._snd_wl1
        if (((seq - wl1) & _MASK) < _HALF and wl1 != seq) or (
                wl1 == seq and ((ack - self._snd_wl2) & _MASK) < _HALF):
            wnd = seg.window << self._snd_wscale
            self.snd_wnd = wnd
            self._snd_wl1 = seq
            self._snd_wl2 = ack
            if wnd > self._max_snd_wnd:
                self._max_snd_wnd = wnd
            if wnd:
                self._persist_at = None
                self._persist_backoff = 0

    def _receive_text(self, seq: int, payload, plen: int, fin: int, now: float) -> None:
        """Seventh and eighth steps of §3.10.7.4: deliver, queue out of order, FIN.

        The ACK goes out at once, except with ``params.ack_delay`` for in-order data that
        leaves less than two full-sized segments unacknowledged and no hole (RFC 1122
        §4.2.3.2, RFC 5681 §4.2), and carries no FIN unless the FIN finds us ESTABLISHED:
        then it waits that long for data, or our own FIN, to ride on."""
        rcv_nxt = self.rcv_nxt
        delay = self.params.ack_delay
        if (delay and (not fin or self.state is _ESTABLISHED) and seq == rcv_nxt and self._ooo is None
                and ((rcv_nxt + plen - self._rcv_acked) & _MASK) < 2 * self.params.mss):
            if self._delack_at is None:
                self._delack_at = now + delay
        else:
            self._ack_needed = True
        start = seq_sub(seq, rcv_nxt)
        end = start + plen
        wnd = seq_sub(self._rcv_adv, rcv_nxt)
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
        events = self._events
        if start == 0:
            if end:
                events.append(DataReceived(payload))
                rcv_nxt = self.rcv_nxt = seq_add(rcv_nxt, end)
            if self._ooo is not None:
                self._drain_ooo()
            if fin and seq_add(seq, plen) == self.rcv_nxt:
                self._receive_fin(now)
            elif self._rcv_fin_seq is not None and self._rcv_fin_seq == self.rcv_nxt:
                self._receive_fin(now)
        else:
            if end > start:
                self._ooo_insert(start, payload)
                self._ooo_acks += 1
                self._sack_last = seq_add(rcv_nxt, start)
            if fin:
                self._rcv_fin_seq = seq_add(rcv_nxt, end)

    def _ooo_insert(self, start: int, payload) -> None:
        """Queue [start, start+len) (offsets from RCV.NXT) minus what is already queued."""
        nxt = self.rcv_nxt
        end = start + len(payload)
        q = self._ooo
        if q is None:
            q = self._ooo = []
        pieces = []
        cur = start
        for s, d in q:
            so = seq_sub(s, nxt)
            eo = so + len(d)
            if eo <= cur:
                continue
            if so >= end:
                break
            if so > cur:
                pieces.append((cur, so))
            cur = eo
            if cur >= end:
                break
        if cur < end:
            pieces.append((cur, end))
        if not pieces or len(q) + len(pieces) > OOO_MAX_SEGMENTS:
            return
        mv = memoryview(payload)
        for a, b in pieces:
            q.append((seq_add(nxt, a), mv[a - start:b - start].tobytes()))   # copy: the frame buffer is reused
        q.sort(key=lambda e: seq_sub(e[0], nxt))

    def _drain_ooo(self) -> None:
        q = self._ooo
        events = self._events
        while q:
            s, d = q[0]
            off = seq_sub(s, self.rcv_nxt)
            if off > 0:
                break
            q.pop(0)
            n = len(d) + off
            if n <= 0:
                continue
            if off < 0:
                d = memoryview(d)[-off:]
            events.append(DataReceived(d))
            self.rcv_nxt = seq_add(self.rcv_nxt, n)
        if not q:
            self._ooo = None

    def _receive_fin(self, now: float) -> None:
        """Eighth step of §3.10.7.4."""
        self.rcv_nxt = seq_add(self.rcv_nxt, 1)
        self._rcv_fin_seq = None
        self._ooo = None
        self._events.append(EofReceived())
        state = self.state
        if state is _ESTABLISHED:
            self.state = _CLOSE_WAIT
            delay = self.params.ack_delay
            if delay and not self._ack_needed:
                # The peer closed first (a server after its answer, `Connection: close`). Like
                # Linux in CLOSE-WAIT, wait ack_delay for our FIN: the host side usually closes
                # within it, and FIN+ACK is then one frame instead of two.
                if self._delack_at is None:
                    self._delack_at = now + delay
            else:
                self._ack_needed = True
            return
        self._ack_needed = True
        if state is _FIN_WAIT_1:
            self.state = _CLOSING                   # our FIN not yet acknowledged: simultaneous close
        elif state is _FIN_WAIT_2:
            self._enter_time_wait(now)

    def _enter_time_wait(self, now: float) -> None:
        self.state = _TIME_WAIT
        self._rto_at = self._persist_at = self._delack_at = None
        self._rexmit_pending = self._probe_pending = False
        self._tw_at = now + self.params.time_wait

    def __repr__(self) -> str:
        return (f"<TcpConnection {self.state.value} una={self.snd_una} nxt={self.snd_nxt} "
                f"wnd={self.snd_wnd} rcv_nxt={self.rcv_nxt} rcv_wnd={self.rcv_wnd}>")
