"""Flow records and the deadline heap the stack keeps for them.

A `DatagramFlow` is a UDP flow or an ICMP echo flow: addresses, the head of the last packet
the guest sent on it (quoted in ICMP errors), and its idle clock. Its expiry is lazy: the heap
holds one entry per flow, at `timer_at`; when that entry comes due the stack compares it with
`last_active` and either re-arms it or expires the flow, so datagrams never touch the heap.

A `TcpFlow` ties one `TcpConnection` to its addresses, the prebuilt parts of every frame it
emits, and the bookkeeping the stack needs (half-open, host reads paused, timer, whether a
host client of a published port opened it: `inbound`). The
`DeadlineHeap` gives the stack a single next deadline for all flows without scanning them:
entries are (deadline, flow id); an entry whose deadline no longer matches the flow's current
one is stale and skipped. The heap is rebuilt when stale entries outnumber live flows, so it
stays bounded by a small multiple of the flow table.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Protocol, TypeAlias, TypeVar

from .checksum import sum16

if TYPE_CHECKING:
    from .tcp_conn import TcpConnection

_PROTO_TCP = 6

# Table keys, in the guest's view: (guest ip, guest port, host ip, host port) for TCP and UDP,
# (guest ip, echo ident, host ip) for ICMP echo.
PortKey: TypeAlias = tuple[bytes, int, bytes, int]
EchoKey: TypeAlias = tuple[bytes, int, bytes]


class TcpFlow:
    """One TCP flow between a guest endpoint and a host endpoint."""

    __slots__ = (
        "flow_id", "key", "conn", "guest_ip", "guest_port", "host_ip", "host_port",
        "eth_prefix", "ip_base_sum", "pseudo_base", "syn_head", "half_open",
        "read_paused", "timer_at", "inbound", "bytes_in", "bytes_out", "opened_at", "queued",
    )

    def __init__(self, flow_id: int, key: PortKey, conn: TcpConnection, guest_ip: bytes,
                 guest_port: int, host_ip: bytes, host_port: int, eth_prefix: bytes | None,
                 now: float, syn_head: bytes = b"", inbound: bool = False) -> None:
        self.flow_id = flow_id
        self.key = key
        self.conn = conn
        self.guest_ip = guest_ip
        self.guest_port = guest_port
        self.host_ip = host_ip
        self.host_port = host_port
        self.eth_prefix = eth_prefix      # None until the guest's MAC is known (inbound flows)
        # Sum of the IPv4 header fields that never change for this flow (version/IHL, DF,
        # TTL/protocol, addresses): per frame only total length and ident are added.
        self.ip_base_sum = 0x4500 + 0x4000 + ((64 << 8) | _PROTO_TCP) + sum16(host_ip + guest_ip)
        # Pseudo-header sum without the length, for the TCP checksum.
        self.pseudo_base = sum16(host_ip + guest_ip) + _PROTO_TCP
        self.syn_head = syn_head          # start of the guest's SYN packet, quoted in ICMP errors
        self.half_open = True
        self.read_paused = False
        self.queued = 0                   # host -> guest bytes queued, as last accounted by the Stack
        self.timer_at: float | None = None
        self.inbound = inbound
        self.bytes_in = 0                 # guest -> host payload bytes
        self.bytes_out = 0                # host -> guest payload bytes
        self.opened_at = now


class DatagramFlow:
    """One UDP flow (guest ip:port <-> host ip:port) or ICMP echo flow (guest ip, ident, host ip)."""

    __slots__ = (
        "flow_id", "key", "proto", "guest_ip", "guest_port", "host_ip", "host_port",
        "dns", "last_head", "last_active", "replied", "timer_at", "opened_at",
        "datagrams_in", "datagrams_out", "pseudo_base", "inbound",
    )

    def __init__(self, flow_id: int, key: PortKey | EchoKey, proto: int, guest_ip: bytes,
                 guest_port: int, host_ip: bytes, host_port: int, now: float,
                 dns: bool = False) -> None:
        self.flow_id = flow_id
        self.key = key
        self.proto = proto                # 17 (UDP) or 1 (ICMP echo; ports are the echo ident)
        self.guest_ip = guest_ip
        self.guest_port = guest_port
        self.host_ip = host_ip
        self.host_port = host_port
        self.dns = dns                    # to the DNS forwarder: the runtime picks the upstream
        self.last_head = b""              # start of the last guest packet (IP header on)
        self.last_active = now
        self.replied = False
        self.timer_at: float | None = None
        self.opened_at = now
        self.datagrams_in = 0             # guest -> host
        self.datagrams_out = 0            # host -> guest
        # Pseudo-header sum (host -> guest) without the length, for UDP checksums.
        self.pseudo_base = sum16(host_ip + guest_ip) + proto
        self.inbound = False              # opened by a host client of a published port


class Deadline:
    """A bare deadline record for a `DeadlineHeap` (e.g. an inbound SYN's give-up time)."""

    __slots__ = ("flow_id", "timer_at")

    def __init__(self, flow_id: int, timer_at: float) -> None:
        self.flow_id = flow_id
        self.timer_at: float | None = timer_at


class Timed(Protocol):
    """What a `DeadlineHeap` needs of a flow record."""
    flow_id: int
    timer_at: float | None


_T = TypeVar("_T", bound=Timed)


class DeadlineHeap:
    """(deadline, flow id) entries for any flow records with `flow_id` and `timer_at`.

    Stale entries (a flow's timer moved, or the flow is gone) stay until popped; `push`
    rebuilds the heap from the live flows when it grows past 4 entries per flow (+64)."""

    __slots__ = ("_heap", "_check_at")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int]] = []
        self._check_at = 64

    def push(self, deadline: float, flow_id: int, flows: Mapping[int, Timed]) -> None:
        heap = self._heap
        heapq.heappush(heap, (deadline, flow_id))
        if len(heap) > self._check_at:
            self._compact(flows)

    def pop_due(self, now: float, flows: Mapping[int, _T]) -> Iterator[_T]:
        """Yield each flow whose current deadline is <= now (once), clearing its timer."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, flow_id = heapq.heappop(heap)
            flow = flows.get(flow_id)
            if flow is not None and flow.timer_at == deadline:
                flow.timer_at = None
                yield flow

    def next_deadline(self, flows: Mapping[int, Timed]) -> float | None:
        heap = self._heap
        while heap:
            deadline, flow_id = heap[0]
            flow = flows.get(flow_id)
            if flow is not None and flow.timer_at == deadline:
                return deadline
            heapq.heappop(heap)
        return None

    def _compact(self, flows: Mapping[int, Timed]) -> None:
        limit = 4 * len(flows) + 64
        if len(self._heap) > limit:
            self._heap = [(f.timer_at, f.flow_id) for f in flows.values() if f.timer_at is not None]
            heapq.heapify(self._heap)
        self._check_at = max(limit, 2 * len(self._heap))

    def __len__(self) -> int:
        return len(self._heap)
