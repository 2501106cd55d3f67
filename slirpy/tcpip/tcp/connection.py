"""TcpConnection: the RFC 9293 TCP state machine, sans-I/O.

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

This module holds the state record (one ``__slots__`` object: the per-segment paths read it
directly, with sequence arithmetic inlined), opening, commands, timers and the first steps of
SEGMENT ARRIVES. The other steps and the output rules are in `arrival` and `transmit`, the
timestamps' in `timestamps`; the states and the close-side transition table in `state`; congestion control, the RTT estimator
and SACK scoreboard, and out-of-order reassembly behind small interfaces in `congestion`,
`recovery` and `reassembly`.

What the connection implements, and what it deliberately does not, is summed up in the
package docstring (`slirpy.tcpip.tcp`).

Zero-copy contract: a ``DataReceived.data`` memoryview aliases the buffer the segment was
parsed from; the consumer must use it (or copy it) before that buffer is reused.
"""

from __future__ import annotations

from ..sendbuf import Gather, SendBuffer
from ..seqnum import seq_add, seq_ge, seq_le, seq_lt, seq_sub
from ..wire.tcp import ACK, FIN, RST, SYN, TS_OPTION_LEN, TcpOptions, TcpSegment
from . import timestamps
from .arrival import process_ack, receive_text
from .congestion import CongestionControl, NewReno
from .events import Closed, Established, Reset, TcpEvent
from .params import (DEFAULT_MSS, MAX_DUPACKS_PER_FLUSH, MAX_WSCALE, MIN_MSS, TcpParams, choose_wscale,
                     time_wait_end)
from .reassembly import ReassemblyQueue
from .recovery import RttEstimator, Scoreboard
from .state import (
    CLOSE_TRANSITIONS, CLOSED, FIN_STATES, FIN_WAIT_1, FIN_WAIT_2, OPEN_STATES, RECV_STATES,
    SEND_STATES, SYN_RECEIVED, SYN_SENT, TIME_WAIT, ESTABLISHED, CloseEvent, TcpState,
)
from .transmit import HALF, MASK, ack_options, arm_persist, emit_data, emit_handshake, window_field

# (seq, ack, flags, window_field, options, payload); the payload is the send buffer's view.
Segment = tuple[int, int, int, int, bytes, bytes | memoryview | Gather]


class TcpConnection:
    __slots__ = (
        "params", "state", "iss", "irs",
        "snd_una", "snd_nxt", "snd_wnd", "snd_mss", "rcv_nxt",
        "_snd_max", "_snd_wl1", "_snd_wl2", "_max_snd_wnd", "_snd_wscale", "_rcv_wscale",
        "_seg_cap", "_rcv_adv", "_rcv_paused", "_rcv_wnd",
        "_sndbuf", "_buf_seq", "_fin_queued",
        "_cc", "_dupacks", "_recover", "_in_recovery",
        "_rexmit_pending", "_probe_pending",
        "_rtt", "_rtt_seq", "_rtt_at", "_retries", "_persist_backoff",
        "_rto_at", "_persist_at", "_tw_at", "_syn_at",
        "_accepted", "_syn_pending", "_ws_ok", "_ack_needed", "_rst_out",
        "_ooo", "_rcv_fin_seq", "_events", "_ooo_acks", "_sack_ok", "_sack_last",
        "_sacked", "_high_rxt", "_rxt_budget", "_delack_at", "_rcv_acked",
        "_ts_ok", "_ts_recent", "_ts_recent_at", "_ts_offset", "_tx_opts", "_tx_ms", "_tx_recent",
        "_rxt_ts",
    )

    def __init__(self, iss: int, now: float, params: TcpParams) -> None:
        self.params = params
        self.state = CLOSED
        self.iss = iss & MASK
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
        self._rcv_wscale = choose_wscale(params.rcv_buf)
        self._seg_cap = DEFAULT_MSS
        self._rcv_adv = 0
        self._rcv_paused = False
        self._rcv_wnd = params.rcv_buf      # what we advertise past RCV.NXT (set_receive_window)
        self._sndbuf = SendBuffer()
        self._buf_seq = seq_add(self.iss, 1)
        self._fin_queued = False
        self._cc: CongestionControl = NewReno(DEFAULT_MSS)
        self._dupacks = 0
        self._recover = self.iss           # RFC 6582 "recover"
        self._in_recovery = False          # in NewReno fast recovery
        self._rexmit_pending = False
        self._probe_pending = False
        self._rtt = RttEstimator(params.rto_initial, params.rto_min, params.rto_max)
        self._rtt_seq: int | None = None   # the timed segment ends here (Karn: one at a time)
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
        self._sacked: Scoreboard | None = None   # what the peer SACKed (recovery.sack_update)
        self._high_rxt = 0                 # holes below this were retransmitted (RFC 6675 HighRxt)
        self._rxt_budget = 0               # hole retransmissions allowed now (one per dup ACK)
        self._rst_out: Segment | None = None
        self._delack_at: float | None = None   # a delayed ACK is due then
        self._rcv_acked = 0                    # RCV.NXT as carried by the last segment we sent
        self._ooo: ReassemblyQueue | None = None
        self._rcv_fin_seq: int | None = None
        self._events: list[TcpEvent] = []
        self._ts_ok = False                # both SYNs carried timestamps (RFC 7323; timestamps.py)
        self._ts_recent = 0                # TS.Recent: the TSval we echo (§4.3)
        self._ts_recent_at = now           # when it was set (§5.5: valid for 24 days)
        self._ts_offset = self.iss         # our TSval = ms clock + this (§5.4: random per connection)
        self._tx_opts = b""                # the options of this flush's non-SYN segments,
        self._tx_ms = -1                   # made at this millisecond of our clock
        self._tx_recent = 0                # with this TS.Recent (unchanged: the same bytes)
        self._rxt_ts = -1                  # our TSval when we last sent anything again (-1: never)

    # ------------------------------------------------------------------------------- opening

    @classmethod
    def passive(cls, syn: TcpSegment, iss: int, now: float, params: TcpParams) -> TcpConnection:
        """A connection from the peer's SYN, in SYN-RECEIVED; silent until `accept()`."""
        self = TcpConnection(iss, now, params)     # not cls(): a native call when compiled
        self.state = SYN_RECEIVED
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
        if self.state is not SYN_RECEIVED or self._accepted:
            return
        self._accepted = True
        self._syn_pending = True
        self._rtt_seq = seq_add(self.iss, 1)
        self._rtt_at = now
        self._rto_at = now + self._rtt.rto

    def refuse(self) -> None:
        """The host refused: RST|ACK <SEQ=0><ACK=IRS+1>, then CLOSED."""
        if self.state is not SYN_RECEIVED:
            return
        self._rst_out = (0, self.rcv_nxt, RST | ACK, 0, b"", b"")
        self._close()

    @classmethod
    def active(cls, iss: int, now: float, params: TcpParams) -> TcpConnection:
        """An active open: SYN-SENT, a SYN with MSS and window scale is pending."""
        self = TcpConnection(iss, now, params)     # not cls(): a native call when compiled
        self.state = SYN_SENT
        self._syn_pending = True
        self._rtt_seq = seq_add(self.iss, 1)
        self._rtt_at = now
        self._rto_at = now + self._rtt.rto
        return self

    def _peer_syn_options(self, options: TcpOptions) -> None:
        timestamps.negotiate(self, options)
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
        # The MSS counts no options (RFC 6691): every segment's 12 option bytes come off it.
        mss = min(max(peer_mss, MIN_MSS), self.params.mss) - (TS_OPTION_LEN if self._ts_ok else 0)
        self.snd_mss = mss
        gso = self.params.gso_max
        self._seg_cap = max(mss, gso // mss * mss) if gso > 0 else mss
        self._cc.on_mss(mss)

    # ------------------------------------------------------------------------------ commands

    def send(self, data: bytes | memoryview) -> None:
        """Queue data for the peer. Ignored once the write side is shut or the connection died."""
        if self._fin_queued or self.state not in OPEN_STATES:
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
        if self._fin_queued or state is CLOSED or state is TIME_WAIT:
            return
        new = CLOSE_TRANSITIONS.get((state, CloseEvent.CLOSE))
        if new is not None:
            self.state = new
        elif state is not SYN_SENT and state is not SYN_RECEIVED:
            return
        # In SYN-SENT / SYN-RECEIVED the FIN waits for ESTABLISHED (§3.10.4).
        self._fin_queued = True

    def abort(self, now: float) -> None:
        """RST the peer (if synchronized) and go to CLOSED without a Reset event (§3.10.5)."""
        state = self.state
        if state is CLOSED:
            return
        if state in SEND_STATES or state is FIN_WAIT_2 or (state is SYN_RECEIVED and self._accepted):
            self._rst_out = (self._snd_max, self.rcv_nxt, RST | ACK, 0, b"", b"")
        self._close()

    def set_receive_paused(self, paused: bool, now: float) -> None:
        """Freeze (True) or reopen (False) the right edge of our receive window."""
        if paused == self._rcv_paused:
            return
        self._rcv_paused = paused
        if not paused and self.state in RECV_STATES:
            self._ack_needed = True                   # window update at once

    def set_receive_window(self, size: int) -> None:
        """Advertise at most `size` bytes past RCV.NXT from now on, within [1, params.rcv_buf]
        (the window scale was chosen for rcv_buf). A smaller size never moves the advertised
        right edge left (RFC 9293 §3.8.6.2.2): the window narrows as data arrives."""
        cap = self.params.rcv_buf
        self._rcv_wnd = size if 0 < size < cap else cap

    # ------------------------------------------------------------------------------- outputs

    def next_event(self) -> TcpEvent | None:
        events = self._events
        return events.pop(0) if events else None

    def take_events(self) -> list[TcpEvent]:
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
        if self.state is CLOSED:
            return
        self.state = CLOSED
        self._rto_at = self._persist_at = self._tw_at = self._syn_at = self._delack_at = None
        self._sndbuf = SendBuffer()
        self._ooo = None
        self._syn_pending = self._rexmit_pending = self._probe_pending = self._ack_needed = False
        self._rcv_fin_seq = None
        self._events.append(Closed())

    def _reset(self, reason: str) -> None:
        self._events.append(Reset(reason))
        self._close()

    def segments_to_send(self, now: float) -> list[Segment]:
        out: list[Segment] = []
        if self._rst_out is not None:
            out.append(self._rst_out)
            self._rst_out = None
        state = self.state
        if state is CLOSED:
            return out
        if self._ts_ok:
            timestamps.refresh_options(self, now)
        if state is SYN_SENT or state is SYN_RECEIVED:
            emit_handshake(self, out, state, now)
            return out
        rcv_nxt = self.rcv_nxt
        wnd_field = window_field(self)
        sent = False
        if state in SEND_STATES:
            sent = emit_data(self, out, now, rcv_nxt, wnd_field, self._fin_queued and state in FIN_STATES)
        if self._ack_needed:
            self._ack_needed = False
            dups = self._ooo_acks
            if dups:
                # RFC 5681 §4.2: one immediate duplicate ACK per out-of-order segment, so a
                # peer without SACK reaches its fast-retransmit threshold (3) within one
                # batch. A data segment is not a duplicate ACK; bounded per flush.
                self._ooo_acks = 0
                ack: Segment = (self._snd_max, rcv_nxt, ACK, wnd_field, ack_options(self), b"")
                out.extend([ack] * min(dups, MAX_DUPACKS_PER_FLUSH))
            elif not sent:
                out.append((self._snd_max, rcv_nxt, ACK, wnd_field, ack_options(self), b""))
            sent = True
        if sent:
            # Whatever went out carries RCV.NXT: no delayed ACK is owed any more.
            self._rcv_acked = rcv_nxt
            self._delack_at = None
        return out

    def _count(self, name: str) -> None:
        c = self.params.counters
        if c is not None:
            c[name] = c.get(name, 0) + 1

    # -------------------------------------------------------------------------------- timers

    def handle_timer(self, now: float) -> None:
        if self.state is CLOSED:
            return
        if self._tw_at is not None and now >= self._tw_at:
            self._close()                            # TIME-WAIT expired (§3.10.8)
            return
        if self._syn_at is not None and now >= self._syn_at and self.state is SYN_RECEIVED:
            self._reset("syn_timeout")
            return
        if self._delack_at is not None and now >= self._delack_at:
            self._delack_at = None
            self._ack_needed = True
        if self._rto_at is not None and now >= self._rto_at:
            self._retransmission_timeout(now)
            if self.state is CLOSED:
                return
        if self._persist_at is not None and now >= self._persist_at:
            self._retries += 1
            if self._retries > self.params.max_retransmits:
                self._reset("timeout")
                return
            self._probe_pending = True
            timestamps.retransmitting(self, now)
            self._persist_backoff += 1
            arm_persist(self, now)

    def _retransmission_timeout(self, now: float) -> None:
        """RFC 6298 §5.4-5.6; RFC 5681 §3.1 eq. (4) and go-back-N from SND.UNA."""
        self._count("tcp.tx.rto")
        self._retries += 1
        if self._retries > self.params.max_retransmits:
            self._reset("timeout")
            return
        self._rtt.back_off()                                # RFC 6298 §5.5
        self._rtt_seq = None                                # Karn
        timestamps.retransmitting(self, now)
        state = self.state
        if state is SYN_SENT or state is SYN_RECEIVED:
            self._syn_pending = True
            self._rto_at = now + self._rtt.rto
            return
        una = self.snd_una
        self._cc.on_timeout(seq_sub(self._snd_max, una), self.snd_mss)
        self._in_recovery = False
        self._dupacks = 0
        self._recover = self._snd_max                       # RFC 6582 §3.2 step 4
        self._rexmit_pending = False
        self._sacked = None                                 # RFC 6675 §5.1: start over
        self._rxt_budget = 0
        self.snd_nxt = una
        if self.snd_wnd == 0:
            self._rto_at = None                             # closed window: persist instead
        else:
            self._rto_at = now + self._rtt.rto

    # ------------------------------------------------------------------------ segment arrives

    def receive_segment(self, seg: TcpSegment, now: float) -> None:
        """RFC 9293 §3.10.7 SEGMENT ARRIVES."""
        state = self.state
        if state is CLOSED:
            return
        if state is SYN_SENT:
            self._receive_in_syn_sent(seg, now)
            return
        if state is SYN_RECEIVED and self._receive_in_syn_received(seg, now):
            return
        flags = seg.flags
        seq = seg.seq
        payload = seg.payload
        plen = len(payload)
        seg_len = plen + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
        rcv_nxt = self.rcv_nxt
        wnd = ((self._rcv_adv - rcv_nxt + HALF) & MASK) - HALF   # seq_sub, inlined: a hot path
        if wnd < 0:
            wnd = 0
        ts = seg.options.timestamp
        if (ts is not None and self._ts_ok and seg_len and not flags & RST
                and timestamps.paws_rejects(self, ts[0], now)):
            return
        # first: sequence number acceptability (§3.10.7.4)
        if seq == rcv_nxt:                          # the common case, decided at once
            ok = seg_len == 0 or wnd > 0
        elif seg_len == 0:
            ok = wnd > 0 and ((seq - rcv_nxt) & MASK) < wnd
        elif wnd == 0:
            ok = False
        else:
            ok = (((seq - rcv_nxt) & MASK) < wnd or ((seq + seg_len - 1 - rcv_nxt) & MASK) < wnd)
        drop_text = False
        if not ok:
            verdict = self._not_acceptable(seg, state, wnd, plen, now)
            if verdict is None:
                return
            drop_text = verdict
        if ts is not None and self._ts_ok:
            timestamps.take_recent(self, seq, ts[0], now)
        if flags & (RST | SYN):                     # second (RST) and fourth (SYN) steps
            self._rst_or_syn(seq, flags, state)
            return
        if not flags & ACK:                         # fifth: ACK
            return
        ack = seg.ack
        if state is SYN_RECEIVED and not self._ack_in_syn_received(seg, ack, now):
            return
        state = self.state                          # ESTABLISHED (or FIN-WAIT-1) after a SYN-ACK's ACK
        if self._ack_out_of_range(ack):
            return
        if state is TIME_WAIT:
            if flags & FIN:                         # the peer's FIN again: ACK it, restart 2MSL
                self._ack_needed = True
                self._tw_at = time_wait_end(now, self.params.time_wait)
            return
        process_ack(self, seg, ack, plen, now)
        state = self.state
        if state is CLOSED or state is TIME_WAIT or drop_text:
            return
        # seventh and eighth: text and FIN
        if state in RECV_STATES:
            if plen or flags & FIN:
                receive_text(self, seq, payload, plen, flags & FIN, now)
        elif plen or flags & FIN:
            self._ack_needed = True                 # after the peer's FIN: ignore the text (§3.10.7.4)

    def _ack_out_of_range(self, ack: int) -> bool:
        """RFC 5961 §5.2: an ACK of data never sent gets a challenge ACK; one older than
        SND.UNA - MAX.SND.WND is dropped (and ACKed). True when the segment is done with."""
        snd_max = self._snd_max
        if ack != snd_max and ((ack - snd_max) & MASK) < HALF:     # seq_gt(ack, SND.MAX)
            self._ack_needed = True
            self._count("tcp.rx.challenge_ack.ack")
            return True
        low = (self.snd_una - self._max_snd_wnd) & MASK
        if ack != low and ((low - ack) & MASK) < HALF:             # seq_lt(ack, low)
            self._count("tcp.rx.drop.old_ack")
            self._ack_needed = True
            return True
        return False

    def _receive_in_syn_received(self, seg: TcpSegment, now: float) -> bool:
        """The SYN-RECEIVED cases before acceptability; True when the segment is done with."""
        flags = seg.flags
        seq = seg.seq
        if flags & SYN and not flags & RST and seq == self.irs:
            # The peer's SYN again (our SYN-ACK was lost), or its SYN-ACK in a simultaneous open.
            if flags & ACK and self._accepted and seg.ack == self._snd_max == seq_add(self.iss, 1):
                self._establish(seg, now)
                self._ack_needed = True
            elif self._accepted:
                self._syn_pending = True
            return True
        if not self._accepted:
            if flags & RST and seq == self.rcv_nxt:
                self._reset("reset")
            return True
        return False

    def _not_acceptable(self, seg: TcpSegment, state: TcpState, wnd: int, plen: int,
                        now: float) -> bool | None:
        """First step of §3.10.7.4 for a segment that failed the test: None to drop it (and
        ACK, unless it is a RST), else whether its text must be dropped."""
        flags = seg.flags
        if flags & RST:
            self._count("tcp.rx.drop.rst_out_of_window")
            return None
        if wnd == 0 and seg.seq == self.rcv_nxt and not flags & SYN:
            # A bare FIN at a closed window's edge is taken; a zero-window probe's ACK and
            # window still count, its text does not (§3.10.7.4: "valid ACKs ... processed").
            if plen:
                self._ack_needed = True
                return True
            return False
        self._ack_needed = True
        self._count("tcp.rx.drop.out_of_window")
        if state is TIME_WAIT and flags & FIN:
            self._tw_at = time_wait_end(now, self.params.time_wait)   # the peer's FIN again (§3.10.7.4)
        return None

    def _rst_or_syn(self, seq: int, flags: int, state: TcpState) -> None:
        if flags & RST:                             # second: RST (RFC 5961 §3.2)
            if seq == self.rcv_nxt:
                if state is not TIME_WAIT:          # RFC 1337: no TIME-WAIT assassination
                    self._reset("reset")
            else:
                self._ack_needed = True             # challenge ACK
                self._count("tcp.rx.challenge_ack.rst")
            return
        self._ack_needed = True                     # fourth: SYN, synchronized (RFC 5961 §4)
        self._count("tcp.rx.challenge_ack.syn")

    def _ack_in_syn_received(self, seg: TcpSegment, ack: int, now: float) -> bool:
        """Fifth step in SYN-RECEIVED: an acceptable ACK establishes; otherwise a RST
        <SEQ=SEG.ACK> (once per flush). True when processing continues."""
        if seq_lt(self.snd_una, ack) and seq_le(ack, self._snd_max):
            self._establish(seg, now)
            return True
        if self._rst_out is None:
            self._rst_out = (ack, 0, RST, 0, b"", b"")
        return False

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
            self.state = SYN_RECEIVED
            self._accepted = True
            self._syn_pending = True
            self._rtt_seq = None

    def _establish(self, seg: TcpSegment, now: float) -> None:
        ack = seg.ack
        if self._rtt_seq is not None and seq_ge(ack, self._rtt_seq):
            self._rtt.sample(now - self._rtt_at)
        self._rtt_seq = None
        if self._retries:
            self._cc.on_syn_lost(self.snd_mss)        # RFC 5681 §3.1: IW = 1 SMSS after a lost SYN
        self._retries = 0
        self.snd_una = ack
        if seq_lt(self.snd_nxt, ack):
            self.snd_nxt = ack
        self._recover = seq_add(ack, -1)
        self._syn_at = None
        self._rto_at = None
        self._syn_pending = False
        self.state = FIN_WAIT_1 if self._fin_queued else ESTABLISHED
        self._events.append(Established())

    def _enter_time_wait(self, now: float) -> None:
        self.state = TIME_WAIT
        self._rto_at = self._persist_at = self._delack_at = None
        self._rexmit_pending = self._probe_pending = False
        self._tw_at = time_wait_end(now, self.params.time_wait)

    def __repr__(self) -> str:
        return (f"<TcpConnection {self.state.value} una={self.snd_una} nxt={self.snd_nxt} "
                f"wnd={self.snd_wnd} rcv_nxt={self.rcv_nxt} rcv_wnd={self.rcv_wnd}>")
