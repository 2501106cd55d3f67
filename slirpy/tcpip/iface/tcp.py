"""TCP: the demultiplexer from guest segments to flows, flow opening (passive for the guest's
SYN, active for a published port's client), servicing (segments out, connection events into
runtime events, timers), the one way a flow ends, and the host-side inputs.

Why a module: the TCP state machine lives in `tcp.connection.TcpConnection`; this is everything
around it that the stack does per TCP flow. fwd.py decides whether a SYN may open a flow and
where it goes; flow.py keeps the tables and budgets; framer.py builds the frames.

Inbound flows (published ports): the SYN reaches the guest from the client's own address (or
the gateway's, fwd.py) and port; a guest RST closes the flow with `reset=True`; a SYN the
guest never answers gives up after `Limits.tcp_inbound_timeout`, also with `reset=True`.
An IPv6 client whose family picked the guest's IPv6 address (no address named by the runtime)
is retried once over IPv4 when the guest refuses the IPv6 SYN (a server listening on IPv4
only, nginx's `listen 80`): the flow keeps its id, the client appears as the IPv4 gateway, as
it did before IPv6, and what the client sent meanwhile (up to RETRY_HOLD_MAX bytes, else no
retry) is queued again (`_V4Retry`).

Both IP families: segments arrive the same way from ipv4.py and ipv6.py; what differs per
family (the TcpParams with its MSS, the framer, the ethertype, the ICMP flavour of a failed
connect) is chosen by address length when a flow is made (`_Family`) or on an error path,
never per segment.
"""

from __future__ import annotations

import dataclasses
import random
from collections import deque
from typing import Any, Final

from .. import fwd as _fwd
from ..addr import ntoa
from ..events import (
    StackEvent, TcpConnectRequested, TcpDataReceived, TcpEofReceived, TcpFlowClosed,
    TcpHostReadPaused,
)
from ..flow import SND_SHARE_MIN, FlowKey, FlowTable, TcpFlow, lru_victim
from ..wire.ipv4 import PROTO_TCP
from ..tcp.connection import TcpConnection
from ..tcp.events import Closed, DataReceived, EofReceived, Established, Reset
from ..tcp.iss import IssGenerator
from ..tcp.params import TcpParams
from ..tcp.state import TIME_WAIT, TcpState
from ..flow import Emit
from ..wire.tcp import ACK, FIN, RST, SYN, TcpSegment
from .framer import GSO_MAX, Framer
from .framer6 import GSO_MAX6, Framer6
from .icmp import ErrorChannel
from .link import Link
from .neighbours import Neighbours

SYN_HEAD_MAX: Final = 576 - 20 - 8             # what an ICMP error may quote (RFC 1812 §4.3.2.3)
RETRY_HOLD_MAX: Final = 64 << 10               # client bytes kept for an IPv4 retry of an inbound flow
GUEST_TEXT_MAX: Final = 256                     # guest addresses whose text form is kept


class _Family:
    """What a TCP flow of one IP family is made with."""

    __slots__ = ("params", "emit", "ethertype", "quote_max")

    def __init__(self, params: TcpParams, emit: Emit, ethertype: int, quote_max: int) -> None:
        self.params = params
        self.emit = emit
        self.ethertype = ethertype
        self.quote_max = quote_max      # head of the guest's SYN kept for an ICMP error


class _V4Retry:
    """An inbound IPv6 flow that may be retried over IPv4 until it is established: the
    client's address and port, the guest port, and the client's bytes and EOF so far."""

    __slots__ = ("client_ip", "client_port", "guest_port", "held", "size", "eof")

    def __init__(self, client_ip: str, client_port: int, guest_port: int) -> None:
        self.client_ip = client_ip
        self.client_port = client_port
        self.guest_port = guest_port
        self.held: list[bytes] = []
        self.size = 0
        self.eof = False


class TcpHandler:
    def __init__(self, config: Any, link: Link, neighbours: Neighbours, table: FlowTable,
                 fwd: _fwd.Forwarder, errors: dict[int, ErrorChannel],
                 events: deque[StackEvent], rng: random.Random) -> None:
        limits = self._limits = config.limits
        self._link = link
        self._neighbours = neighbours
        self._counters = c = link.counters
        self._table = table
        self._by_key = table.tcp_by_key
        self._by_id = table.tcp_by_id
        self._all_by_id = table.by_id
        self._budgets = table.budgets
        self._fwd = fwd
        self._errors = errors          # the ICMP flavour by address length (4 or 16)
        self._events = events
        self._iss = IssGenerator(rng.randbytes(16))      # RFC 6528 (tcp/iss.py)
        self.guest_ip: bytes = config.guest.packed
        self.dirty: dict[int, TcpFlow] = {}      # insertion-ordered set of flows to service
        self._retry: dict[int, _V4Retry] = {}    # inbound IPv6 flows an IPv4 retry may follow
        self._guest_text: dict[bytes, str] = {}  # guest address -> text, for TcpConnectRequested
        self.params = TcpParams(
            mss=config.mtu - 40,
            rcv_buf=limits.tcp_rcv_buf,
            gso_max=GSO_MAX if link.offload else 0,     # the connection rounds it to its MSS
            time_wait=limits.tcp_time_wait,
            syn_timeout=limits.tcp_syn_timeout,
            ack_delay=limits.tcp_ack_delay,
            counters=c,
        )
        # IPv6: 20 more header bytes per packet, and its own framer (framer6.py).
        params6 = dataclasses.replace(self.params, mss=config.mtu - 60,
                                      gso_max=GSO_MAX6 if link.offload else 0)
        self._framer = framer = Framer(link)
        self._emit4 = framer.emit       # IPv4 flows' emit, called directly by service()
        self._families = {
            4: _Family(self.params, self._emit4, link.v4.ethertype, SYN_HEAD_MAX),
            16: _Family(params6, Framer6(link).emit, link.v6.ethertype, link.v6.quote_max),
        }

    # ------------------------------------------------------------------ guest segments

    def receive(self, packet: memoryview, hlen: int, src: bytes, dst: bytes, verify: bool,
                now: float) -> None:
        seg = TcpSegment.parse(packet[hlen:], src, dst, verify)
        key = (src, seg.src_port, dst, seg.dst_port)
        flow = self._by_key.get(key)
        flags = seg.flags
        if flow is not None:
            conn = flow.conn
            if (flags & (SYN | ACK | RST)) == SYN and conn.state is TcpState.CLOSED:
                # The flow ended earlier in this batch (the guest's RST, say) and waits to be
                # serviced: finish it now, so that a new SYN from the same port right behind
                # it opens a new flow instead of meeting the dead one (the guest would retry
                # only after its 1 s SYN timeout).
                self.dirty.pop(flow.flow_id, None)
                self.service(flow, now)
                flow = self._by_key.get(key)
        if flow is not None:
            conn = flow.conn
            if (flags & (SYN | ACK | RST)) == SYN and conn.state is TcpState.TIME_WAIT:
                # A new incarnation of the 4-tuple (RFC 9293 §3.10.7.4 / RFC 6191): let the old go.
                self.forget(flow, False)
                self._counters["tcp.time_wait.reused"] += 1
            else:
                n = len(seg.payload)
                if n:
                    self._budgets.received(flow, n, now)
                conn.receive_segment(seg, now)
                self.dirty[flow.flow_id] = flow
                return
        self._no_flow(seg, packet, src, dst, now)

    def _no_flow(self, seg: TcpSegment, packet: memoryview, src: bytes, dst: bytes,
                 now: float) -> None:
        """A segment for a 4-tuple without a flow: open one for a SYN that may, else refuse."""
        c = self._counters
        flags = seg.flags
        if flags & RST:
            c["tcp.rx.drop.rst_no_flow"] += 1
            return
        if flags & SYN and flags & FIN:
            c["tcp.rx.drop.syn_fin"] += 1           # never valid; Linux discards it too
            return
        if (flags & (SYN | ACK | FIN)) != SYN:
            c["tcp.rx.no_flow"] += 1
            self._send_rst_for(seg, src, dst)
            return
        if not _fwd.ports_valid(seg.src_port, seg.dst_port):
            c["tcp.rx.drop.port_zero"] += 1
            return
        verdict = self._fwd.outbound(PROTO_TCP, src, dst, seg.dst_port)
        if verdict.host is None:
            c["tcp.rx.drop." + verdict.why] += 1
            if verdict.reply == _fwd.REPLY_RST:
                self._send_rst_for(seg, src, dst)
            elif verdict.reply == _fwd.REPLY_NET_UNREACH:
                self._errors[len(src)].unreachable_from_gateway(
                    src, _fwd.net_unreach_code(len(src) == 16), bytes(packet))
            return
        why = self.over_limit()
        if why is not None:
            c["tcp.rx.drop." + why] += 1
            self._send_rst_for(seg, src, dst)
            return
        self._open_passive(seg, packet, src, dst, now, verdict)

    def over_limit(self) -> str | None:
        """Why no TCP flow may be opened now, or None: the flows holding a host socket (not
        those in TIME-WAIT) are at max_tcp_flows, or the half-open ones at max_half_open."""
        limits = self._limits
        if len(self._by_id) - len(self._table.time_wait) >= limits.max_tcp_flows:
            return "flow_limit"
        if self._table.half_open >= limits.max_half_open:
            return "half_open_limit"
        return None

    def _open_passive(self, seg: TcpSegment, packet: memoryview, src: bytes, dst: bytes,
                      now: float, verdict: _fwd.Verdict) -> None:
        mac = self._link.guest_mac
        if mac is None:
            self._counters["tx.drop.no_guest_mac"] += 1
            return
        assert verdict.host is not None
        fam = self._families[len(src)]
        flow_id = self._table.new_id()
        key = (src, seg.src_port, dst, seg.dst_port)
        iss = self._iss.iss(src, seg.src_port, dst, seg.dst_port, now)
        conn = TcpConnection.passive(seg, iss, now, fam.params)
        conn.set_receive_window(self._budgets.rcv_share)
        flow = TcpFlow(flow_id, key, conn, src, seg.src_port, dst, seg.dst_port,
                       self._link.eth_prefix(mac, None, fam.ethertype), now,
                       syn_head=bytes(packet[:fam.quote_max]), target=verdict.host,
                       emit=fam.emit)
        self._table.add_tcp(flow)
        if verdict.dns:
            self._counters["dns.tcp.flows.opened"] += 1
        text = self._guest_text.get(src)      # few guest addresses; formatting one costs more
        if text is None:
            if len(self._guest_text) >= GUEST_TEXT_MAX:
                self._guest_text.clear()
            text = self._guest_text[src] = ntoa(src)
        self._events.append(TcpConnectRequested(
            flow_id, verdict.host, seg.dst_port, text, seg.src_port, verdict.dns))
        self.dirty[flow_id] = flow

    def _send_rst_for(self, seg: TcpSegment, src: bytes, dst: bytes) -> None:
        """RST for a segment that has no connection (RFC 9293 §3.10.7.1)."""
        if seg.flags & ACK:
            seq, ack, flags = seg.ack, 0, RST
        else:
            seq, ack, flags = 0, (seg.seq + seg.seg_len) & 0xFFFFFFFF, RST | ACK
        rst = TcpSegment(seg.dst_port, seg.src_port, seq, ack, flags, 0)
        self._link.send_ip(dst, src, PROTO_TCP, rst.pack(dst, src))
        self._counters["tcp.tx.rst"] += 1

    # ------------------------------------------------------------------ servicing

    def service(self, flow: TcpFlow, now: float) -> None:
        """Emit a flow's pending segments, pass on its events, re-arm its timer. (One function:
        it runs for every serviced flow, twice per request/response, so no helper calls.)"""
        conn = flow.conn
        fid = flow.flow_id
        if flow.eth_prefix is None:
            if conn.state is not TcpState.CLOSED:
                # An inbound flow to a guest whose MAC we do not know yet: hold its segments
                # (they stay pending in the connection) and ask for the MAC.
                self._neighbours.await_tcp[fid] = flow
                self._neighbours.solicit_guest(flow.guest_ip, now)
                self._rearm(flow, conn.get_timer())
                return
            conn.segments_to_send(now)           # nothing was ever sent: nothing to reset
        else:
            segments = conn.segments_to_send(now)
            if segments:
                if flow.emit is self._emit4:
                    self._framer.emit(flow, conn.snd_mss, segments)     # a direct call compiled
                else:
                    flow.emit(flow, conn.snd_mss, segments)
        events = self._events
        closed = reset = False
        for ev in conn.take_events():
            # `type(ev) is` each time (not once into a variable) so that mypy narrows `ev`;
            # the data events, nearly all of them, come first and pay one type() as before
            if type(ev) is DataReceived:
                events.append(TcpDataReceived(fid, ev.data))
            elif type(ev) is EofReceived:
                events.append(TcpEofReceived(fid))
            elif type(ev) is Established:
                self._established(flow)
            elif type(ev) is Reset:
                self._counters["tcp.flows.reset." + ev.reason] += 1
                reset = True
            elif type(ev) is Closed:
                closed = True
        if closed:
            if not (reset and fid in self._retry and self._retry_v4(flow, now)):
                self.forget(flow, reset)
            return
        if conn.state is TIME_WAIT and not flow.host_released:
            self._time_wait(flow)
        queued = conn.send_buffered
        budgets = self._budgets
        if queued != flow.queued:
            budgets.account_queued(flow, queued)
        if flow.read_paused and queued <= budgets.snd_share() // 2:
            flow.read_paused = False
            events.append(TcpHostReadPaused(fid, False))
        t = conn.get_timer()
        if flow.give_up_at is not None:
            self._rearm(flow, t)
        elif t != flow.timer_at:
            old = flow.timer_at
            flow.timer_at = t
            self._table.timers.move(old, t, fid, self._all_by_id)

    def _time_wait(self, flow: TcpFlow) -> None:
        """The flow's connection has gone into TIME-WAIT: both ways are finished (our FIN was the
        host's EOF, the guest's FIN went on as the host socket's write EOF), so its host socket
        closes now, not when TIME-WAIT ends (the runtime still flushes what it buffers). From
        here the flow counts against max_time_wait, the oldest going first, and no longer
        against max_tcp_flows: a busy `Connection: close` client would otherwise keep a host
        fd per connection of the last tcp_time_wait seconds, and be refused at the fd bound."""
        tw = self._table.time_wait
        victim = lru_victim(tw, self._limits.max_time_wait)
        if victim is not None:
            self._counters["tcp.time_wait.evicted"] += 1
            self.forget(tw[victim], False)
        flow.host_released = True
        tw[flow.flow_id] = flow
        self._events.append(TcpFlowClosed(flow.flow_id, False))

    def _rearm(self, flow: TcpFlow, t: float | None) -> None:
        """Re-arm a flow at the earlier of its connection's timer `t` and its give-up time
        (service() does this inline for flows without a give-up time: the common case)."""
        g = flow.give_up_at
        if g is not None and (t is None or g < t):
            t = g
        if t != flow.timer_at:
            flow.timer_at = t
            if t is not None:
                self._table.timers.push(t, flow.flow_id, self._all_by_id)

    def _established(self, flow: TcpFlow) -> None:
        if flow.half_open:
            flow.half_open = False
            self._table.half_open -= 1
            flow.give_up_at = None
            if self._retry:
                self._retry.pop(flow.flow_id, None)
        self._counters["tcp.flows.established"] += 1

    def forget(self, flow: TcpFlow, reset: bool) -> None:
        """The one way a TCP flow ends, whatever ended it: it leaves every table and the
        runtime is told to close its host socket (abort it if `reset`), unless it was told so
        when the flow went into TIME-WAIT. A flow dropped from the tables without that event
        would keep its host socket open for good."""
        if not flow.host_released:
            self._events.append(TcpFlowClosed(flow.flow_id, reset))
        self._drop(flow)

    def _drop(self, flow: TcpFlow) -> None:
        """Take a flow out of every table (forget() says so to the runtime first)."""
        fid = flow.flow_id
        self._budgets.account_queued(flow, 0)
        self._table.remove_tcp(flow)
        self.dirty.pop(fid, None)
        self._neighbours.await_tcp.pop(fid, None)
        if self._retry:
            self._retry.pop(fid, None)
        flow.give_up_at = None
        self._counters["tcp.flows.closed"] += 1

    def timer_due(self, flow: TcpFlow, now: float) -> None:
        """The flow's deadline came: give up an inbound handshake, or run the connection's timers."""
        g = flow.give_up_at
        if g is not None and now >= g:
            flow.give_up_at = None
            if flow.half_open:
                self._inbound_give_up(flow, now)
                return
        flow.conn.handle_timer(now)
        self.dirty[flow.flow_id] = flow

    # ------------------------------------------------------------------ inbound

    def inbound_open(self, key: FlowKey, guest_port: int, client_ip: str, now: float,
                     retry_from: tuple[str, int] | None = None, flow_id: int = 0) -> int:
        """Open the active flow of a published port's client (key from fwd.inbound_key: the
        guest address in it says the family). `retry_from` (client address and port): an IPv6
        flow that is retried over IPv4 if the guest refuses it. `flow_id`: the id to reuse
        (an IPv4 retry), else a new one."""
        c = self._counters
        guest_ip, _, src, sport = key
        fam = self._families[len(guest_ip)]
        if not flow_id:
            flow_id = self._table.new_id()
        if retry_from is not None:
            self._retry[flow_id] = _V4Retry(retry_from[0], retry_from[1], guest_port)
        conn = TcpConnection.active(self._iss.iss(guest_ip, guest_port, src, sport, now), now,
                                   fam.params)
        conn.set_receive_window(self._budgets.rcv_share)
        mac = self._link.guest_mac
        prefix = self._link.eth_prefix(mac, None, fam.ethertype) if mac is not None else None
        flow = TcpFlow(flow_id, key, conn, guest_ip, guest_port, src, sport, prefix, now,
                       inbound=True, target=client_ip, emit=fam.emit)
        self._table.add_tcp(flow)
        c["tcp.inbound.opened"] += 1
        flow.give_up_at = now + self._limits.tcp_inbound_timeout
        self.dirty[flow_id] = flow
        return flow_id

    def _retry_v4(self, flow: TcpFlow, now: float) -> bool:
        """The guest refused an inbound IPv6 SYN: open the same flow (same id, so the runtime
        sees nothing) to the guest's IPv4 address, the client's bytes queued again. False when
        no IPv4 4-tuple is free (the caller then ends the flow)."""
        retry = self._retry.pop(flow.flow_id)
        key = self._fwd.inbound_key(retry.client_ip, retry.client_port, retry.guest_port,
                                    self._by_key, "tcp", self.free_time_wait, self.guest_ip)
        if key is None:
            return False
        give_up_at = flow.give_up_at               # the client waits no longer than it would have
        self._drop(flow)
        self.inbound_open(key, retry.guest_port, flow.target, now, flow_id=flow.flow_id)
        new = self._by_id[flow.flow_id]
        if give_up_at is not None:
            new.give_up_at = give_up_at
        new.read_paused = flow.read_paused
        new.bytes_out = flow.bytes_out
        for chunk in retry.held:
            new.conn.send(chunk)
        if retry.eof:
            new.conn.shutdown_write(now)
        self._budgets.account_queued(new, new.conn.send_buffered)
        self._counters["tcp.inbound.ipv4_retry"] += 1
        return True

    def _hold_for_retry(self, flow_id: int, data: bytes | memoryview | None) -> None:
        """Keep what the client sent (None: its EOF) for an IPv4 retry, or give the retry up
        when it is more than RETRY_HOLD_MAX bytes."""
        retry = self._retry[flow_id]
        if data is None:
            retry.eof = True
            return
        retry.size += len(data)
        if retry.size > RETRY_HOLD_MAX:
            del self._retry[flow_id]
            self._counters["tcp.inbound.ipv4_retry_dropped"] += 1
        else:
            retry.held.append(bytes(data))

    def free_time_wait(self, flow: TcpFlow) -> bool:
        """Let a flow in TIME-WAIT go for a new incarnation of its 4-tuple; False otherwise."""
        if flow.conn.state is not TcpState.TIME_WAIT:
            return False
        self.forget(flow, False)
        self._counters["tcp.time_wait.reused"] += 1
        return True

    def _inbound_give_up(self, flow: TcpFlow, now: float) -> None:
        """The guest never completed an inbound handshake: RST it if needed, reset the client."""
        self._counters["tcp.inbound.timeout"] += 1
        conn = flow.conn
        conn.abort(now)
        if flow.eth_prefix is not None:
            segments = conn.segments_to_send(now)
            if segments:
                flow.emit(flow, conn.snd_mss, segments)
        self.forget(flow, True)

    # ------------------------------------------------------------------ host side

    def host_connected(self, flow_id: int, now: float) -> None:
        flow = self._by_id.get(flow_id)
        if flow is None:
            return
        flow.conn.accept(now)
        self.dirty[flow_id] = flow

    def host_connect_failed(self, flow_id: int, err: int, now: float) -> None:
        """The host connect failed with errno `err`: tell the guest the way its kernel expects."""
        flow = self._by_id.get(flow_id)
        if flow is None:
            return
        c = self._counters
        n = len(flow.guest_ip)
        code = _fwd.connect_failure(err, n == 16)
        if err == _fwd.ECONNREFUSED:
            c["tcp.connect.refused"] += 1
            flow.conn.refuse()
        elif code is None:
            c["tcp.connect.drop.local_resource"] += 1
            self.forget(flow, False)
            return
        else:
            c["tcp.connect.unreachable"] += 1
            # The guest's kernel aborts a connect in SYN-SENT on any ICMP unreachable that
            # quotes its SYN; no RST, so that it reports the right error.
            self._errors[n].unreachable_from_gateway(flow.guest_ip, code, flow.syn_head)
            self.forget(flow, False)
            return
        self.dirty[flow_id] = flow

    def host_allowance(self, flow_id: int) -> int:
        """How many bytes the next host read of this flow may take (flow.Budgets)."""
        return self._budgets.host_allowance(self._by_id.get(flow_id))

    def host_data(self, flow_id: int, data: bytes | memoryview, now: float) -> bool:
        """Host bytes for the guest. True when the host reads must stop now: the event loop may
        read the same socket again before the TcpHostReadPaused event is dispatched (libuv
        reads up to 32 times per readable socket), so the caller stops them at once."""
        flow = self._by_id.get(flow_id)
        if flow is None:
            return False
        conn = flow.conn
        conn.send(data)
        flow.bytes_out += len(data)
        if self._retry and flow_id in self._retry:
            self._hold_for_retry(flow_id, data)
        queued = conn.send_buffered
        budgets = self._budgets
        budgets.account_queued(flow, queued)
        if not flow.read_paused and (queued >= budgets.snd_share() or (
                queued >= SND_SHARE_MIN and budgets.snd_total >= self._limits.tcp_snd_buf_total)):
            flow.read_paused = True
            self._counters["tcp.host.read_paused"] += 1
            self._events.append(TcpHostReadPaused(flow_id, True))
        self.dirty[flow_id] = flow
        return flow.read_paused

    def host_eof(self, flow_id: int, now: float) -> None:
        flow = self._by_id.get(flow_id)
        if flow is None:
            return
        flow.conn.shutdown_write(now)
        if self._retry and flow_id in self._retry:
            self._hold_for_retry(flow_id, None)
        self.dirty[flow_id] = flow

    def host_reset(self, flow_id: int, now: float) -> None:
        """The host connection failed or was reset: reset the guest's side too."""
        flow = self._by_id.get(flow_id)
        if flow is None:
            return
        self._counters["tcp.host.reset"] += 1
        flow.conn.abort(now)
        self.dirty[flow_id] = flow

    def host_write_paused(self, flow_id: int, paused: bool, now: float) -> None:
        """The host socket's write buffer is above (True) / back below (False) its high-water mark."""
        flow = self._by_id.get(flow_id)
        if flow is None:
            return
        flow.conn.set_receive_paused(paused, now)
        self.dirty[flow_id] = flow
