"""The flow table: every flow the stack proxies, one id space, their deadlines and budgets.

Why one module: a flow is the unit the runtime knows (events name it by `flow_id`), and
TCP, UDP and ICMP echo flows share their lifecycle: created on a guest packet or a host client
(fwd.py decides whether and where to), looked up per packet by the guest-side key, timed by a
deadline heap, ended once (an event tells the runtime to close the host socket). Every record
is a `Flow`: a guest side (guest ip/port, as the guest's kernel sees its socket) and a host
side (`host_ip`/`host_port` as the guest sees the peer, and `target`, where the host socket
really goes: 127.0.0.1 for the gateway address, fwd.DNS_UPSTREAM for DNS, the client's
address for an inbound flow).

Lifecycle: opened (an id from `FlowTable.new_id`, entered in the key and id tables) ->
active (TCP: the connection's states; datagram flows: refreshed by traffic) -> closed (removed
from every table, exactly one closing event). Datagram expiry is lazy: the heap holds one
entry per flow, at `timer_at`; when it comes due the table compares it with `last_active` and
re-arms or expires the flow, so datagrams never touch the heap.

One `DeadlineHeap` gives the next deadline of every flow without scanning them: entries are
(deadline, flow id), checked against `FlowTable.by_id` (every flow); an entry whose deadline
no longer matches the flow's `timer_at` is stale and skipped; the heap is rebuilt when stale
entries outnumber live flows. A flow has one deadline: a TCP flow's is the earlier of its
connection's timer and, for an inbound flow not yet established, its SYN give-up time
(`give_up_at`); a datagram flow's is its idle expiry.

`Budgets`: the equal-share TCP buffer budgets (host -> guest bytes queued, guest -> host
receive windows), in one place.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Any, Callable, Final, Iterator, Sequence, TypeVar

from .checksum import sum16
from .events import IcmpEchoFlowClosed, StackEvent, UdpFlowClosed

if TYPE_CHECKING:
    from .tcp.connection import TcpConnection

# heapq's functions as compiled constants (no module attribute lookup per call).
_heappush: Final = heapq.heappush
_heappop: Final = heapq.heappop
_heapreplace: Final = heapq.heapreplace

_PROTO_TCP: Final = 6
_PROTO_UDP: Final = 17
_PROTO_ICMP: Final = 1

FlowKey = tuple[bytes, int, bytes, int]   # guest ip, guest port, peer ip, peer port (as the guest sees it)
EchoKey = tuple[bytes, int, bytes]        # guest ip, echo ident, peer ip
# A TCP flow's framer: emit(flow, mss, segments) puts its segments on the link (iface/framer*.py)
Emit = Callable[["TcpFlow", int, Sequence[Any]], None]

K = TypeVar("K")


def lru_victim(table: dict[K, Any], limit: int) -> K | None:
    """The key to evict before adding to `table` (kept in least-recently-active order), or
    None when there is room. The one eviction rule of every bounded table here."""
    if len(table) >= limit:
        return next(iter(table))
    return None


class Flow:
    """What every flow has: an id, its table key, the guest side and the host side."""

    __slots__ = ("flow_id", "key", "guest_ip", "guest_port", "host_ip", "host_port", "target",
                 "timer_at", "inbound", "opened_at")

    def __init__(self, flow_id: int, key: Any, guest_ip: bytes, guest_port: int,
                 host_ip: bytes, host_port: int, target: str, now: float,
                 inbound: bool = False) -> None:
        self.flow_id = flow_id
        self.key = key
        self.guest_ip = guest_ip          # guest side
        self.guest_port = guest_port
        self.host_ip = host_ip            # host side as the guest sees it
        self.host_port = host_port
        self.target = target              # where the host socket goes (see the module doc)
        self.timer_at: float | None = None
        self.inbound = inbound            # opened by a host client of a published port
        self.opened_at = now


class TcpFlow(Flow):
    """One TCP flow: its `TcpConnection`, the prebuilt parts of every frame it emits, and the
    bookkeeping the stack needs (half-open, host reads paused, bytes queued)."""

    __slots__ = ("conn", "emit", "eth_prefix", "ip_base_sum", "pseudo_base", "syn_head",
                 "half_open", "read_paused", "bytes_in", "bytes_out", "queued", "give_up_at",
                 "host_released")

    def __init__(self, flow_id: int, key: FlowKey, conn: TcpConnection, guest_ip: bytes,
                 guest_port: int, host_ip: bytes, host_port: int, eth_prefix: bytes | None,
                 now: float, syn_head: bytes = b"", inbound: bool = False,
                 target: str = "", *, emit: Emit) -> None:
        Flow.__init__(self, flow_id, key, guest_ip, guest_port, host_ip, host_port, target, now,
                      inbound)
        self.conn = conn
        self.emit = emit                  # its family's framer: emit(flow, mss, segments)
        self.eth_prefix = eth_prefix      # None until the guest's MAC is known (inbound flows)
        # Sum of the IPv4 header fields that never change for this flow (version/IHL, DF,
        # TTL/protocol, addresses): per frame only total length and ident are added. (An
        # IPv6 header has no checksum: its framer leaves this unused.)
        addr_sum = sum16(host_ip + guest_ip)
        self.ip_base_sum = 0x4500 + 0x4000 + ((64 << 8) | _PROTO_TCP) + addr_sum
        # Pseudo-header sum without the length, for the TCP checksum (the same for IPv6: the
        # 32-bit length and next header of its pseudo-header sum alike modulo 0xFFFF).
        self.pseudo_base = addr_sum + _PROTO_TCP
        self.syn_head = syn_head          # start of the guest's SYN packet, quoted in ICMP errors
        self.half_open = True
        self.read_paused = False
        self.queued = 0                   # host -> guest bytes queued, as last accounted
        self.bytes_in = 0                 # guest -> host payload bytes
        self.bytes_out = 0                # host -> guest payload bytes
        self.give_up_at: float | None = None   # inbound: reset if not established by then
        self.host_released = False        # its TcpFlowClosed is out already (TIME-WAIT)


class DatagramFlow(Flow):
    """One UDP flow (guest ip:port <-> host ip:port) or ICMP echo flow (guest ip, ident, host
    ip), of either IP family."""

    __slots__ = ("proto", "fam", "dns", "last_head", "last_active", "replied", "datagrams_in",
                 "datagrams_out", "bytes_in", "bytes_out", "pseudo_base")

    def __init__(self, flow_id: int, key: Any, proto: int, guest_ip: bytes, guest_port: int,
                 host_ip: bytes, host_port: int, now: float, dns: bool = False,
                 target: str = "", fam: Any = None) -> None:
        Flow.__init__(self, flow_id, key, guest_ip, guest_port, host_ip, host_port, target, now)
        # 17 (UDP) or 1 (an echo flow, ICMP or ICMPv6 by its family; ports are the echo ident)
        self.proto = proto
        self.fam = fam                    # its IP family's framing (iface.link.IpFamily)
        self.dns = dns                    # to the DNS forwarder: the runtime picks the upstream
        self.last_head = b""              # start of the last guest packet (IP header on)
        self.last_active = now
        self.replied = False
        self.datagrams_in = 0             # guest -> host
        self.datagrams_out = 0            # host -> guest
        self.bytes_in = 0                 # guest -> host payload bytes (UDP payload, echo data)
        self.bytes_out = 0                # host -> guest payload bytes
        # Pseudo-header sum (host -> guest) without the length, for UDP checksums.
        self.pseudo_base = sum16(host_ip + guest_ip) + proto


class DeadlineHeap:
    """(deadline, flow id) entries for flow records with `flow_id` and `timer_at`.

    Stale entries (a flow's timer moved, or the flow is gone) stay until popped; `push`
    rebuilds the heap from the live flows when it grows past 4 entries per flow (+64)."""

    __slots__ = ("_heap", "_check_at")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int]] = []
        self._check_at = 64

    def push(self, deadline: float, flow_id: int, flows: dict[int, Any]) -> None:
        heap = self._heap
        _heappush(heap, (deadline, flow_id))
        if len(heap) > self._check_at:
            self._compact(flows)

    def move(self, old: float | None, new: float | None, flow_id: int,
             flows: dict[int, Any]) -> None:
        """A flow's deadline moved from `old` to `new` (None: it has none): when its entry for
        `old` is the heap's top, now stale, it is replaced (or dropped) at once instead of
        being left for `next_deadline` to pop; otherwise `new` is pushed. The common case of
        one busy flow, whose deadline moves at every flush."""
        heap = self._heap
        if old is not None and heap:
            top = heap[0]
            if top[1] == flow_id and top[0] == old:
                if new is None:
                    _heappop(heap)
                else:
                    _heapreplace(heap, (new, flow_id))
                return
        if new is not None:
            self.push(new, flow_id, flows)

    def pop_due(self, now: float, flows: dict[int, Any]) -> Iterator[Any]:
        """Yield each flow whose current deadline is <= now (once), clearing its timer."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, flow_id = _heappop(heap)
            flow = flows.get(flow_id)
            if flow is not None and flow.timer_at == deadline:
                flow.timer_at = None
                yield flow

    def next_deadline(self, flows: dict[int, Any]) -> float | None:
        heap = self._heap
        while heap:
            deadline, flow_id = heap[0]
            flow: Flow | None = flows.get(flow_id)
            if flow is not None and flow.timer_at == deadline:
                return deadline
            _heappop(heap)
        return None

    def _compact(self, flows: dict[int, Any]) -> None:
        limit = 4 * len(flows) + 64
        if len(self._heap) > limit:
            self._heap = [(f.timer_at, f.flow_id) for f in flows.values() if f.timer_at is not None]
            heapq.heapify(self._heap)
        self._check_at = max(limit, 2 * len(self._heap))

    def __len__(self) -> int:
        return len(self._heap)


HOST_READ_MIN: Final = 16 << 10      # a host read may always take this much (see host_allowance)
SND_SHARE_MIN: Final = 64 << 10      # a flow's share of tcp_snd_buf_total never falls below this
# A flow's receive window never falls below two 64 KiB super-frames: with one, each flow would
# wait for the ACK of every frame (perf/NOTES.md, "receive window floor").
RCV_SHARE_MIN: Final = 128 << 10
RCV_EPOCH: Final = 0.05              # seconds: how often the receiving flows are counted again


def equal_share(total: int, flows: int, floor: int, cap: int) -> int:
    """One flow's part of a budget shared equally among `flows` busy flows: `total // flows`,
    at most `cap` (the per-flow limit) and at least `floor` (so that every flow moves)."""
    share = total // (flows or 1)
    if share > cap:
        return cap
    return share if share > floor else floor


class Budgets:
    """The TCP buffer budgets shared equally among busy flows: host -> guest bytes queued
    (`tcp_snd_buf_total`) and the guest -> host receive windows (`tcp_rcv_buf_total`)."""

    __slots__ = ("_snd_buf", "_snd_buf_total", "_rcv_buf", "_rcv_buf_total", "snd_total",
                 "snd_active", "rcv_share", "rcv_seen", "rcv_epoch_end")

    def __init__(self, limits: Any) -> None:
        # The limits as native ints: read per host read and per ACK (config.Limits is frozen).
        self._snd_buf: int = limits.tcp_snd_buf
        self._snd_buf_total: int = limits.tcp_snd_buf_total
        self._rcv_buf: int = limits.tcp_rcv_buf
        self._rcv_buf_total: int = limits.tcp_rcv_buf_total
        self.snd_total = 0                          # host -> guest bytes queued, all flows
        self.snd_active = 0                         # flows with some of it
        self.rcv_share: int = limits.tcp_rcv_buf    # receive window of each receiving flow
        self.rcv_seen: dict[int, TcpFlow] = {}      # flows that brought data this epoch
        self.rcv_epoch_end = 0.0

    def account_queued(self, flow: TcpFlow, queued: int) -> None:
        """Keep the total of host -> guest bytes queued, and how many flows hold some."""
        old = flow.queued
        if queued != old:
            self.snd_total += queued - old
            if not old:
                self.snd_active += 1
            elif not queued:
                self.snd_active -= 1
            flow.queued = queued

    def snd_share(self) -> int:
        """Bytes a flow may queue towards the guest before its host reads pause: an equal share
        of `tcp_snd_buf_total` among the flows holding data, within [64 KiB, tcp_snd_buf]."""
        return equal_share(self._snd_buf_total, self.snd_active, SND_SHARE_MIN, self._snd_buf)

    def received(self, flow: TcpFlow, n: int, now: float) -> None:
        """`flow` brought `n` (> 0) payload bytes from the guest: count them, and note the flow
        for this epoch's receive windows (ending the epoch when it is over)."""
        flow.bytes_in += n
        self.rcv_seen[flow.flow_id] = flow
        if now >= self.rcv_epoch_end:
            self.rcv_epoch(now)

    def rcv_epoch(self, now: float) -> None:
        """The flows that brought data in the epoch now ending share `tcp_rcv_buf_total`
        equally (within [RCV_SHARE_MIN, tcp_rcv_buf]) as their receive window, so guest ->
        host data in flight is bounded over all flows, not per flow (perf/NOTES.md)."""
        seen = self.rcv_seen
        share = self.rcv_share = equal_share(self._rcv_buf_total, len(seen), RCV_SHARE_MIN,
                                             self._rcv_buf)
        for flow in seen.values():
            flow.conn.set_receive_window(share)
        self.rcv_seen = {}
        self.rcv_epoch_end = now + RCV_EPOCH

    def host_allowance(self, flow: TcpFlow | None) -> int:
        """How many bytes the next host read of this flow may take: what is left of its share
        and of `tcp_snd_buf_total` (but up to SND_SHARE_MIN past the total, and at least
        HOST_READ_MIN, so that every flow moves). With the pause in TcpHandler.host_data the total
        queued stays within the budget plus 2 * SND_SHARE_MIN per flow."""
        if flow is None:
            return HOST_READ_MIN
        room = self.snd_share() - flow.queued
        total_room = self._snd_buf_total - self.snd_total
        if total_room < SND_SHARE_MIN:
            total_room = SND_SHARE_MIN
        if total_room < room:
            room = total_room
        return room if room > HOST_READ_MIN else HOST_READ_MIN


class FlowTable:
    """Every flow, by guest-side key and by id; one id allocator; the deadline heaps; budgets.

    TCP flows end through the TCP handler (iface/tcp.py), which owns their connection; datagram
    flows are opened and closed here."""

    def __init__(self, limits: Any, counters: dict[str, int], events: deque[StackEvent]) -> None:
        self._limits = limits
        self._counters = counters
        self._events = events
        self._next_id = 1
        self.tcp_by_key: dict[FlowKey, TcpFlow] = {}
        self.tcp_by_id: dict[int, TcpFlow] = {}
        self.by_id: dict[int, Flow] = {}             # every flow, whatever its kind
        self.half_open = 0
        # TCP flows in TIME-WAIT, oldest first: they hold no host socket, so they are bounded
        # apart (Limits.max_time_wait) from the flows that do (Limits.max_tcp_flows).
        self.time_wait: dict[int, TcpFlow] = {}
        self.timers = DeadlineHeap()                 # every flow's deadline, checked in by_id
        # UDP and ICMP echo flows: tables in least-recently-active order.
        self.udp: OrderedDict[FlowKey, DatagramFlow] = OrderedDict()
        self.echo: OrderedDict[EchoKey, DatagramFlow] = OrderedDict()
        self.dgram_by_id: dict[int, DatagramFlow] = {}
        self.budgets = Budgets(limits)

    def new_id(self) -> int:
        """The next flow id: one id space for every kind of flow."""
        fid = self._next_id
        self._next_id = fid + 1
        return fid

    def add_tcp(self, flow: TcpFlow) -> None:
        self.tcp_by_key[flow.key] = flow
        self.tcp_by_id[flow.flow_id] = flow
        self.by_id[flow.flow_id] = flow
        self.half_open += 1
        self._counters["tcp.flows.opened"] += 1

    def new_dgram(self, key: Any, proto: int, guest_ip: bytes, guest_port: int, host_ip: bytes,
                  host_port: int, now: float, dns: bool, target: str, fam: Any) -> DatagramFlow:
        """Open a UDP or echo flow (evicting the least recently active one when full)."""
        if proto == _PROTO_UDP:
            table: OrderedDict[Any, DatagramFlow] = self.udp
            limit = self._limits.max_udp_flows
        else:
            table = self.echo
            limit = self._limits.max_icmp_flows
        victim = lru_victim(table, limit)
        if victim is not None:
            self.close_dgram(table[victim], "evicted")
        flow_id = self.new_id()
        flow = DatagramFlow(flow_id, key, proto, guest_ip, guest_port, host_ip, host_port, now,
                            dns, target, fam)
        table[key] = flow
        self.dgram_by_id[flow_id] = flow
        self.by_id[flow_id] = flow
        flow.timer_at = now + self.idle_timeout(flow)
        self.timers.push(flow.timer_at, flow_id, self.by_id)
        self._counters[("udp" if proto == _PROTO_UDP else "icmp") + ".flows.opened"] += 1
        return flow

    def dgram_replied(self, flow: DatagramFlow, nbytes: int, now: float) -> None:
        """The host side answered on a datagram flow with `nbytes` of payload: the flow has
        replied (its longer idle timeout), is active now, and is the most recent in its table's
        eviction order."""
        flow.replied = True
        flow.last_active = now
        flow.datagrams_out += 1
        flow.bytes_out += nbytes
        (self.udp if flow.proto == _PROTO_UDP else self.echo).move_to_end(flow.key)

    def idle_timeout(self, flow: DatagramFlow) -> float:
        limits = self._limits
        if flow.proto == _PROTO_ICMP:
            return float(limits.icmp_timeout)
        if flow.dns:
            return float(limits.dns_timeout)
        return float(limits.udp_timeout_replied if flow.replied else limits.udp_timeout)

    def close_dgram(self, flow: DatagramFlow, why: str) -> None:
        fid = flow.flow_id
        self.dgram_by_id.pop(fid, None)
        self.by_id.pop(fid, None)
        flow.timer_at = None
        if flow.proto == _PROTO_UDP:
            self.udp.pop(flow.key, None)
            self._counters["udp.flows." + why] += 1
            self._events.append(UdpFlowClosed(fid))
        else:
            self.echo.pop(flow.key, None)
            self._counters["icmp.flows." + why] += 1
            self._events.append(IcmpEchoFlowClosed(fid))

    def remove_tcp(self, flow: TcpFlow) -> None:
        fid = flow.flow_id
        self.tcp_by_key.pop(flow.key, None)
        self.tcp_by_id.pop(fid, None)
        self.by_id.pop(fid, None)
        flow.timer_at = None
        if flow.half_open:
            flow.half_open = False
            self.half_open -= 1
        if flow.host_released:
            self.time_wait.pop(fid, None)

    def dgram_due(self, flow: DatagramFlow, now: float) -> None:
        """A datagram flow's deadline came: expire it if it stayed idle, else re-arm."""
        expires = flow.last_active + self.idle_timeout(flow)
        if expires > now:
            flow.timer_at = expires
            self.timers.push(expires, flow.flow_id, self.by_id)
        else:
            self.close_dgram(flow, "expired")

    def next_deadline(self) -> float | None:
        return self.timers.next_deadline(self.by_id)
