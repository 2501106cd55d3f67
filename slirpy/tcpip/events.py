"""Every event the Stack hands the runtime, in one module under one base class.

The Stack is sans-I/O: what it wants done on the host side (open a socket, write bytes, close)
comes out of `Stack.next_event()` as one of these values, and the runtime dispatches them by
type (one table, runtime.py). Keeping them here, apart from the code that makes them, lets the
runtime and the tests name them without importing the stack's internals, and keeps the
connection-level events of `tcp/events.py` (`DataReceived`, `Closed`...) from colliding with them:
those stay inside the TCP machinery; these are the only ones that leave `tcpip/`.

Every event names its flow by `flow_id` (one id space for TCP, UDP and echo flows, flow.py).
"""

from __future__ import annotations

from dataclasses import dataclass


# The events of every TCP connection's life (connect, EOF, closed) and the data events (TCP
# segments, UDP datagrams) are not frozen: a frozen dataclass's __init__ costs several times as much compiled, and new
# connections per second pay it each time. Treat them as read-only all the same.


class StackEvent:
    """Base of every runtime-facing event: something the host side must do for one flow."""

    __slots__ = ()
    # Every subclass has a `flow_id: int` field.  It is not declared here: compiled by mypyc,
    # a field of this base would reach the dataclasses below as a default value.


@dataclass(slots=True, unsafe_hash=True)    # not frozen: one per connection (see above)
class TcpConnectRequested(StackEvent):
    """The guest opened a TCP connection: connect a host socket to host:port."""
    flow_id: int
    host: str
    port: int
    guest: str
    guest_port: int
    dns: bool = False        # to the DNS forwarder: host/port are the guest's; use the upstream


@dataclass(slots=True)        # not frozen, unlike the other events: one per data segment
class TcpDataReceived(StackEvent):
    """Bytes the guest sent on a flow, for the host socket."""
    flow_id: int
    data: memoryview | bytes


@dataclass(slots=True, unsafe_hash=True)    # not frozen: one per connection (see above)
class TcpEofReceived(StackEvent):
    """The guest shut down its sending side: shut down writing on the host socket."""
    flow_id: int


@dataclass(frozen=True, slots=True)
class TcpHostReadPaused(StackEvent):
    """Stop (paused=True) or resume reading the host socket: the guest-bound queue is full/drained."""
    flow_id: int
    paused: bool


@dataclass(slots=True, unsafe_hash=True)    # not frozen: one per connection (see above)
class TcpFlowClosed(StackEvent):
    """The flow is gone: close the host socket (abort it if `reset`)."""
    flow_id: int
    reset: bool


@dataclass(frozen=True, slots=True)
class UdpFlowOpened(StackEvent):
    """A new UDP flow: open a host UDP socket connected to host:port (for `dns`, the upstream)."""
    flow_id: int
    host: str
    port: int
    guest: str
    guest_port: int
    dns: bool = False


@dataclass(slots=True)        # not frozen, as TcpDataReceived: one per datagram
class UdpDatagramReceived(StackEvent):
    """One datagram payload the guest sent on a UDP flow."""
    flow_id: int
    data: memoryview | bytes


@dataclass(frozen=True, slots=True)
class UdpFlowClosed(StackEvent):
    """The UDP flow expired or was evicted: close its host socket."""
    flow_id: int


@dataclass(frozen=True, slots=True)
class IcmpEchoFlowOpened(StackEvent):
    """A new echo flow (guest ident -> host): open an unprivileged ICMP socket."""
    flow_id: int
    host: str
    guest: str
    ident: int


@dataclass(frozen=True, slots=True)
class IcmpEchoRequested(StackEvent):
    """Send one echo request (sequence `seq`, payload `data`, the guest's `ttl`) on the flow."""
    flow_id: int
    seq: int
    ttl: int
    data: memoryview | bytes


@dataclass(frozen=True, slots=True)
class IcmpEchoFlowClosed(StackEvent):
    """The echo flow expired or was evicted: close its ICMP socket."""
    flow_id: int
